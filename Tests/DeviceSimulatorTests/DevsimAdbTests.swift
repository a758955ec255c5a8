import Foundation
import Testing
import TestSupport

/// The real `/usr/bin/adb` against `flippio-devsim` running as a real process.
@Suite struct DevsimAdbTests {
    static let app = "com.example.notes"

    /// A simulator with one ready phone holding a SQLite database made by the sqlite3 CLI.
    static func phone() throws -> (Devsim, DevsimDevice, URL) {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554", packages: [app: true, "com.example.release": false])
        let db = device.appData(app).appendingPathComponent("databases/notes.db")
        try FileManager.default.createDirectory(at: db.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Shell.sqlite(db, "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('hello'), ('world');")
        return (sim, device, db)
    }

    // MARK: - Device lists

    @Test func devicesLong_showsReadyUnauthorizedAndOfflineDevicesAsAdbDoes() throws {
        let sim = try Devsim()
        try sim.addDevice("emulator-5554", model: "Pixel 7")
        try sim.addDevice("R58M123ABC", state: "unauthorized")
        try sim.addDevice("0A1B2C3D", state: "offline")

        let result = try sim.adb(["devices", "-l"])

        #expect(result.status == 0)
        #expect(result.out == """
            List of devices attached
            0A1B2C3D               offline transport_id:1
            R58M123ABC             unauthorized transport_id:2
            emulator-5554          device product:pixel_7 model:Pixel_7 device:pixel_7 transport_id:3


            """)
        let short = try sim.adb(["devices"])
        #expect(short.out == "List of devices attached\n0A1B2C3D\toffline\nR58M123ABC\tunauthorized\nemulator-5554\tdevice\n\n")
    }

    @Test func getState_andGetprop_describeTheDevice() throws {
        let sim = try Devsim()
        try sim.addDevice("emulator-5554", model: "Pixel 8 Pro")
        #expect(try sim.adb(["-s", "emulator-5554", "get-state"]).out == "device\n")
        #expect(try sim.adb(["-s", "emulator-5554", "shell", "getprop", "ro.product.model"]).out == "Pixel 8 Pro\n")
        #expect(try sim.adb(["-s", "emulator-5554", "shell", "getprop", "ro.build.version.sdk"]).out == "34\n")
        #expect(try sim.adb(["-s", "emulator-5554", "shell", "getprop", "ro.build.version.release"]).out == "14\n")
    }

    // MARK: - Exit status

    @Test func shellExitStatus_reachesTheClient() throws {
        let (sim, device, _) = try Self.phone()
        let s = device.serial
        #expect(try sim.adb(["-s", s, "shell", "true"]).status == 0)
        #expect(try sim.adb(["-s", s, "shell", "false"]).status == 1)
        #expect(try sim.adb(["-s", s, "shell", "exit 3"]).status == 3)
        #expect(try sim.adb(["-s", s, "shell", "sh", "-c", "'exit 42'"]).status == 42)
        #expect(try sim.adb(["-s", s, "shell", "test", "-e", "/data/local/tmp"]).status == 0)
        #expect(try sim.adb(["-s", s, "shell", "test", "-e", "/data/local/tmp/missing"]).status == 1)

        let unknown = try sim.adb(["-s", s, "shell", "sqlite4", "x"])
        #expect(unknown.status == 127)
        #expect(unknown.err == "/system/bin/sh: sqlite4: inaccessible or not found\n")
    }

    @Test func shell_keepsStdoutAndStderrApart() throws {
        let (sim, device, _) = try Self.phone()
        let result = try sim.adb(["-s", device.serial, "shell", "echo out; echo err >&2; cat /nope"])
        #expect(result.out == "out\n")
        #expect(result.err == "err\ncat: /nope: No such file or directory\n")
        #expect(result.status == 1)
    }

    // MARK: - Transfers

    @Test func execOutRunAsCat_returnsTheExactBytesOfTheDatabase() throws {
        let (sim, device, db) = try Self.phone()
        let result = try sim.adb(["-s", device.serial, "exec-out", "run-as", Self.app, "cat", "databases/notes.db"])
        #expect(result.status == 0)
        #expect(result.stdout == (try Data(contentsOf: db)))
        #expect(result.stdout.prefix(16) == Data("SQLite format 3\0".utf8))
    }

    @Test func pushAndPull_of50MB_areByteExact() throws {
        let (sim, device, _) = try Self.phone()
        let work = try TemporaryDirectory()
        let local = work.child("big.bin")
        let random = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        let original = random.readData(ofLength: 50 * 1024 * 1024)
        try random.close()
        try original.write(to: local)

        let push = try sim.adb(["-s", device.serial, "push", local.path, "/data/local/tmp/big.bin"], timeout: 120)
        #expect(push.status == 0, "\(push.err)")
        #expect(try Data(contentsOf: device.url("/data/local/tmp/big.bin")) == original)

        let back = work.child("back.bin")
        let pull = try sim.adb(["-s", device.serial, "pull", "/data/local/tmp/big.bin", back.path], timeout: 120)
        #expect(pull.status == 0, "\(pull.err)")
        #expect(try Data(contentsOf: back) == original)

        let hash = try hostSHA256(local)
        let remote = try sim.adb(["-s", device.serial, "shell", "sha256sum", "/data/local/tmp/big.bin"])
        #expect(remote.out == "\(hash)  /data/local/tmp/big.bin\n")
    }

    @Test func contractPushSequence_replacesTheDatabaseAndRemovesItsJournals() throws {
        let (sim, device, db) = try Self.phone()
        let s = device.serial
        let dir = "/data/data/\(Self.app)/databases"
        try device.write(Data("stale wal".utf8), to: "\(dir)/notes.db-wal")
        try device.write(Data("stale shm".utf8), to: "\(dir)/notes.db-shm")
        let work = try TemporaryDirectory()
        let local = work.child("edited.db")
        try Shell.sqlite(local, "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('edited');")

        #expect(try sim.adb(["-s", s, "shell", "am", "force-stop", Self.app]).status == 0)
        #expect(try sim.adb(["-s", s, "push", local.path, "/data/local/tmp/flippio-1.db"]).status == 0)
        let script = "cp /data/local/tmp/flippio-1.db \(dir)/.notes.db.flippio-tmp && chmod 660 \(dir)/.notes.db.flippio-tmp && rm -f \(dir)/notes.db-wal \(dir)/notes.db-shm \(dir)/notes.db-journal && mv -f \(dir)/.notes.db.flippio-tmp \(dir)/notes.db"
        let replace = try sim.adb(["-s", s, "shell", "run-as \(Self.app) sh -c '\(script)'"])
        #expect(replace.status == 0, "\(replace.err)")

        let verify = try sim.adb(["-s", s, "shell", "run-as", Self.app, "sha256sum", "\(dir)/notes.db", "\(dir)/notes.db-wal"])
        let hash = try hostSHA256(local)
        #expect(verify.out == "\(hash)  \(dir)/notes.db\n")
        #expect(verify.err == "sha256sum: \(dir)/notes.db-wal: No such file or directory\n")
        #expect(verify.status == 1)
        #expect(try Shell.sqlite(db, "SELECT body FROM notes") == "edited\n")
        #expect(!FileManager.default.fileExists(atPath: device.url("\(dir)/notes.db-shm").path))
        #expect(try sim.adb(["-s", s, "shell", "rm", "-f", "/data/local/tmp/flippio-1.db"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: device.url("/data/local/tmp/flippio-1.db").path))
    }

    // MARK: - Error texts

    @Test func errors_useTheRealTexts() throws {
        let (sim, device, _) = try Self.phone()
        try sim.addDevice("R58M123ABC", state: "unauthorized")
        try sim.addDevice("0A1B2C3D", state: "offline")
        let s = device.serial
        let missing = "/data/data/\(Self.app)/databases/missing.db"

        let noFile = try sim.adb(["-s", s, "shell", "run-as", Self.app, "cat", missing])
        #expect(noFile.status == 1)
        #expect(noFile.err == "cat: \(missing): No such file or directory\n")

        let noFileExec = try sim.adb(["-s", s, "exec-out", "run-as", Self.app, "cat", missing])
        #expect(noFileExec.out == "cat: \(missing): No such file or directory\n")

        let stat = try sim.adb(["-s", s, "shell", "run-as", Self.app, "stat", "-c", "'%s %n'", "databases/notes.db", "databases/missing.db"])
        #expect(stat.out.hasSuffix(" databases/notes.db\n"))
        #expect(stat.err == "stat: 'databases/missing.db': No such file or directory\n")

        let notDebuggable = try sim.adb(["-s", s, "shell", "run-as", "com.example.release", "ls"])
        #expect(notDebuggable.status == 1)
        #expect(notDebuggable.err == "run-as: package not debuggable: com.example.release\n")

        let unknown = try sim.adb(["-s", s, "shell", "run-as", "com.example.nope", "ls"])
        #expect(unknown.status == 1)
        #expect(unknown.err == "run-as: unknown package: com.example.nope\n")

        let denied = try sim.adb(["-s", s, "shell", "cat", "/data/data/\(Self.app)/databases/notes.db"])
        #expect(denied.err == "cat: /data/data/\(Self.app)/databases/notes.db: Permission denied\n")

        let unauthorized = try sim.adb(["-s", "R58M123ABC", "shell", "ls"])
        #expect(unauthorized.status == 1)
        #expect(unauthorized.err == """
            error: device unauthorized.
            This adb server's $ADB_VENDOR_KEYS is not set
            Try 'adb kill-server' if that seems wrong.
            Otherwise check for a confirmation dialog on your device.

            """)

        let offline = try sim.adb(["-s", "0A1B2C3D", "exec-out", "cat", "/sdcard/x"])
        #expect(offline.status != 0)
        #expect(offline.err == "error: device offline\n")

        let notFound = try sim.adb(["-s", "nope", "shell", "ls"])
        #expect(notFound.err == "error: device 'nope' not found\n")

        let pullMissing = try sim.adb(["-s", s, "pull", "/data/local/tmp/nope", "/tmp/devsim-never-written"])
        #expect(pullMissing.status == 1)
        #expect(pullMissing.out == "adb: error: remote object '/data/local/tmp/nope' does not exist\n")  // adb 29: on stdout

        let noSu = try sim.adb(["-s", s, "shell", "su", "0", "id"])
        #expect(noSu.status == 127)
        #expect(noSu.err == "/system/bin/sh: su: inaccessible or not found\n")
    }

    // MARK: - track-devices

    @Test func trackDevices_reportsADeviceRemovedAndAddedAgain() async throws {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554")
        let tracker = try Tracker(sim)
        defer { tracker.stop() }

        try await waitUntil("the device is listed") { tracker.lists().last == "emulator-5554\tdevice\n" }
        try device.unplug()
        try await waitUntil("the device is gone") { tracker.lists().last == "" }
        try device.plugIn()
        try await waitUntil("the device is back") { tracker.lists().last == "emulator-5554\tdevice\n" }
        try device.setState("offline")
        try await waitUntil("the device is offline") { tracker.lists().last == "emulator-5554\toffline\n" }
        #expect(tracker.lists() == ["emulator-5554\tdevice\n", "", "emulator-5554\tdevice\n", "emulator-5554\toffline\n"])
    }

    // MARK: - Request log

    @Test func requestsLog_recordsWhatTheClientAsked() throws {
        let (sim, device, _) = try Self.phone()
        try sim.clearRequests()
        _ = try sim.adb(["-s", device.serial, "shell", "echo", "hi"])
        _ = try sim.adb(["-s", device.serial, "exec-out", "run-as", Self.app, "cat", "databases/notes.db"])
        _ = try sim.adb(["-s", device.serial, "pull", "/sdcard/none", "/tmp/devsim-never-written"])

        let requests = try sim.requests()
        let shell = requests.first { $0.service == "shell" }
        #expect(shell?.command == "echo hi")
        #expect(shell?.serial == device.serial)
        #expect(requests.contains { $0.service == "exec" && $0.command == "run-as 'com.example.notes' 'cat' 'databases/notes.db'" })
        #expect(requests.contains { $0.service == "sync" && $0.op == "STAT" && $0.command == "/sdcard/none" })
        #expect(requests.contains { $0.service == "host:version" })
        let time = try #require(shell?.time)
        #expect(time.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil)
    }
}

/// Runs `adb track-devices` and collects the length-prefixed lists it prints.
final class Tracker: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var output = Data()

    init(_ sim: Devsim) throws {
        process.executableURL = Devsim.adbPath
        process.arguments = ["-H", "127.0.0.1", "-P", "\(sim.port)", "track-devices"]
        var env = ProcessInfo.processInfo.environment
        for (k, v) in sim.environment { env[k] = v }
        process.environment = env
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.lock()
            self.output.append(data)
            self.lock.unlock()
        }
        try process.run()
    }

    /// Each list received so far (adb 29 prints them raw: four hex digits of length, then the list).
    func lists() -> [String] {
        lock.lock()
        var bytes = output[...]
        lock.unlock()
        var lists: [String] = []
        while bytes.count >= 4, let n = Int(String(decoding: bytes.prefix(4), as: UTF8.self), radix: 16),
              bytes.count >= 4 + n {
            lists.append(String(decoding: bytes.dropFirst(4).prefix(n), as: UTF8.self))
            bytes = bytes.dropFirst(4 + n)
        }
        return lists
    }

    /// SIGKILL: children of the test runner inherit its blocked SIGTERM, so `terminate()` would not do.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// The file's SHA-256 by the host's coreutils (an independent implementation).
func hostSHA256(_ file: URL) throws -> String {
    let result = try Shell.run(URL(fileURLWithPath: "/usr/bin/sha256sum"), [file.path])
    return String(result.out.prefix(64))
}
