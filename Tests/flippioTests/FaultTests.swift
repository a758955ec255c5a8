import DeviceSimulator
import FlippioEngine
import Foundation
import Testing
import TestSupport

// Shared pieces of the fault suites (issue #7): the tags that `scripts/reliability-report` counts,
// and helpers over ``Scenario`` for injecting faults and checking what the device holds.

extension Tag {
    /// The test fails if an edit saved locally never reaches the device.
    @Tag static var editLost: Self
    /// The test fails if a device database is left partial, corrupt, or with stale `-wal`/`-shm`/temp files.
    @Tag static var corruption: Self
    /// The test fails if the app's own write on the device is overwritten without a conflict.
    @Tag static var silentOverwrite: Self
    /// The test fails if device output makes flippio write outside its workspace (or crash).
    @Tag static var escape: Self
}

extension Scenario {
    /// A scenario on a given harness (e.g. one whose workspace is a small tmpfs).
    static func make(on harness: FlippioHarness, pull: Bool = true) throws -> Scenario {
        let device = try harness.sim.addDevice(serial, packages: [package: true])
        let scenario = Scenario(harness: harness, device: device)
        try FileManager.default.createDirectory(at: scenario.deviceDatabase.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Shell.sqlite(scenario.deviceDatabase, """
            CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
            INSERT INTO notes(title) VALUES ('one'), ('two'), ('three');
            """)
        if pull { try scenario.pull() }
        return scenario
    }

    /// Another database of the same app, `databases/NAME`, made by sqlite3 and (optionally) pulled.
    @discardableResult
    func addDatabase(_ name: String, pull: Bool = true) throws -> (device: URL, local: URL) {
        let remote = "/data/data/\(Self.package)/databases/\(name)"
        let deviceURL = device.url(remote)
        try Shell.sqlite(deviceURL, """
            CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
            INSERT INTO notes(title) VALUES ('\(name) one');
            """)
        let local = harness.localCopy(serial: Self.serial, package: Self.package, remotePath: remote)
        if pull {
            let result = try harness.flippio(["pull", Self.serial, Self.package, "databases/\(name)"])
            guard result.status == 0 else { throw ShellError("flippio pull \(name) failed:\n\(result.out)\n\(result.err)") }
        }
        return (deviceURL, local)
    }

    /// The sidecar of any tracked local copy.
    func sidecar(of local: URL) throws -> Sidecar { try SidecarStore.load(forDatabase: local) }

    /// Requests the simulator logged for this scenario's device (host requests naming it included).
    func deviceRequests() throws -> [DevsimRequest] {
        try harness.sim.requests().filter { $0.serial == Self.serial }
    }

    /// `flippio status` as text (what a user reads).
    func statusText() throws -> String {
        let result = try harness.flippio(["status"])
        return result.out + result.err
    }

    /// Everything a push may leave on the device: `-wal`/`-shm`/`-journal` beside the database,
    /// other files in its folder, uploads in `/data/local/tmp`.
    func deviceLeftovers() throws -> [String] {
        // Other databases of the app (`a.db`) are not leftovers; hidden temp files and journals are.
        let stray = try deviceStrayFiles().filter { !($0.hasSuffix(".db") && !$0.hasPrefix(".")) }
        return deviceSideFiles() + stray + (try deviceTmpFiles())
    }

    /// `PRAGMA quick_check` of the device's copy (with its `-wal`, if any), run by the real sqlite3
    /// on a copy: opening the device's file itself would checkpoint and delete its `-wal`, which
    /// is a write the agent would rightly call the app's.
    func deviceQuickCheck() throws -> String {
        let temp = try TemporaryDirectory("device-check")
        let copy = temp.child("check.db")
        try FileManager.default.copyItem(at: deviceDatabase, to: copy)
        if FileManager.default.fileExists(atPath: deviceDatabase.path + "-wal") {
            try FileManager.default.copyItem(atPath: deviceDatabase.path + "-wal", toPath: copy.path + "-wal")
        }
        return try Shell.sqlite(copy, "PRAGMA quick_check").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Checks what every push must leave behind, once it has ended: the edit on the device, a
    /// sound database with no leftovers, and a sidecar that agrees with the device.
    ///
    /// The device's database is only opened with sqlite3 once the sidecar says it was pushed and
    /// its hash matches: opening a database that has a `-wal` would checkpoint and delete it.
    func expectPushed(titles: [String], agent: AgentProcess, timeout: Duration = .seconds(45),
                      sourceLocation: SourceLocation = #_sourceLocation) async throws {
        var leftovers: [String] = []
        do {
            try await waitUntil("device has \(titles)", timeout: timeout) {
                guard let sidecar = try? self.sidecar(), sidecar.state == .clean,
                      let pushed = sidecar.fingerprintAtLastPush?.mainHash,
                      (try? self.hash(self.deviceDatabase)) == pushed else { return false }
                leftovers = (try? self.deviceLeftovers()) ?? ["(unreadable)"]
                return (try? self.deviceTitles()) == titles
            }
        } catch {
            let sidecar = (try? self.sidecar()).map { "\($0.state) \($0.lastError?.message ?? "")" } ?? "unreadable"
            Issue.record("sidecar: \(sidecar)\n--- agent log ---\n\(agent.log)", sourceLocation: sourceLocation)
            throw error
        }
        let sidecar = try sidecar()
        #expect(leftovers == [], "no -wal/-shm/-journal, temp file or upload left on the device", sourceLocation: sourceLocation)
        #expect(try deviceQuickCheck() == "ok", sourceLocation: sourceLocation)
        #expect(sidecar.fingerprintAtLastPush?.mainHash == (try hash(deviceDatabase)), "the sidecar agrees with the device",
                sourceLocation: sourceLocation)
        #expect(sidecar.deviceContentHash == (try ContentHash.sha256(databaseAt: deviceDatabase)), sourceLocation: sourceLocation)
        #expect(sidecar.pendingPushHash == nil, sourceLocation: sourceLocation)
    }

    /// Starts the agent with the settings most fault tests use and waits until its start-up check
    /// (one snapshot per tracked database, compared with the device's content) has run.
    func startAgent(_ arguments: [String] = ["--no-stop-app"], environment: [String: String] = [:],
                    checks: Int = 1) async throws -> AgentProcess {
        let agent = try harness.startAgent(arguments, environment: environment)
        try await agent.waitForLog("ready")
        try await waitUntil("start-up check of \(checks) database(s)\n\(agent.log)", timeout: .seconds(30)) {
            agent.occurrences(of: "nothing pushed") >= checks
        }
        return agent
    }
}

extension DevsimRequest {
    /// The request's time, parsed from the simulator's ISO 8601 stamp.
    var date: Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: time)
    }
}

