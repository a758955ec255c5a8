import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("PulledDatabase.fold")
struct PulledDatabaseTests {
    /// The "device" folder and the local folder a pull copies into.
    struct Folders {
        let root: TemporaryDirectory
        var device: URL { root.child("device") }
        var local: URL { root.child("local") }
        init() throws {
            root = try TemporaryDirectory("flippio-pull")
            try FileManager.default.createDirectory(at: root.child("device"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: root.child("local"), withIntermediateDirectories: true)
        }
        /// Copies `x.db` and whichever of its `-wal`/`-journal` exist, as a pull does.
        func pull(_ name: String) throws -> URL {
            for suffix in ["", "-wal", "-journal"] {
                let source = device.appendingPathComponent(name + suffix)
                if DBFixtures.exists(source) {
                    try DBFixtures.copy(source, to: local.appendingPathComponent(name + suffix))
                }
            }
            return local.appendingPathComponent(name)
        }
    }

    @Test func walRowsThatAreOnlyInTheWALAreInTheFoldedCopy() async throws {
        let folders = try Folders()
        let onDevice = try DBFixtures.makeDatabase(folders.device.appendingPathComponent("x.db"), rows: 3, mode: "wal")
        // The app keeps the database open: its newest rows sit in the -wal, not checkpointed.
        let app = try LiveSQLite(onDevice)
        defer { app.finish() }
        try await app.run("INSERT INTO t(name) VALUES ('newest 1'); INSERT INTO t(name) VALUES ('newest 2');")
        #expect(DBFixtures.size(URL(fileURLWithPath: onDevice.path + "-wal")) > 0)

        let local = try folders.pull("x.db")
        // Without its -wal the main file lacks the newest rows: the WAL really matters here.
        let mainOnly = folders.root.child("main-only.db")
        try DBFixtures.copy(local, to: mainOnly)
        #expect(try DBFixtures.count(mainOnly) == 3)

        let summary = try PulledDatabase.fold(local)
        #expect(summary.tableRowCounts == ["t": 5])
        #expect(summary.wasWAL && summary.foldedWAL && !summary.hadJournal)
        #expect(summary.size == Int64(DBFixtures.size(local)))
        #expect(summary.pageCount * summary.pageSize == DBFixtures.size(local))
        for side in ["-wal", "-shm", "-journal"] {
            #expect(!DBFixtures.exists(URL(fileURLWithPath: local.path + side)), "\(side) left beside the copy")
        }
        #expect(try DBFixtures.formatVersions(local) == [1, 1], "the copy is a plain rollback-journal file")
        #expect(try DBFixtures.count(local, where: "name LIKE 'newest%'") == 2)
    }

    @Test func aHotJournalIsRolledBack() async throws {
        let folders = try Folders()
        let onDevice = folders.device.appendingPathComponent("h.db")
        try Shell.sqlite(onDevice, """
            CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
            INSERT INTO t(payload) SELECT zeroblob(500) FROM c;
            """)
        // The app is mid-transaction with a tiny cache, so changed pages already spilled into the
        // main file: only the journal holds the committed state. The pull copies both.
        let app = try LiveSQLite(onDevice)
        try await app.run("PRAGMA cache_size=10; BEGIN; UPDATE t SET payload = randomblob(500);")
        let local = try folders.pull("h.db")
        app.kill()
        #expect(DBFixtures.exists(URL(fileURLWithPath: local.path + "-journal")))
        let mainOnly = folders.root.child("main-only.db")
        try DBFixtures.copy(local, to: mainOnly)
        #expect(try DBFixtures.count(mainOnly, where: "payload = zeroblob(500)") < 3000,
                "the main file alone holds uncommitted pages")

        let summary = try PulledDatabase.fold(local)
        #expect(summary.hadJournal && !summary.wasWAL)
        #expect(summary.tableRowCounts == ["t": 3000])
        #expect(!DBFixtures.exists(URL(fileURLWithPath: local.path + "-journal")))
        #expect(try DBFixtures.count(local, where: "payload = zeroblob(500)") == 3000)
    }

    @Test func aRollbackDatabaseWithoutSideFilesIsLeftAsItIs() throws {
        let folders = try Folders()
        try DBFixtures.makeDatabase(folders.device.appendingPathComponent("plain.db"), rows: 7)
        let local = try folders.pull("plain.db")
        let before = try ContentHash.sha256(fileAt: local)
        let summary = try PulledDatabase.fold(local)
        #expect(summary.tableRowCounts == ["t": 7])
        #expect(!summary.wasWAL && !summary.foldedWAL && !summary.hadJournal)
        #expect(try ContentHash.sha256(fileAt: local) == before)
    }

    @Test func aWALDatabaseWithoutAWALFileBecomesRollback() throws {
        let folders = try Folders()
        try DBFixtures.makeDatabase(folders.device.appendingPathComponent("w.db"), rows: 2, mode: "wal")
        let local = try folders.pull("w.db")
        #expect(try DBFixtures.formatVersions(local) == [2, 2])
        let summary = try PulledDatabase.fold(local)
        #expect(summary.wasWAL && !summary.foldedWAL)
        #expect(try DBFixtures.formatVersions(local) == [1, 1])
        #expect(!DBFixtures.exists(URL(fileURLWithPath: local.path + "-wal")))
        #expect(!DBFixtures.exists(URL(fileURLWithPath: local.path + "-shm")))
    }

    @Test func garbageInTheMiddleIsCorrupt() throws {
        let folders = try Folders()
        let onDevice = folders.device.appendingPathComponent("c.db")
        try DBFixtures.makeLargeDatabase(onDevice, megabytes: 1)
        let local = try folders.pull("c.db")
        // Wipe the b-tree header of a page in the middle (page type 0xff does not exist).
        let pages = UInt64(DBFixtures.size(local) / 4096)
        try DBFixtures.overwrite(local, at: (pages / 2) * 4096, with: 0xff, count: 64)
        let error = expectFlippioError(.corruptDatabase) { try PulledDatabase.fold(local) }
        #expect(error?.context["quickCheck"]?.isEmpty == false)
        #expect(error?.message.contains(local.path) == true)
    }

    @Test func aTruncatedFileIsCorrupt() throws {
        let folders = try Folders()
        let onDevice = folders.device.appendingPathComponent("t.db")
        try DBFixtures.makeLargeDatabase(onDevice, megabytes: 1)
        let local = try folders.pull("t.db")
        try FileManager.default.removeItem(at: local)
        try Data(try Data(contentsOf: onDevice).prefix(DBFixtures.size(onDevice) / 2)).write(to: local)
        expectFlippioError(.corruptDatabase) { try PulledDatabase.fold(local) }
    }

    @Test func anErrorMessageInsteadOfADatabaseIsNotSQLite() throws {
        let folders = try Folders()
        let local = folders.local.appendingPathComponent("app.db")
        try Data("run-as: unknown package: com.example.gone\n".utf8).write(to: local)
        let error = expectFlippioError(.notSQLite) { try PulledDatabase.fold(local) }
        #expect(error?.message.contains("run-as: unknown package: com.example.gone") == true)
    }
}
