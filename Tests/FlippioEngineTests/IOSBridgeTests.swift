import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// IOSBridge against the stand-in tools, run as real processes through the real ProcessRunner.
///
/// The tests of files (databases, pull, fingerprint, push) run through both file backends:
/// `afcclient`, and `ifuse` (a real mount, made by the stand-in; cancelled with the reason where
/// mounting is not permitted).
// Serialized: run in parallel, the ifuse cases saw mounts a sibling had just made go missing from
// /proc/self/mountinfo (not understood yet; see the report of issue 17). One at a time they pass.
@Suite(.serialized) struct IOSBridgeTests {
    static let notes = "com.example.Notes"
    static let udid = "00008030-001A35E22E10802E"

    /// Stand-ins with one device holding the Notes app, and a bridge over them.
    final class Harness: @unchecked Sendable {
        let ios: IOSStandIns
        let device: IOSStandInDevice
        let temp: TemporaryDirectory
        var bridge: IOSBridge

        init(_ backend: IOSStandInBackend = .afcclient,
             apps: [String: IOSStandInApp] = [IOSBridgeTests.notes: IOSStandInApp(name: "Notes", version: "1.2")],
             state: IOSStandInDevice.State = .ready, timeouts: IOSBridge.Timeouts = .init(),
             limits: IOSBridge.Limits = .init()) throws {
            if let reason = backend.unavailableReason { try Test.cancel(Comment(rawValue: reason)) }
            ios = try IOSStandIns(backend: backend)
            device = try ios.addDevice(udid: IOSBridgeTests.udid, apps: apps, state: state)
            temp = try TemporaryDirectory("flippio-ios-test")
            bridge = IOSBridge(tools: .inDirectory(ios.binDirectory), runner: ProcessRunner(), timeouts: timeouts,
                               limits: limits, environment: ios.environment, temporaryDirectory: temp.url,
                               fileBackend: backend == .ifuse ? .ifuse : .afcclient, mountRoot: ios.mountRoot)
        }

        func container(_ relative: String, app: String = IOSBridgeTests.notes) -> URL {
            device.container(app).appendingPathComponent(relative)
        }

        func database(_ path: String = "/Documents/notes.db", access: RemoteDatabase.Access = .container) -> RemoteDatabase {
            RemoteDatabase(platform: .ios, deviceID: IOSBridgeTests.udid, appID: IOSBridgeTests.notes, path: path, access: access)
        }

        func afcCommands() throws -> [[String]] {
            try ios.requests().filter { $0.tool == "afcclient" }.map { request in
                guard let dashes = request.args.firstIndex(of: "--") else { return request.args }
                return Array(request.args[(dashes + 1)...])
            }
        }
    }

