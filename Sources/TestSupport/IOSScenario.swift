import Foundation

/// One stand-in iPhone with one development-signed app whose `Documents/notes.db` was made by the
/// real sqlite3 CLI, reached by the built `flippio` binary through the libimobiledevice stand-ins,
/// as it would reach the real tools: the stand-ins' `bin` folder first on `PATH`, the devices in
/// `FLIPPIO_IOS_SIM_DIR`.
///
/// The harness's emulated Android side (an adb server with no devices) runs too, so every
/// command sees both platforms, as on a developer's machine.
///
/// For example:
///
/// ```swift
/// let scenario = try IOSScenario.make()          // pulled with `flippio pull`
/// let agent = try scenario.startAgent()
/// try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('four')")
/// try await waitUntil("pushed") { (try? scenario.deviceTitles())?.last == "four" }
/// ```
public struct IOSScenario: Sendable {
    public static let udid = "00008030-001A35E22E10802E"
    public static let bundle = "com.example.Notes"
    public static let remotePath = "/Documents/notes.db"

    public let harness: FlippioHarness
    public let ios: IOSStandIns
    public let device: IOSStandInDevice
    public let udid: String

    /// The app's own database file, as the device holds it.
    public var deviceDatabase: URL { device.container(Self.bundle).appendingPathComponent("Documents/notes.db") }
    /// The local copy in the workspace: `<workspace>/<UDID>/<bundle>/Documents/notes.db`.
    public var localCopy: URL { harness.localCopy(serial: udid, package: Self.bundle, remotePath: Self.remotePath) }

    /// The environment of every flippio process: the harness's, plus the stand-ins.
    public var environment: [String: String] { harness.environment.merging(ios.environment) { $1 } }

    /// - parameters:
    ///   - udid: the device's UDID (a 25-character `00008030-...` or a 40-hex one).
    ///   - app: how house_arrest treats the app (container, documents).
    ///   - journalMode: the device database's journal mode (`delete` or `wal`).
    ///   - pull: whether to run `flippio pull` at once.
    ///   - backend: the file backend flippio finds (`.ifuse`: no afcclient, as on Debian 12).
    public static func make(udid: String = IOSScenario.udid, app: IOSStandInApp = IOSStandInApp(name: "Notes"),
                            journalMode: String = "delete", pull: Bool = true,
                            backend: IOSStandInBackend = .afcclient) throws -> IOSScenario {
        let harness = try FlippioHarness()
        let ios = try IOSStandIns(backend: backend)
        let device = try ios.addDevice(udid: udid, apps: [bundle: app])
        let scenario = IOSScenario(harness: harness, ios: ios, device: device, udid: udid)
        try NotesDatabase.create(at: scenario.deviceDatabase, journalMode: journalMode)
        if pull { try scenario.pull() }
        return scenario
    }

    /// Runs `flippio ARGS` with the stand-ins.
    @discardableResult
    public func flippio(_ arguments: [String], environment extra: [String: String] = [:], timeout: TimeInterval = 120) throws -> ShellResult {
        try harness.flippio(arguments, environment: ios.environment.merging(extra) { $1 }, timeout: timeout)
    }

    /// Starts `flippio agent ARGS` with the stand-ins.
    public func startAgent(_ arguments: [String] = [], environment extra: [String: String] = [:]) throws -> AgentProcess {
        try harness.startAgent(arguments, environment: ios.environment.merging(extra) { $1 })
    }

    public func pull() throws {
        let result = try flippio(["pull", udid, Self.bundle, "notes.db"])
        guard result.status == 0 else { throw ShellError("flippio pull failed (\(result.status)):\n\(result.out)\n\(result.err)") }
    }

    /// The titles in the device's copy, in id order.
    public func deviceTitles() throws -> [String] {
        try Shell.sqlite(deviceDatabase, "SELECT title FROM notes ORDER BY id").split(separator: "\n").map(String.init)
    }

    public func localTitles() throws -> [String] {
        try Shell.sqlite(localCopy, "SELECT title FROM notes ORDER BY id").split(separator: "\n").map(String.init)
    }

    /// Side files that must not remain beside the device's database after a push.
    public func deviceSideFiles() -> [String] {
        ["-wal", "-shm", "-journal"].filter { FileManager.default.fileExists(atPath: deviceDatabase.path + $0) }
    }

    /// Files in the app's Documents other than notes.db itself (temp files left behind).
    public func deviceStrayFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: deviceDatabase.deletingLastPathComponent().path)
            .filter { $0 != "notes.db" }
    }

    /// `afcclient ... put` calls the stand-ins received (uploads to the device; with ifuse, uploads
    /// are file writes through the mount, which the stand-ins do not see).
    public func uploadCount() throws -> Int {
        try ios.requests().filter { $0.tool == "afcclient" && $0.args.contains("put") }.count
    }
}
