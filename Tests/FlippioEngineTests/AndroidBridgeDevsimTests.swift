import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// The bridge through the real `/usr/bin/adb` against flippio-devsim.
@Suite("Android bridge against devsim", .serialized)
struct AndroidBridgeDevsimTests {
    static let pkg = "com.example.notes"
    static let serial = "emulator-5554"

    let sim: Devsim
    let device: DevsimDevice

    init() throws {
        sim = try Devsim()
        device = try sim.addDevice(Self.serial, model: "Pixel 7", packages: [Self.pkg: true, "com.example.locked": false])
    }

    func bridge(_ timeouts: AndroidBridge.Timeouts = .init()) -> AndroidBridge {
        AndroidBridge(adbPath: Devsim.adbPath.path, runner: ProcessRunner(), environment: sim.environment, timeouts: timeouts)
    }

    var databasesFolder: URL { device.appData(Self.pkg).appendingPathComponent("databases", isDirectory: true) }

    /// A WAL-mode database made by sqlite3 whose newest rows are only in its `-wal`: the main file
    /// and the `-wal` are copied aside while sqlite3 still has them open (before it checkpoints).
    func makeWALDatabase(named name: String = "notes.db") throws -> URL {
        let work = try TemporaryDirectory("wal")
        let db = work.child(name)
        let aside = work.child("aside")
        try FileManager.default.createDirectory(at: aside, withIntermediateDirectories: true)
        let sqlite3 = try #require(Products.systemTool("sqlite3"))
        // Dot commands are read from stdin only.
        let script = """
            PRAGMA journal_mode=WAL;
            PRAGMA wal_autocheckpoint=0;
            CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
            INSERT INTO notes(body) VALUES ('first'), ('second'), ('only in the wal');
            .shell cp \(db.path) \(db.path)-wal \(aside.path)/

            """
        let made = try Shell.run(sqlite3, [db.path], input: Data(script.utf8))
        #expect(made.status == 0, "\(made.err)")
        try FileManager.default.createDirectory(at: databasesFolder, withIntermediateDirectories: true)
        let target = databasesFolder.appendingPathComponent(name)
        try? FileManager.default.removeItem(at: target)
        try FileManager.default.copyItem(at: aside.appendingPathComponent(name), to: target)
        try FileManager.default.copyItem(at: aside.appendingPathComponent(name + "-wal"), to: URL(fileURLWithPath: target.path + "-wal"))
        return target
    }

    /// A small real database made by the sqlite3 CLI (one table, one row).
    func sqliteBytes() throws -> Data {
        let work = try TemporaryDirectory("db")
        let sqlite3 = try #require(Products.systemTool("sqlite3"))
        let made = try Shell.run(sqlite3, [work.child("x.db").path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a');"])
        #expect(made.status == 0, "\(made.err)")
        return try Data(contentsOf: work.child("x.db"))
    }

    func remote(_ name: String = "notes.db") -> RemoteDatabase {
        RemoteDatabase(platform: .android, deviceID: Self.serial, appID: Self.pkg,
                       path: "/data/data/\(Self.pkg)/databases/\(name)", access: .runAs)
    }

    // MARK: - Devices and apps

    @Test func devices_everyStateWithRemedies() async throws {
        try sim.addDevice("R58M123ABC", state: "unauthorized")
        try sim.addDevice("0123456789ABCDEF", state: "offline")
        let devices = try await bridge().devices().sorted { $0.id < $1.id }
        #expect(devices.map(\.id) == ["0123456789ABCDEF", "R58M123ABC", Self.serial])
        let ready = try AndroidBridge.resolve("emu", among: devices)
        #expect(ready.state == .ready)
        #expect(ready.model == "Pixel 7")
        #expect(ready.osVersion == "14")
        #expect(ready.remedy == nil)
        #expect(devices[0].state == .offline)
        #expect(devices[0].remedy == "Reconnect the cable or run `adb reconnect offline`.")
        #expect(devices[1].state == .unauthorized)
        #expect(devices[1].remedy?.contains("Allow USB debugging") == true)
    }

    @Test func unauthorizedDevice_callsFailWithRemedy() async throws {
        try device.setState("unauthorized")
        let error = await #expect(throws: FlippioError.self) { try await bridge().apps(deviceID: Self.serial, includeSystem: false) }
        #expect(error?.code == .deviceUnauthorized)
        #expect(error?.remedy?.contains("Allow USB debugging") == true)
        let missing = await #expect(throws: FlippioError.self) { try await bridge().apps(deviceID: "nope-1", includeSystem: false) }
        #expect(missing?.code == .deviceNotFound)
    }

    @Test func apps_thirdPartySorted() async throws {
        try device.setPackage("com.android.chrome", debuggable: false, system: true)
        let apps = try await bridge().apps(deviceID: Self.serial, includeSystem: false)
        #expect(apps.map(\.id) == ["com.example.locked", Self.pkg])
        // One device command tells which apps run-as can reach.
        #expect(apps.map(\.debuggable) == [false, true])
        let all = try await bridge().apps(deviceID: Self.serial, includeSystem: true)
        #expect(all.map(\.id).contains("com.android.chrome"))
    }

    // MARK: - Databases

    @Test func databases_debuggableAndSharedStorage() async throws {
        _ = try makeWALDatabase()
        let db = try sqliteBytes()
        try device.write(Data(), to: "/data/data/\(Self.pkg)/databases/notes.db-shm")
        try device.write(db, to: "/data/data/\(Self.pkg)/files/cache.sqlite")
        try device.write(Data("x".utf8), to: "/data/data/\(Self.pkg)/files/readme.txt")
        try device.write(db, to: "/sdcard/Android/data/\(Self.pkg)/files/export.db")
        let dbs = try await bridge().databases(deviceID: Self.serial, appID: Self.pkg)
        #expect(dbs.map(\.path) == [
            "/data/data/\(Self.pkg)/databases/notes.db",
            "/data/data/\(Self.pkg)/files/cache.sqlite",
            "/sdcard/Android/data/\(Self.pkg)/files/export.db",
        ])
        #expect(dbs.map(\.access) == [.runAs, .runAs, .shell])
        #expect(dbs[1].size == Int64(db.count))
    }