    static func makeNotesDatabase(_ url: URL, rows: Int = 3) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Shell.sqlite(url, "CREATE TABLE IF NOT EXISTS note(id INTEGER PRIMARY KEY, body TEXT);"
            + (0..<rows).map { "INSERT INTO note(body) VALUES ('note \($0)');" }.joined())
    }

    // MARK: - Devices

    @Test func devicesListReadyLockedUnpairedAndNetworkDevicesWithRemedies() async throws {
        let h = try Harness()
        try h.ios.addDevice(udid: "00008101-000A1B2C3D4E5F60", name: "Locked One", state: .locked)
        try h.ios.addDevice(udid: "00008110-0011223344556677", name: "New Phone", state: .unpaired)
        try h.ios.addDevice(udid: "00008120-00AABBCCDDEEFF00", name: "Wi-Fi Phone", productVersion: "18.0", network: true)

        let devices = try await h.bridge.devices()
        let byID = Dictionary(uniqueKeysWithValues: devices.map { ($0.id, $0) })
        #expect(devices.count == 4)
        let ready = try #require(byID[Self.udid])
        #expect(ready.state == .ready && ready.model == "Ana's iPhone" && ready.osVersion == "17.5")
        #expect(ready.platform == .ios && ready.details["connection"] == "usb")

        let locked = try #require(byID["00008101-000A1B2C3D4E5F60"])
        #expect(locked.state == .locked)
        #expect(locked.remedy?.contains("Unlock") == true)
        let unpaired = try #require(byID["00008110-0011223344556677"])
        #expect(unpaired.state == .notTrusted)
        #expect(unpaired.remedy?.contains("idevicepair pair") == true)
        let network = try #require(byID["00008120-00AABBCCDDEEFF00"])
        #expect(network.state == .ready && network.osVersion == "18.0" && network.details["connection"] == "network")

        // The network-only device is reached with -n afterwards.
        _ = try await h.bridge.apps(deviceID: "00008120-00AABBCCDDEEFF00", includeSystem: false)
        let installer = try h.ios.requests().last { $0.tool == "ideviceinstaller" }
        #expect(installer?.args.contains("-n") == true)
    }

    @Test func usbmuxdDownIsReportedWithHowToStartIt() async throws {
        let h = try Harness()
        try h.ios.setUsbmuxdDown(true)
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.devices() }
        #expect(error?.code == .usbmuxdUnavailable)
        #expect(error?.remedy?.contains("sudo systemctl start usbmuxd") == true)
        let apps = await #expect(throws: FlippioError.self) { try await h.bridge.apps(deviceID: Self.udid, includeSystem: false) }
        #expect(apps?.code == .deviceNotFound)
        #expect(apps?.remedy?.contains("usbmuxd") == true)
    }

    @Test func missingToolNamesItsDebianPackage() async throws {
        let h = try Harness()
        let bridge = IOSBridge(tools: .init(ideviceID: nil, ideviceInfo: nil, ideviceInstaller: nil, afcClient: nil),
                               runner: ProcessRunner(), environment: h.ios.environment)
        let devices = await #expect(throws: FlippioError.self) { try await bridge.devices() }
        #expect(devices?.code == .toolNotFound)
        #expect(devices?.remedy?.contains("libimobiledevice-utils") == true)
        let apps = await #expect(throws: FlippioError.self) { try await bridge.apps(deviceID: Self.udid, includeSystem: false) }
        #expect(apps?.remedy?.contains("apt install ideviceinstaller") == true)
    }

    // MARK: - Apps

    @Test func appsFromXMLHideAppleAppsUnlessAsked() async throws {
        let h = try Harness(apps: [
            Self.notes: IOSStandInApp(name: "Notes", version: "1.2", build: "42"),
            "com.apple.mobilesafari": IOSStandInApp(name: "Safari", version: "17.5", system: true),
            "com.apple.Pages": IOSStandInApp(name: "Pages", version: "14.0"),
        ])
        let apps = try await h.bridge.apps(deviceID: Self.udid, includeSystem: false)
        #expect(apps == [AppInfo(id: Self.notes, name: "Notes", version: "1.2")])
        let all = try await h.bridge.apps(deviceID: Self.udid, includeSystem: true)
        #expect(all.map(\.id) == ["com.apple.Pages", "com.apple.mobilesafari", Self.notes])
        let calls = try h.ios.requests().filter { $0.tool == "ideviceinstaller" }.map(\.args)
        #expect(calls == [["-u", Self.udid, "-l", "-o", "xml"], ["-u", Self.udid, "-l", "-o", "xml", "-o", "list_all"]])
    }

    @Test func appsFallBackToTheTextListing() async throws {
        let h = try Harness(apps: [Self.notes: IOSStandInApp(name: "Notes", version: "1.2", build: "42")])
        // The XML call prints something that is not a property list (status 0).
        try h.device.setFaults(IOSStandInFaults(failNext: 1, failMessage: "garbage\n", failTool: "ideviceinstaller", failExitCode: 0))
        let apps = try await h.bridge.apps(deviceID: Self.udid, includeSystem: false)
        // ideviceinstaller 1.1.1's text listing shows CFBundleVersion.
        #expect(apps == [AppInfo(id: Self.notes, name: "Notes", version: "42")])
        #expect(try h.ios.requests().last?.args == ["-u", Self.udid, "-l"])
    }

    @Test func appsWithTheLaterListCommand() async throws {
        let h = try Harness()
        try h.ios.setInstallerVersion("1.2.0")
        let apps = try await h.bridge.apps(deviceID: Self.udid, includeSystem: false)
        #expect(apps == [AppInfo(id: Self.notes, name: "Notes", version: "1.2")])
        #expect(try h.ios.requests().last?.args == ["-u", Self.udid, "list", "--xml"])
    }

    @Test func appsOnALockedDeviceSayUnlock() async throws {
        let h = try Harness(state: .locked)
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.apps(deviceID: Self.udid, includeSystem: false) }
        #expect(error?.code == .iosDeviceLocked)
        try h.device.setState(.unpaired)
        let unpaired = await #expect(throws: FlippioError.self) { try await h.bridge.apps(deviceID: Self.udid, includeSystem: false) }
        #expect(unpaired?.code == .iosNotPaired)
        #expect(unpaired?.remedy?.contains("idevicepair pair") == true)
    }

    // MARK: - Databases

    @Test(arguments: IOSStandInBackend.allCases)
    func databasesAreFoundByTheirHeaderNeverSideOrTempFiles(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend)
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        try Data("wal".utf8).write(to: h.container("Documents/notes.db-wal"))
        try Data("shm".utf8).write(to: h.container("Documents/notes.db-shm"))
        try Self.makeNotesDatabase(h.container("Library/Application Support/Model/store.sqlite"))
        try Self.makeNotesDatabase(h.container("Library/Application Support/Model/store.sqlite-journal"))
        try Self.makeNotesDatabase(h.container("Library/Application Support/Cache4"))  // no extension: still SQLite
        try Self.makeNotesDatabase(h.container("Documents/notes.db.flippio-tmp"))     // a push's temp file
        try Self.makeNotesDatabase(h.container("Library/Caches/cache.db"))
        try Self.makeNotesDatabase(h.container("Documents/a/b/c/d/e/f/g/too-deep.db"))
        try Data(repeating: 0x41, count: 4096).write(to: h.container("Documents/encrypted.db"))  // named .db, not SQLite
        try Data("text".utf8).write(to: h.container("Documents/readme.txt"))

        let found = try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes)
        #expect(found.map(\.path) == ["/Documents/notes.db", "/Library/Application Support/Cache4",
                                      "/Library/Application Support/Model/store.sqlite"])
        #expect(found.allSatisfy { $0.access == .container && $0.platform == .ios && $0.appID == Self.notes })
        #expect(found.first?.size == Int64(try FileManager.default.attributesOfItem(atPath: h.container("Documents/notes.db").path)[.size] as! Int))
    }

    @Test func databaseSearchIsBounded() async throws {
        let h = try Harness(limits: .init(maxDepth: 6, maxDirectories: 4, maxEntries: 10_000))
        for index in 0..<20 {
            try FileManager.default.createDirectory(at: h.container("Documents/folder\(index)"), withIntermediateDirectories: true)
        }
        _ = try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes)
        let listings = try h.afcCommands().filter { $0.first == "ls" }
        #expect(listings.count <= 4)
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func refusedContainerFallsBackToDocuments(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend, apps: [Self.notes: IOSStandInApp(name: "Notes", container: false, documents: true)])
        try Self.makeNotesDatabase(h.container("Documents/shared.sqlite"))
        try Self.makeNotesDatabase(h.container("Library/private.db"))
        let found = try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes)
        #expect(found.map(\.path) == ["/Documents/shared.sqlite"])
        #expect(found.first?.access == .documents)

        let pulled = try await h.bridge.pull(try #require(found.first), into: h.temp.url, progress: nil)
        #expect(try Data(contentsOf: pulled.mainFile) == Data(contentsOf: h.container("Documents/shared.sqlite")))
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func refusedContainerAndDocumentsNameTheFix(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend, apps: [Self.notes: IOSStandInApp(name: "Notes", container: false, documents: false)])
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes) }
        #expect(error?.code == .iosContainerRefused)
        #expect(error?.remedy?.contains("development-signed") == true)
        #expect(error?.remedy?.contains("UIFileSharingEnabled") == true)
    }

    // MARK: - Pull and fingerprint

    @Test(arguments: IOSStandInBackend.allCases)
    func pullCopiesDatabaseAndWalAndFingerprintsThem(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend)
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        let wal = Data("pretend wal frames".utf8)
        try wal.write(to: h.container("Documents/notes.db-wal"))
        try Data().write(to: h.container("Documents/notes.db-journal"))  // empty: counts as none
        let out = h.temp.child("workspace")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try Data("stale".utf8).write(to: out.appendingPathComponent("notes.db-journal"))

        let sizes = Mutex2<[Int64]>([])
        let pulled = try await h.bridge.pull(h.database(), into: out, progress: { done, _ in sizes.append(done) })
        let deviceBytes = try Data(contentsOf: h.container("Documents/notes.db"))
        #expect(pulled.mainFile == out.appendingPathComponent("notes.db"))
        #expect(try Data(contentsOf: pulled.mainFile) == deviceBytes)
        #expect(try Data(contentsOf: #require(pulled.walFile)) == wal)
        #expect(pulled.journalFile == nil)
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("notes.db-journal").path))
        #expect(pulled.fingerprint == DeviceFingerprint(mainHash: ContentHash.sha256(deviceBytes), walHash: ContentHash.sha256(wal)))
        #expect(try await h.bridge.fingerprint(h.database()) == pulled.fingerprint)
        #expect(sizes.value.last == Int64(deviceBytes.count + wal.count))
        // Nothing left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted() == ["notes.db", "notes.db-wal"])
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func pullRefusesAFileThatIsNotSQLite(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend)
        try Data("definitely not a database, just text".utf8).write(to: h.container("Documents/notes.db"))
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.pull(h.database(), into: h.temp.url, progress: nil) }
        #expect(error?.code == .notSQLite)
        let missing = await #expect(throws: FlippioError.self) {
            try await h.bridge.pull(h.database("/Documents/gone.db"), into: h.temp.url, progress: nil)
        }
        #expect(missing?.code == .databaseMissing)
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func fingerprintChangesWhenTheAppWrites(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend)
        let file = h.container("Documents/notes.db")
        try Self.makeNotesDatabase(file)
        let before = try await h.bridge.fingerprint(h.database())
        #expect(before.mainHash != nil && before.walHash == nil)
        try Shell.sqlite(file, "INSERT INTO note(body) VALUES ('written by the app');")
        let after = try await h.bridge.fingerprint(h.database())
        #expect(after.mainHash != before.mainHash)
        #expect(after.mainHash == ContentHash.sha256(try Data(contentsOf: file)))
        #expect(try await h.bridge.fingerprint(h.database("/Documents/none.db")) == .absent)
    }

    @Test func errorLineOnStdoutWithStatusZeroIsAFailure() async throws {
        let h = try Harness()
        try h.device.setFaults(IOSStandInFaults(failNext: 1, failMessage: "Error: Failed to list '/Documents': Permission denied (10)\n",
                                                failTool: "afcclient", failExitCode: 0))
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes) }
        #expect(error?.code == .permissionDenied)
    }

    // MARK: - Push

    @Test(arguments: IOSStandInBackend.allCases)
    func pushUploadsToATempNameRenamesItAndRemovesStaleSideFiles(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend)
        try Self.makeNotesDatabase(h.container("Documents/notes.db"), rows: 1)
        try Data("old wal".utf8).write(to: h.container("Documents/notes.db-wal"))
        try Data("old shm".utf8).write(to: h.container("Documents/notes.db-shm"))
        // An earlier attempt was cut off after its upload: its temp file goes too.
        try Data("half an upload".utf8).write(to: h.container("Documents/notes.db.flippio-tmp-dead"))
        let snapshot = h.temp.child("snapshot.db")
        try Self.makeNotesDatabase(snapshot, rows: 5)
        let hash = try ContentHash.sha256(fileAt: snapshot)
        let expecting = try await h.bridge.fingerprint(h.database())

        let fingerprint = try await h.bridge.push(snapshot: snapshot, snapshotHash: hash, to: h.database(), expecting: expecting, progress: nil)
        #expect(fingerprint == DeviceFingerprint(mainHash: hash))
        #expect(try Data(contentsOf: h.container("Documents/notes.db")) == Data(contentsOf: snapshot))
        let left = try FileManager.default.contentsOfDirectory(atPath: h.container("Documents").path)
        #expect(left == ["notes.db"])
        guard backend == .afcclient else { return }  // through a mount the steps are plain file calls

        let commands = try h.afcCommands()
        let put = try #require(commands.firstIndex { $0.first == "put" })
        let move = try #require(commands.firstIndex { $0.first == "mv" })
        let removeSide = try #require(commands.firstIndex { $0.first == "rm" && $0.contains("/Documents/notes.db-wal") })
        let temp = try #require(commands[put].last)
        #expect(commands[put] == ["put", snapshot.path, temp])
        #expect(temp.wholeMatch(of: /\/Documents\/notes\.db\.flippio-tmp-[0-9a-f]+/) != nil, "a name of this attempt's own")
        #expect(commands[move] == ["mv", temp, "/Documents/notes.db"])
        #expect(put < removeSide && removeSide < move)
        #expect(commands[removeSide].contains("/Documents/notes.db-shm"))
    }

    @Test func aBrokenUploadLeavesTheDeviceDatabaseUntouched() async throws {
        let h = try Harness()
        let device = h.container("Documents/notes.db")
        try Self.makeNotesDatabase(device, rows: 1)
        let original = try Data(contentsOf: device)
        let snapshot = h.temp.child("snapshot.db")
        try Self.makeNotesDatabase(snapshot, rows: 50)
        try h.device.setFaults(IOSStandInFaults(dropNextTransfer: true))

        let error = await #expect(throws: FlippioError.self) {
            try await h.bridge.push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: h.database(),
                                    expecting: try await h.bridge.fingerprint(h.database()), progress: nil)
        }
        #expect(error?.isRetryable == true)
        #expect(try Data(contentsOf: device) == original)
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.container("Documents").path) == ["notes.db"], "no temp file left")
        #expect(try h.afcCommands().contains { $0.first == "mv" } == false)
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func aDeviceCopyThatChangedSinceTheCheckIsAConflictAndNothingIsReplaced(_ backend: IOSStandInBackend) async throws {
        let h = try Harness(backend)
        let device = h.container("Documents/notes.db")
        try Self.makeNotesDatabase(device, rows: 1)
        let expecting = try await h.bridge.fingerprint(h.database())
        try Self.makeNotesDatabase(h.temp.child("changed.db"), rows: 3)
        try FileManager.default.removeItem(at: device)
        try FileManager.default.copyItem(at: h.temp.child("changed.db"), to: device)
        try Data("app wal".utf8).write(to: h.container("Documents/notes.db-wal"))
        let changed = try Data(contentsOf: device)
        let snapshot = h.temp.child("snapshot.db")
        try Self.makeNotesDatabase(snapshot, rows: 5)

        let error = await #expect(throws: FlippioError.self) {
            try await h.bridge.push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: h.database(),
                                    expecting: expecting, progress: nil)
        }
        #expect(error?.code == .conflict)
        #expect(try Data(contentsOf: device) == changed)
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.container("Documents").path).sorted() == ["notes.db", "notes.db-wal"])
        #expect(try h.afcCommands().contains { $0.first == "mv" } == false)
    }

    @Test func pushRefusesASnapshotWhoseHashIsNotTheOneGiven() async throws {
        let h = try Harness()
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        let snapshot = h.temp.child("snapshot.db")
        try Self.makeNotesDatabase(snapshot)
        let error = await #expect(throws: FlippioError.self) {
            try await h.bridge.push(snapshot: snapshot, snapshotHash: String(repeating: "0", count: 64), to: h.database(),
                                    expecting: .absent, progress: nil)
        }
        #expect(error?.code == .invalidArgument)
        #expect(try h.afcCommands().isEmpty)
    }

    @Test func pathsOutsideTheAppsReachAreRefused() async throws {
        let h = try Harness()
        for path in ["/Documents/../../etc/passwd", "relative.db", "/tmp/x.db", "/Documents/"] {
            let error = await #expect(throws: FlippioError.self) { try await h.bridge.fingerprint(h.database(path)) }
            #expect(error?.code == .unsafePath)
        }
        #expect(try h.afcCommands().isEmpty)
    }

    // MARK: - Timeouts

    @Test func aHangingToolIsKilledAtItsTimeoutWithItsProcessGroup() async throws {
        let h = try Harness(timeouts: .init(control: .seconds(1), killGrace: .milliseconds(500)))
        try h.device.setFaults(IOSStandInFaults(hangSeconds: 120, hangTool: "afcclient"))
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes) }
        #expect(error?.code == .timedOut)
        let pids = h.device.hangPIDs()
        #expect(pids.count == 2)  // the tool and its child
        try await waitUntil("the hung tool and its child are gone") { pids.allSatisfy { !Self.isAlive($0) } }
    }

    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        // A zombie waiting for its parent counts as gone.
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !(stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? false)
    }
}