/// Processes of the real `adb` client (other than the agent's long-lived `track-devices` and its
/// device-side watchers, `shell run-as PKG inotifyd`) that talk to the simulator on `port`: what a
/// timeout must have killed.
func liveAdbClients(port: Int) -> [String] {
    let marker = "ANDROID_ADB_SERVER_PORT=\(port)"
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var found: [String] = []
    for entry in entries where Int32(entry) != nil {
        guard let command = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
              let environment = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
        let words = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard let first = words.first, first.hasSuffix("/adb") || first == "adb",
              !words.contains("track-devices"), !words.contains("fork-server"),
              !words.contains(where: { $0.contains(" inotifyd - ") }) else { continue }
        // A zombie has an empty cmdline; a live client carries the simulator's port in its environment.
        let variables = environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if variables.contains(marker) { found.append("\(entry): \(words.joined(separator: " "))") }
    }
    return found
}

/// Runs `/bin/mount` or `/bin/umount` (the fault suites need a small or read-only file system).
@discardableResult
func mountCommand(_ tool: String, _ arguments: [String]) throws -> ShellResult {
    let result = try Shell.run(URL(fileURLWithPath: "/bin/\(tool)"), arguments, timeout: 30)
    guard result.status == 0 else { throw ShellError("\(tool) \(arguments.joined(separator: " ")) failed: \(result.err)") }
    return result
}

/// Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), checked once.
let canMount: Bool = {
    guard getuid() == 0 else { return false }
    guard let temp = try? TemporaryDirectory("mount-probe") else { return false }
    let ok = (try? mountCommand("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", temp.url.path])) != nil
    if ok { _ = try? mountCommand("umount", [temp.url.path]) }
    return ok
}()