    /// Room's extension-less names, databases in files/ and no_backup/, and everything that must
    /// not be listed: a `.db` that is not SQLite, companions, flippio's temp file, files shorter
    /// than a header, and names a shell would split or run.
    @Test func databases_byHeader_roomNamesAndHostileNames() async throws {
        let db = try sqliteBytes()
        let base = "/data/data/\(Self.pkg)"
        for path in ["databases/app_database", "databases/app_database-wal", "databases/app_database-journal",
                     "databases/app_database-shm", "databases/.app_database.flippio-tmp", "files/store.sqlite",
                     "no_backup/deep/a/b/c/work", "files/with space.db", "files/quote'd\".db", "files/$(reboot).db",
                     "files/`id`;x", "files/new\nline.db", "cache/http.db", "code_cache/x.db"] {
            try device.write(db, to: "\(base)/\(path)")
        }
        try device.write(Data("definitely not sqlite, just text".utf8), to: "\(base)/databases/foo.db")
        try device.write(Data("SQLite format 3".utf8), to: "\(base)/databases/short.db")
        try sim.clearRequests()
        let dbs = try await bridge().databases(deviceID: Self.serial, appID: Self.pkg)
        #expect(dbs.map(\.path) == [
            "\(base)/databases/app_database",
            "\(base)/files/$(reboot).db",
            "\(base)/files/`id`;x",
            "\(base)/files/quote'd\".db",
            "\(base)/files/store.sqlite",
            "\(base)/files/with space.db",
            "\(base)/no_backup/deep/a/b/c/work",
        ])
        #expect(dbs.allSatisfy { $0.size == Int64(db.count) })
        // The headers were read in one device command (then one `stat` for the sizes).
        let commands = try sim.requests().compactMap(\.command)
        #expect(commands.filter { $0.contains("-exec head -c 16") }.count == 1, "\(commands)")

        // The extension-less Room database pulls like any other.
        let local = try TemporaryDirectory("room")
        let pulled = try await bridge().pull(try #require(dbs.first), into: local.url, progress: nil)
        #expect(try Data(contentsOf: pulled.mainFile) == db)
    }

    @Test func databases_notDebuggable_namesTheFix_thenSuFallback() async throws {
        try device.write(try sqliteBytes(), to: "/data/data/com.example.locked/databases/secret.db")
        let error = await #expect(throws: FlippioError.self) {
            try await bridge().databases(deviceID: Self.serial, appID: "com.example.locked")
        }
        #expect(error?.code == .appNotDebuggable)
        #expect(error?.remedy?.contains("android:debuggable=true") == true)
        #expect(error?.message.contains("com.example.locked") == true)

        try device.setSu(true)
        let dbs = try await bridge().databases(deviceID: Self.serial, appID: "com.example.locked")
        #expect(dbs.map(\.path) == ["/data/data/com.example.locked/databases/secret.db"])
        #expect(dbs.map(\.access) == [.su])
    }

    @Test func databases_unknownPackage() async throws {
        let error = await #expect(throws: FlippioError.self) { try await bridge().databases(deviceID: Self.serial, appID: "com.example.absent") }
        #expect(error?.code == .unknownPackage)
    }

    // MARK: - Pull and fingerprint

    @Test func pull_walModeDatabase_bringsTheWal() async throws {
        let onDevice = try makeWALDatabase()
        let local = try TemporaryDirectory("pull")
        let pulled = try await bridge().pull(remote(), into: local.url, progress: nil)
        #expect(pulled.mainFile == local.child("notes.db"))
        #expect(pulled.walFile == local.child("notes.db-wal"))
        #expect(pulled.journalFile == nil)
        #expect(try Data(contentsOf: pulled.mainFile) == Data(contentsOf: onDevice))
        let walHash = try ContentHash.sha256(fileAt: URL(fileURLWithPath: onDevice.path + "-wal"))
        #expect(pulled.fingerprint == DeviceFingerprint(mainHash: try ContentHash.sha256(fileAt: onDevice), walHash: walHash))
        // The newest row lives only in the -wal: sqlite3 sees it through the pulled pair.
        #expect(try Shell.sqlite(pulled.mainFile, "SELECT body FROM notes ORDER BY id DESC LIMIT 1") == "only in the wal\n")
        #expect(try await bridge().fingerprint(remote()) == pulled.fingerprint)
    }

    @Test func fingerprint_emptyWalIsNone_missingFileIsAbsent() async throws {
        try device.write(Data("SQLite format 3\0".utf8), to: remote().path)
        try device.write(Data(), to: remote().path + "-wal")
        let fingerprint = try await bridge().fingerprint(remote())
        #expect(fingerprint.mainHash == ContentHash.sha256(Data("SQLite format 3\0".utf8)))
        #expect(fingerprint.walHash == nil)
        #expect(try await bridge().fingerprint(remote("gone.db")) == .absent)
        let error = await #expect(throws: FlippioError.self) { try await bridge().pull(remote("gone.db"), into: URL(fileURLWithPath: "/tmp"), progress: nil) }
        #expect(error?.code == .noSuchFile)
    }

    // MARK: - Push

    @Test func push_replacesAtomically_removesJournals_verifies_cleansUp() async throws {
        let onDevice = try makeWALDatabase()
        try device.write(Data("stale".utf8), to: remote().path + "-shm")
        try device.write(Data("stale".utf8), to: remote().path + "-journal")
        let work = try TemporaryDirectory("push")
        let snapshot = work.child("snapshot.db")
        try Shell.sqlite(snapshot, "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('edited');")
        let hash = try ContentHash.sha256(fileAt: snapshot)
        let expecting = try await bridge().fingerprint(remote())
        try sim.clearRequests()

        let fingerprint = try await bridge().push(snapshot: snapshot, snapshotHash: hash, to: remote(), expecting: expecting, progress: nil)
        #expect(fingerprint == DeviceFingerprint(mainHash: hash))
        #expect(try Data(contentsOf: onDevice) == Data(contentsOf: snapshot))
        for suffix in ["-wal", "-shm", "-journal"] {
            #expect(!FileManager.default.fileExists(atPath: onDevice.path + suffix), "\(suffix) left behind")
        }
        let tmp = try FileManager.default.contentsOfDirectory(atPath: device.url("/data/local/tmp").path)
        #expect(tmp.filter { $0.hasPrefix("flippio-") }.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: databasesFolder.path).sorted() == ["notes.db"])
        #expect(try Shell.sqlite(onDevice, "SELECT body FROM notes") == "edited\n")

        // The steps, in order: stale-temp cleanup (one call), upload, copy+check+rename+verify (one
        // script) and the staging file's removal (in the same call); no second whole-file hash.
        let steps = try sim.requests().filter { $0.serial == Self.serial && ($0.service == "shell" || $0.service == "sync") }
        let staging = try #require(steps.first { $0.op == "SEND" }?.command)
        let attempt = try #require(staging.wholeMatch(of: /\/data\/local\/tmp\/flippio-[0-9a-f]{16}-([0-9a-f]+)\.db/)?.1)
        let names = AndroidBridge.PushNames(serial: Self.serial, path: remote().path, attempt: String(attempt))
        let rendered = steps.map { "\($0.service) \($0.op ?? "") \($0.command ?? "")" }
        let expectedOrder = [
            "shell  rm -f \(names.stagingPattern) && run-as \(Self.pkg) sh -c "
                + DeviceShellQuoting.quote("rm -f " + names.siblingPattern + " || exit 1; " + AndroidBridge.jobsProbe),
            "sync SEND \(names.staging)",
            "shell  run-as \(Self.pkg) sh -c",
        ]
        #expect(rendered.last?.hasSuffix("' && rm -f \(names.staging)") == true, "\(rendered)")
        #expect(rendered.filter { $0.hasPrefix("shell ") }.count == 2, "two shell calls: \(rendered)")
        #expect(!rendered.contains { $0.hasPrefix("shell  run-as \(Self.pkg) sha256sum") }, "\(rendered)")
        // devsim's shell runs jobs, as mksh does: the two hashes went side by side.
        #expect(rendered.contains { $0.contains("|| exit 4; wait;") && $0.contains(names.permit) }, "\(rendered)")
        var cursor = rendered.startIndex
        for step in expectedOrder {
            let found = rendered[cursor...].firstIndex { $0.hasPrefix(step) }
            #expect(found != nil, "missing \(step) in \(rendered)")
            if let found { cursor = rendered.index(after: found) }
        }
    }

    @Test(arguments: ["main", "wal", "absent"])
    func push_whenTheDeviceNoLongerHasTheExpectedFingerprint_isAConflict_andReplacesNothing(_ change: String) async throws {
        let onDevice = try makeWALDatabase()
        let work = try TemporaryDirectory("cas")
        let snapshot = work.child("snapshot.db")
        try Shell.sqlite(snapshot, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        var expecting = try await bridge().fingerprint(remote())
        switch change {
        case "main": expecting.mainHash = String(repeating: "a", count: 64)
        case "wal": expecting.walHash = nil
        default: expecting = .absent
        }
        let main = try Data(contentsOf: onDevice), wal = try Data(contentsOf: URL(fileURLWithPath: onDevice.path + "-wal"))

        let error = await #expect(throws: FlippioError.self) {
            try await bridge().push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: remote(),
                                    expecting: expecting, progress: nil)
        }
        #expect(error?.code == .conflict, "\(String(describing: error))")
        #expect(error?.message.contains("nothing was replaced") == true)
        #expect(try Data(contentsOf: onDevice) == main)
        #expect(try Data(contentsOf: URL(fileURLWithPath: onDevice.path + "-wal")) == wal, "the wal is kept")
        #expect(try FileManager.default.contentsOfDirectory(atPath: databasesFolder.path).sorted() == ["notes.db", "notes.db-wal"])
        let tmp = try FileManager.default.contentsOfDirectory(atPath: device.url("/data/local/tmp").path)
        #expect(tmp.filter { $0.hasPrefix("flippio-") }.isEmpty)
    }

    @Test func push_refusesAnExpectedHashThatIsNotHex() async throws {
        _ = try makeWALDatabase()
        let work = try TemporaryDirectory("cas-hex")
        let snapshot = work.child("snapshot.db")
        try Shell.sqlite(snapshot, "CREATE TABLE t(x);")
        let error = await #expect(throws: FlippioError.self) {
            try await bridge().push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: remote(),
                                    expecting: DeviceFingerprint(mainHash: "x' ; rm -rf / ; '"), progress: nil)
        }
        #expect(error?.code == .invalidArgument)
    }

    @Test func push_thenPull_roundTrips() async throws {
        _ = try makeWALDatabase()
        let work = try TemporaryDirectory("roundtrip")
        let snapshot = work.child("s.db")
        try Shell.sqlite(snapshot, "CREATE TABLE t(x); INSERT INTO t VALUES (42);")
        let pushed = try await bridge().push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: remote(), expecting: try await bridge().fingerprint(remote()), progress: nil)
        let pulled = try await bridge().pull(remote(), into: work.child("out").creatingDirectory(), progress: nil)
        #expect(pulled.fingerprint == pushed)
        #expect(pulled.walFile == nil)
        #expect(try Shell.sqlite(pulled.mainFile, "SELECT x FROM t") == "42\n")
    }

    // MARK: - Faults

    @Test func hangingDevice_isCutAtTheTimeout() async throws {
        try device.write(Data("SQLite format 3\0".utf8), to: remote().path)
        try device.setFaults(["hangSeconds": 60])
        let timeouts = AndroidBridge.Timeouts(control: .seconds(2))
        let error = await #expect(throws: FlippioError.self) { try await bridge(timeouts).fingerprint(remote()) }
        #expect(error?.code == .timedOut)
        #expect(error?.message.contains("sha256sum") == true)
        #expect(error?.message.contains("2 s") == true)
        try device.clearFaults()
    }

    @Test func droppedTransfer_pullStartsOver_pushFailsRetryably() async throws {
        let onDevice = try makeWALDatabase()
        try device.setFaults(["dropNextTransfer": true])
        let local = try TemporaryDirectory("drop")
        let pulled = try await bridge().pull(remote(), into: local.url, progress: nil)
        #expect(try Data(contentsOf: pulled.mainFile) == Data(contentsOf: onDevice))
        #expect(try ContentHash.sha256(fileAt: pulled.walFile!) == pulled.fingerprint.walHash)

        let snapshot = local.child("snapshot.db")
        try Shell.sqlite(snapshot, "CREATE TABLE t(x);")
        let before = try Data(contentsOf: onDevice)
        try device.setFaults(["dropNextTransfer": true])
        let error = await #expect(throws: FlippioError.self) {
            try await bridge().push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: remote(), expecting: try await bridge().fingerprint(remote()), progress: nil)
        }
        #expect(error?.isRetryable == true, "\(String(describing: error)) \(String(describing: error?.context))")
        // The device still has the old database, untouched.
        #expect(try Data(contentsOf: onDevice) == before)
        // A retry overwrites the same temp names and cleans them up.
        let hash = try ContentHash.sha256(fileAt: snapshot)
        #expect(try await bridge().push(snapshot: snapshot, snapshotHash: hash, to: remote(), expecting: try await bridge().fingerprint(remote()), progress: nil).mainHash == hash)
        let tmp = try FileManager.default.contentsOfDirectory(atPath: device.url("/data/local/tmp").path)
        #expect(tmp.filter { $0.hasPrefix("flippio-") }.isEmpty)
    }

    @Test func offlineFault_mapsToDeviceOffline() async throws {
        try device.setFaults(["failNext": 1, "failMessage": "device offline"])
        let error = await #expect(throws: FlippioError.self) { try await bridge().stopApp(deviceID: Self.serial, appID: Self.pkg) }
        #expect(error?.code == .deviceOffline)
        try await bridge().stopApp(deviceID: Self.serial, appID: Self.pkg)
    }

    // MARK: - track-devices

    @Test func tracker_seesUnplugAndReplug() async throws {
        let tracker = DeviceTracker(adbPath: Devsim.adbPath.path, environment: sim.environment)
        let seen = Seen()
        let task = Task {
            for await devices in tracker.updates() { await seen.append(devices) }
        }
        defer { task.cancel() }
        func ready() async -> Bool { await seen.last?.contains { $0.id == Self.serial && $0.state == .ready } == true }
        try await waitUntil("device listed") { await ready() }
        try device.unplug()
        try await waitUntil("device gone") { await seen.last?.contains { $0.id == Self.serial } == false }
        try device.plugIn()
        try await waitUntil("device back") { await ready() }
        try device.setState("offline")
        try await waitUntil("device offline") { await seen.last?.first?.state == .offline }

        // Cancelling the consumer kills `adb track-devices`.
        #expect(Self.trackDevicesChildren() > 0)
        task.cancel()
        try await waitUntil("adb track-devices killed") { Self.trackDevicesChildren() == 0 }
    }

    /// How many `adb track-devices` children this test process has.
    static func trackDevicesChildren() -> Int {
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { entry in
            guard Int32(entry) != nil,
                  let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == me else { return false }
            let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline"))) ?? Data()
            return String(decoding: cmdline, as: UTF8.self).contains("track-devices")
        }.count
    }
}

private actor Seen {
    private(set) var lists: [[Device]] = []
    var last: [Device]? { lists.last }
    func append(_ devices: [Device]) { lists.append(devices) }
}

private extension URL {
    func creatingDirectory() throws -> URL {
        try FileManager.default.createDirectory(at: self, withIntermediateDirectories: true)
        return self
    }
}
