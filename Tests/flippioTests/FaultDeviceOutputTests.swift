import DeviceSimulator
import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Issue #7, hostile or broken device output, end to end: file names with newlines, control
/// characters and invalid UTF-8, ten thousand databases, a database that is binary garbage, a
/// `find` that never ends. Each is rejected or bounded: never a crash, never a write outside the
/// workspace. (The parsers themselves are fuzzed in FlippioEngineTests/FuzzParserTests.)
@Suite("Fault: hostile device output", .serialized)
struct FaultDeviceOutputTests {
    /// Every file under the test's home other than the workspace and logs: what must not change.
    func filesOutsideWorkspace(_ harness: FlippioHarness) -> Set<String> {
        var files = Set<String>()
        let root = harness.home.url.path
        let workspace = harness.workspace.path
        if let walker = FileManager.default.enumerator(atPath: root) {
            for case let relative as String in walker {
                let path = root + "/" + relative
                if path.hasPrefix(workspace + "/") || path == workspace { continue }
                files.insert(relative)
            }
        }
        return files
    }

    /// Creates a file on the device from raw name bytes (names that are not valid UTF-8 included).
    func createDeviceFile(_ folder: URL, name: [UInt8], contents: Data = Data()) throws {
        let path = Array(folder.path.utf8) + [UInt8(ascii: "/")] + name + [0]
        let fd = path.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        }
        guard fd >= 0 else { throw ShellError("cannot create \(name) on the device: errno \(errno)") }
        _ = contents.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    func exitedNormally(_ result: ShellResult) -> Bool { result.status == 0 || result.status == 1 }

