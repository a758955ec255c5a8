import FlippioEngine
import Foundation
import TestSupport

/// One emulated phone with one debuggable app whose `notes.db` was made by the real sqlite3 CLI,
/// pulled into a private workspace by the real `flippio pull`.
struct Scenario {
    static let package = "com.example.notes"
    static let serial = "emulator-5554"
    static let remotePath = "/data/data/com.example.notes/databases/notes.db"

    let harness: FlippioHarness
    let device: DevsimDevice

    /// The app's own database file, as the device holds it.
    var deviceDatabase: URL { device.appData(Self.package).appendingPathComponent("databases/notes.db") }
    /// The local copy in the workspace.
    var localCopy: URL { harness.localCopy(serial: Self.serial, package: Self.package, remotePath: Self.remotePath) }

    /// - parameter journalMode: the device database's journal mode (`delete` or `wal`).
    /// - parameter pull: whether to run `flippio pull` at once.
    static func make(journalMode: String = "delete", pull: Bool = true) throws -> Scenario {
        let harness = try FlippioHarness()
        let device = try harness.sim.addDevice(serial, packages: [package: true])
        let scenario = Scenario(harness: harness, device: device)
        try NotesDatabase.create(at: scenario.deviceDatabase, journalMode: journalMode)
        if pull { try scenario.pull() }
        return scenario
    }

    func pull() throws {
        let result = try harness.flippio(["pull", Self.serial, Self.package, "databases/notes.db"])
        guard result.status == 0 else { throw ShellError("flippio pull failed (\(result.status)):\n\(result.out)\n\(result.err)") }
    }

    func sidecar() throws -> Sidecar {
        let data = try Data(contentsOf: Sidecar.url(forDatabase: localCopy))
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            if let date = formatter.date(from: text) { return date }
            formatter.formatOptions = [.withInternetDateTime]
            if let date = formatter.date(from: text) { return date }
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad date \(text)"))
        }
        return try decoder.decode(Sidecar.self, from: data)
    }

    /// The titles in the device's copy, in id order.
    func deviceTitles() throws -> [String] {
        try Shell.sqlite(deviceDatabase, "SELECT title FROM notes ORDER BY id").split(separator: "\n").map(String.init)
    }

    func localTitles() throws -> [String] {
        try Shell.sqlite(localCopy, "SELECT title FROM notes ORDER BY id").split(separator: "\n").map(String.init)
    }

    /// Side files that must not remain beside the device's database after a push.
    func deviceSideFiles() -> [String] {
        ["-wal", "-shm", "-journal"].filter { FileManager.default.fileExists(atPath: deviceDatabase.path + $0) }
    }

    /// Files in the app's databases folder other than notes.db itself (temp files left behind).
    func deviceStrayFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: deviceDatabase.deletingLastPathComponent().path)
            .filter { $0 != "notes.db" }
    }

    func deviceTmpFiles() throws -> [String] {
        let tmp = device.fs.appendingPathComponent("data/local/tmp")
        return (try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? []
    }

    func hash(_ url: URL) throws -> String { try ContentHash.sha256(fileAt: url) }

    /// Device pushes recorded by the simulator: `adb push` uploads (sync SEND) to /data/local/tmp.
    func uploadCount() throws -> Int {
        try harness.sim.requests().filter { $0.service == "sync" && $0.op == "SEND" && ($0.command ?? "").contains("/data/local/tmp/") }.count
    }
}
