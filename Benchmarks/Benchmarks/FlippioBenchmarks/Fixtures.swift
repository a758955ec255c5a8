import FlippioEngine
import Foundation
import GRDB

/// Files the benchmarks read: made once and kept in `$FLIPPIO_BENCH_DIR` (default
/// `$TMPDIR/flippio-benchmarks`), since every benchmark runs in a process of its own.
final class Fixtures: Sendable {
    static let shared = Fixtures()

    let directory: URL

    private init() {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["FLIPPIO_BENCH_DIR"].map { URL(fileURLWithPath: $0, isDirectory: true) }
            ?? URL(fileURLWithPath: environment["TMPDIR"] ?? "/tmp", isDirectory: true).appendingPathComponent("flippio-benchmarks")
        directory = base
        try? FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
    }

    /// A rollback-journal database of at least `megabytes` MB: one table of text rows with an index,
    /// like an app's. Built under a temporary name and renamed, so a killed run leaves no half file.
    func database(megabytes: Int) throws -> URL {
        let url = directory.appendingPathComponent("db-\(megabytes)mb.db")
        if let size = try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int, size >= megabytes * 1_000_000 {
            return url
        }
        let temporary = directory.appendingPathComponent(".db-\(megabytes)mb-\(getpid()).db")
        try? FileManager.default.removeItem(at: temporary)
        let queue = try DatabaseQueue(path: temporary.path)
        try queue.write { db in
            try db.execute(sql: """
                CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, updated INTEGER NOT NULL);
                CREATE INDEX notes_title ON notes(title);
                """)
        }
        var rows = 0
        while (try? FileManager.default.attributesOfItem(atPath: temporary.path)[.size] as? Int) ?? 0 < megabytes * 1_000_000 {
            try queue.write { db in
                try db.execute(sql: """
                    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000)
                    INSERT INTO notes(title, body, updated) SELECT 'note ' || (x + ?), hex(randomblob(200)), x FROM c
                    """, arguments: [rows])
            }
            rows += 2000
        }
        try queue.close()
        guard rename(temporary.path, url.path) == 0 else { throw CocoaError(.fileWriteUnknown) }
        return url
    }

    /// Five executables named like the tools, each sleeping 100 ms and printing a version line.
    func fakeTools() throws -> URL {
        let tools = directory.appendingPathComponent("fake-tools", isDirectory: true)
        try FileManager.default.createDirectory(at: tools, withIntermediateDirectories: true)
        for tool in Tool.allCases {
            let version = tool == .adb
                ? "Android Debug Bridge version 1.0.41\nVersion 29.0.6-debian\nInstalled as $0"
                : "\(tool.rawValue) 1.3.0"
            let script = "#!/bin/sh\nsleep 0.1\nprintf '%s\\n' \"\(version)\"\n"
            let url = tools.appendingPathComponent(tool.rawValue)
            if (try? String(contentsOf: url, encoding: .utf8)) != script {
                try script.write(to: url, atomically: true, encoding: .utf8)
                chmod(url.path, 0o755)
            }
        }
        return tools
    }

    /// How discovery asks a tool for its version.
    static func versionCommand(_ directory: URL, _ tool: Tool) -> ProcessCommand {
        ProcessCommand(executable: directory.appendingPathComponent(tool.rawValue).path,
                       arguments: tool == .adb ? ["version"] : ["--version"], timeout: .seconds(3))
    }

    /// A sidecar as the agent keeps it after many pushes: full history, fingerprints, row counts.
    static func sampleSidecar() -> Sidecar {
        let hash = String(repeating: "3f9a0c7d", count: 8)
        var sidecar = Sidecar(
            origin: .init(platform: .android, deviceID: "emulator-5554", deviceModel: "Pixel 7", appID: "com.example.notes",
                          remotePath: "/data/data/com.example.notes/databases/notes.db", access: .runAs),
            pulledAt: Date(), fingerprintAtPull: DeviceFingerprint(mainHash: hash, walHash: hash), contentHash: hash)
        sidecar.fingerprintAtLastPush = DeviceFingerprint(mainHash: hash)
        sidecar.lastRowCounts = ["notes": 1200, "tags": 40, "android_metadata": 1]
        for i in 0..<Sidecar.pushHistoryLimit {
            sidecar.recordPush(.init(at: Date(), contentHash: hash, bytes: 1_048_576, durationMilliseconds: 180 + i,
                                     changedTables: ["notes": "\(1200 + i) → \(1201 + i)"]))
        }
        return sidecar
    }
}