/// A tiny locked box for values a @Sendable callback collects.
final class Mutex2<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func append<Element>(_ element: Element) where Value == [Element] { lock.withLock { stored.append(element) } }
}

// MARK: - ifuse mounts

extension IOSBridgeTests {
    @Test func theIfuseMountIsMadeOnceUnderTheRuntimeFolderPrivateAndKeptBetweenCalls() async throws {
        let h = try Harness(.ifuse)
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        _ = try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes)
        _ = try await h.bridge.fingerprint(h.database())
        let point = h.ios.mountRoot.appendingPathComponent("\(Self.udid)/\(Self.notes)").path
        #expect(h.ios.activeMounts() == [point])
        let ifuseCalls = try h.ios.requests().filter { $0.tool == "ifuse" }
        #expect(ifuseCalls.map(\.args) == [[point, "-u", Self.udid, "--container", Self.notes]])
        for folder in [h.ios.mountRoot.path, h.ios.mountRoot.appendingPathComponent(Self.udid).path] {
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: folder)[.posixPermissions] as? Int)
            #expect(mode == 0o700, "\(folder)")
        }

        await h.bridge.releaseFiles(deviceID: nil)
        #expect(h.ios.activeMounts().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: point))
    }

    @Test func unpluggingTheDeviceWhileMountedReportsItGoneAndUnmountsWithoutHanging() async throws {
        let h = try Harness(.ifuse, timeouts: .init(control: .seconds(5)))
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        _ = try await h.bridge.fingerprint(h.database())
        #expect(h.ios.activeMounts().count == 1)

        try h.device.unplug()  // the mount now answers ENOTCONN, as a dead ifuse mount does
        let start = ContinuousClock.now
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes) }
        #expect(error?.code == .deviceNotFound)
        #expect(error?.remedy?.contains("Connect it") == true)
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(h.ios.activeMounts().isEmpty)

        // Back again: a fresh mount, the same database.
        h.device.plug()
        #expect(try await h.bridge.fingerprint(h.database()).mainHash == ContentHash.sha256(try Data(contentsOf: h.container("Documents/notes.db"))))
    }

    @Test func aDeviceThatIsGoneWhenAskedForItsFingerprintTakesItsMountsWithIt() async throws {
        let h = try Harness(.ifuse)
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        _ = try await h.bridge.fingerprint(h.database())
        try h.device.unplug()
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.fingerprint(h.database()) }
        #expect(error?.code == .deviceNotFound)
        #expect(h.ios.activeMounts().isEmpty)
    }

    @Test func aHungMountTimesOutAndIsDetachedWithoutBlockingOtherWork() async throws {
        let h = try Harness(.ifuse, timeouts: .init(control: .seconds(1)))
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        _ = try await h.bridge.fingerprint(h.database())
        let point = try #require(h.ios.activeMounts().first)
        umount2(point, Int32(MNT_DETACH))
        let hung = try DeadFuseMount.hang(at: point)  // a daemon that never answers
        defer { hung.release() }

        let start = ContinuousClock.now
        let bridge = h.bridge
        let stuck = Task { try await bridge.databases(deviceID: Self.udid, appID: Self.notes) }
        // While the call is stuck in the kernel, the cooperative pool still runs other work.
        let apps = try await h.bridge.apps(deviceID: Self.udid, includeSystem: false)
        #expect(apps.map(\.id) == [Self.notes])
        let error = await #expect(throws: FlippioError.self) { _ = try await stuck.value }
        #expect(error?.code == .timedOut)
        #expect(ContinuousClock.now - start < .seconds(10))
        try await waitUntil("the hung mount is detached") { h.ios.activeMounts().isEmpty }
    }

    @Test func mountsAKilledAgentLeftAreRemovedAtStart() async throws {
        let h = try Harness(.ifuse)
        try Self.makeNotesDatabase(h.container("Documents/notes.db"))
        _ = try await h.bridge.fingerprint(h.database())
        try h.device.unplug()  // and dead, as after a crash with the phone gone
        h.device.plug()
        // A new process: a bridge that did not make the mount.
        let fresh = IOSBridge(tools: .inDirectory(h.ios.binDirectory), runner: ProcessRunner(), environment: h.ios.environment,
                              fileBackend: .ifuse, mountRoot: h.ios.mountRoot)
        let removed = await fresh.removeStaleMounts()
        #expect(removed.map(\.path) == [h.ios.mountRoot.appendingPathComponent("\(Self.udid)/\(Self.notes)").path])
        #expect(h.ios.activeMounts().isEmpty)
    }

    @Test func aSymlinkInTheContainerIsNeverFollowedToALocalFile() async throws {
        let h = try Harness(.ifuse)
        try Self.makeNotesDatabase(h.temp.child("local-secret.db"))
        try FileManager.default.createSymbolicLink(atPath: h.container("Documents/notes.db").path,
                                                   withDestinationPath: h.temp.child("local-secret.db").path)
        #expect(try await h.bridge.databases(deviceID: Self.udid, appID: Self.notes).isEmpty)
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.pull(h.database(), into: h.temp.url, progress: nil) }
        #expect(error?.code == .databaseMissing)
    }

    @Test(arguments: [
        (IOSStandInDevice.State.locked, FlippioError.Code.iosDeviceLocked),
        (.unpaired, .iosNotPaired),
    ])
    func ifuseRefusalsNameTheFix(_ state: IOSStandInDevice.State, _ code: FlippioError.Code) async throws {
        let h = try Harness(.ifuse, state: state)
        let error = await #expect(throws: FlippioError.self) { try await h.bridge.fingerprint(h.database()) }
        #expect(error?.code == code)
        #expect(h.ios.activeMounts().isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.ios.mountRoot.appendingPathComponent(Self.udid).path).isEmpty)
    }

    @Test func theBackendIsAfcclientWhenPresentElseIfuseUnlessConfigured() throws {
        #expect(IOSFileBackendKind.choose(requested: nil, afcclientUsable: true, ifuseUsable: true) == .afcclient)
        #expect(IOSFileBackendKind.choose(requested: nil, afcclientUsable: false, ifuseUsable: true) == .ifuse)
        #expect(IOSFileBackendKind.choose(requested: .ifuse, afcclientUsable: true, ifuseUsable: true) == .ifuse)
        #expect(IOSFileBackendKind.choose(requested: nil, afcclientUsable: false, ifuseUsable: false) == nil)
        #expect(try IOSFileBackendKind.requested(in: ["FLIPPIO_IOS_BACKEND": "IFUSE"]) == .ifuse)
        #expect(try IOSFileBackendKind.requested(in: ["FLIPPIO_IOS_BACKEND": "auto"]) == nil)
        let error = #expect(throws: FlippioError.self) { try IOSFileBackendKind.requested(in: ["FLIPPIO_IOS_BACKEND": "usbfs"]) }
        #expect(error?.code == .invalidArgument)
    }

    @Test func mountinfoEscapesAreDecoded() {
        let text = """
            36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
            45 27 0:40 / /run/user/0/flippio/mnt/UDID/com.example.Notes rw,nosuid,nodev - fuse.ifuse ifuse rw,user_id=0
            46 27 0:41 / /run/user/0/flippio/mnt/UDID/My\\040App rw - fuse.ifuse ifuse rw
            """
        #expect(MountTable.mountPoints(under: "/run/user/0/flippio/mnt/", mountinfo: text)
            == ["/run/user/0/flippio/mnt/UDID/com.example.Notes", "/run/user/0/flippio/mnt/UDID/My App"])
    }
}