    @Test("paths with newlines, control characters and invalid UTF-8 are rejected; the good databases are listed and pulled",
          .tags(.escape))
    func hostileNamesAreRejected() async throws {
        let scenario = try Scenario.make(pull: false)
        let folder = scenario.deviceDatabase.deletingLastPathComponent()
        let sqlite = try Data(contentsOf: scenario.deviceDatabase)
        let hostile: [[UInt8]] = [
            Array("evil\n.db".utf8),
            Array("two\nlines\n/data/data/com.example.notes/databases/notes.db".utf8).filter { $0 != UInt8(ascii: "/") },
            Array("tab\there.db".utf8),
            Array("escape\u{1B}[31mred.db".utf8),
            Array("bell\u{07}.db".utf8),
            Array("del\u{7F}.db".utf8),
            Array("c1\u{85}.db".utf8),
            [0xFF, 0xFE, 0x2E, 0x64, 0x62],                 // "\xff\xfe.db"
            [0x63, 0xC3, 0x28, 0x2E, 0x64, 0x62],           // "c\xc3(.db"
            Array("..db".utf8), Array("...db".utf8),
            Array("-rf.db".utf8),
            Array("$(reboot).db".utf8), Array("`id`.db".utf8), Array("quote'd.db".utf8),
        ]
        for name in hostile { try createDeviceFile(folder, name: name, contents: sqlite) }
        let before = filesOutsideWorkspace(scenario.harness)

        let dbs = try scenario.harness.flippio(["dbs", Scenario.serial, Scenario.package, "--json"])
        #expect(dbs.status == 0, "\(dbs.err)")
        let listed = try JSONDocument.decode([RemoteDatabase].self, "databases", from: dbs.stdout).map(\.path)
        for path in listed {
            #expect(DeviceShellQuoting.isSafeDevicePath(path), "listed an unsafe path \(path.debugDescription)")
            #expect(path.hasPrefix("/data/data/\(Scenario.package)/"))
        }
        #expect(listed.contains(Scenario.remotePath))
        let names = listed.map { String($0.split(separator: "/").last ?? "") }
        #expect(!names.contains { $0.hasPrefix("evil") || $0.hasPrefix("tab") || $0.hasPrefix("escape") || $0.hasPrefix("two")
                    || $0.hasPrefix("bell") || $0.hasPrefix("del") || $0.hasPrefix("c1") || $0.hasPrefix("c") && $0.count < 6 },
                "\(names.map(\.debugDescription))")
        // Names that are odd but valid are listed as they are, and only ever used quoted.
        #expect(Set(names).isSuperset(of: ["notes.db", "$(reboot).db", "`id`.db", "quote'd.db", "-rf.db", "..db", "...db"]), "\(names)")

        // Pulling every listed database writes inside the workspace only, and each copy is sound.
        let pull = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package])
        #expect(exitedNormally(pull), "no crash: \(pull.status)\n\(pull.err)")
        #expect(filesOutsideWorkspace(scenario.harness) == before, "nothing written outside the workspace")
        for database in try Workspace(root: scenario.harness.workspace).trackedDatabases() {
            #expect(database.path.hasPrefix(scenario.harness.workspace.path + "/"))
            #expect(try Shell.sqlite(database, "PRAGMA quick_check") == "ok\n")
        }
        #expect(FileManager.default.fileExists(atPath: scenario.localCopy.path))
    }

    @Test("ten thousand databases are listed within bounds, without a crash", .tags(.escape))
    func tenThousandEntriesAreBounded() async throws {
        let scenario = try Scenario.make(pull: false)
        let folder = scenario.device.appData(Scenario.package).appendingPathComponent("databases/many", isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        // Databases are found by their header, so each file starts with one.
        let header = Data("SQLite format 3\0".utf8) + Data(count: 84)
        for i in 0..<10_050 { try createDeviceFile(folder, name: Array("cache-\(i).db".utf8), contents: header) }

        let dbs = try scenario.harness.flippio(["dbs", Scenario.serial, Scenario.package, "--json"], timeout: 120)
        #expect(dbs.status == 0, "\(dbs.err)")
        let listed = try JSONDocument.decode([RemoteDatabase].self, "databases", from: dbs.stdout)
        #expect(listed.count <= 10_000 + 1, "bounded: \(listed.count)")
        #expect(listed.count >= 10_000 - 1, "the listing is used, not dropped: \(listed.count)")
        #expect(Set(listed.map(\.path)).count == listed.count, "no duplicates")
    }

    @Test("a database that is binary garbage is refused: nothing tracked, nothing written", .tags(.escape))
    func binaryGarbageIsRefused() async throws {
        let scenario = try Scenario.make(pull: false)
        var generator = SplitMix64(seed: 7)
        let garbage = Data((0..<65_536).map { _ in UInt8.random(in: 0...255, using: &generator) })
        try scenario.device.write(garbage, to: "/data/data/\(Scenario.package)/databases/garbage.db")
        let before = filesOutsideWorkspace(scenario.harness)

        let pull = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package, "databases/garbage.db"])
        #expect(pull.status == 1, "refused: \(pull.status)\n\(pull.out)\(pull.err)")
        // Not an SQLite header: the listing leaves it out, so the app has no such database.
        #expect(pull.err.lowercased().contains("sqlite") || pull.err.contains("has no database"), "says why: \(pull.err)")
        let local = scenario.harness.localCopy(serial: Scenario.serial, package: Scenario.package,
                                               remotePath: "/data/data/\(Scenario.package)/databases/garbage.db")
        #expect(!FileManager.default.fileExists(atPath: local.path), "no copy")
        #expect(!FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: local).path), "not tracked")
        #expect(filesOutsideWorkspace(scenario.harness) == before)
    }

    @Test("a find that never ends is stopped at its timeout: an error, no crash, no adb left behind", .tags(.escape))
    func endlessFindIsBounded() async throws {
        let scenario = try Scenario.make(pull: false)
        let port = scenario.harness.sim.port
        try scenario.device.setFaults(["hangSeconds": 600])
        let dbs = try scenario.harness.flippio(["dbs", Scenario.serial, Scenario.package],
                                               environment: ["FLIPPIO_COMMAND_TIMEOUT_MS": "1000"], timeout: 120)
        #expect(dbs.status == 1, "\(dbs.status)\n\(dbs.out)\(dbs.err)")
        #expect(dbs.err.contains("did not finish within"), "\(dbs.err)")
        #expect(try scenario.deviceRequests().contains { ($0.command ?? "").contains("find") })
        try await waitUntil("no adb client left behind: \(liveAdbClients(port: port))") { liveAdbClients(port: port).isEmpty }
    }
}

