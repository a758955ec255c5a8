@testable import FlippioEngine
import Foundation
import GRDB
import Testing
import TestSupport

@Suite("Snapshotter")
struct SnapshotTests {
    struct Setup {
        let dir: TemporaryDirectory
        let pool = ConnectionPool()
        var snapshotter: Snapshotter
        init(_ method: SnapshotMethod) throws {
            dir = try TemporaryDirectory("flippio-snap")
            snapshotter = Snapshotter(directory: dir.child("snapshots"), method: method)
        }
        func snapshot(_ db: URL, named name: String = "x.db") async throws -> Snapshot {
            try snapshotter.snapshot(of: try await pool.connection(for: db), named: name)
        }
    }

    @Test(arguments: SnapshotMethod.allCases)
    func theHashOfAnUnchangedDatabaseIsStableAndAnEditChangesIt(method: SnapshotMethod) async throws {
        let s = try Setup(method)
        let db = try DBFixtures.makeDatabase(s.dir.child("x.db"), rows: 3)
        let first = try await s.snapshot(db)
        #expect(first.tableRowCounts == ["t": 3])
        #expect(first.size == Int64(DBFixtures.size(first.url)))
        #expect(first.fileHash == (try ContentHash.sha256(fileAt: first.url)))
        #expect(try first.contentHash == ContentHash.sha256(databaseAt: first.url))
        #expect(try await s.snapshot(db).contentHash == first.contentHash, "snapshot twice")

        _ = try Shell.sqlite(db, "SELECT * FROM t;")
        #expect(try await s.snapshot(db).contentHash == first.contentHash, "after another process read it")
        try Shell.run(URL(fileURLWithPath: "/usr/bin/touch"), [db.path])
        #expect(try await s.snapshot(db).contentHash == first.contentHash, "after touch")
        // A write that changes nothing but bumps the original's file change counter (offset 24).
        let counterBefore = try Shell.run(URL(fileURLWithPath: "/usr/bin/od"), ["-An", "-tu1", "-j24", "-N4", db.path]).out
        _ = try Shell.sqlite(db, "PRAGMA user_version = 0; UPDATE t SET name = name;")
        let counterAfter = try Shell.run(URL(fileURLWithPath: "/usr/bin/od"), ["-An", "-tu1", "-j24", "-N4", db.path]).out
        #expect(counterBefore != counterAfter)
        #expect(try await s.snapshot(db).contentHash == first.contentHash, "after a no-op write")

        _ = try Shell.sqlite(db, "UPDATE t SET name = 'edited' WHERE id = 2;")
        let edited = try await s.snapshot(db)
        #expect(try edited.contentHash != first.contentHash)
        #expect(edited.tableRowCounts == ["t": 3])
        _ = try Shell.sqlite(db, "INSERT INTO t(name) VALUES ('four');")
        let grown = try await s.snapshot(db)
        #expect(try grown.contentHash != edited.contentHash)
        #expect(s.snapshotter.rowCountChanges(from: first.tableRowCounts, to: grown.tableRowCounts) == ["t": "3 → 4"])
    }

    @Test(arguments: SnapshotMethod.allCases)
    func aWALDatabaseWithUncheckpointedRowsIsSnapshottedWhole(method: SnapshotMethod) async throws {
        let s = try Setup(method)
        let db = try DBFixtures.makeDatabase(s.dir.child("w.db"), rows: 3, mode: "wal")
        let wal = URL(fileURLWithPath: db.path + "-wal")
        // The user's tool keeps the database open; its newest rows are only in the -wal.
        let user = try LiveSQLite(db)
        defer { user.finish() }
        try await user.run("INSERT INTO t(name) VALUES ('in wal 1'); INSERT INTO t(name) VALUES ('in wal 2');")
        let walSize = DBFixtures.size(wal)
        #expect(walSize > 0)

        let snapshot = try await s.snapshot(db, named: "w.db")
        #expect(snapshot.tableRowCounts == ["t": 5])
        #expect(try DBFixtures.formatVersions(snapshot.url) == [1, 1], "the snapshot is a rollback-journal file")
        let snapshotFiles = try FileManager.default.contentsOfDirectory(atPath: s.snapshotter.directory.path)
        #expect(snapshotFiles == ["w.db"], "no side files, no temporary files")

        // The user's database is untouched: still WAL, the WAL not checkpointed.
        #expect(try DBFixtures.formatVersions(db) == [2, 2])
        #expect(DBFixtures.size(wal) == walSize)
        #expect(try await s.snapshot(db, named: "w.db").contentHash == snapshot.contentHash)

        // Another connection checkpoints the WAL into the main file: same content, same hash.
        _ = try Shell.sqlite(db, "PRAGMA wal_checkpoint(TRUNCATE);")
        #expect(DBFixtures.size(wal) == 0)
        #expect(try await s.snapshot(db, named: "w.db").contentHash == snapshot.contentHash)

        try await user.run("DELETE FROM t WHERE name = 'in wal 1';")
        let edited = try await s.snapshot(db, named: "w.db")
        #expect(try edited.contentHash != snapshot.contentHash)
        #expect(edited.tableRowCounts == ["t": 4])
    }

    /// A push asks for the content hash after the copy (``Snapshotter/defersContentHash``): it
    /// must be the one the copy would have computed, even once the file was renamed or deleted.
    @Test(arguments: ["delete", "wal"])
    func aContentHashComputedAfterTheSnapshotIsTheSame_evenWhenTheFileIsGoneBeforeItIsRead(journalMode: String) async throws {
        var s = try Setup(.backup)
        let db = try DBFixtures.makeDatabase(s.dir.child("x.db"), rows: 300, mode: journalMode)
        let eager = try await s.snapshot(db, named: "eager.db")
        s.snapshotter.defersContentHash = true
        let deferred = try await s.snapshot(db, named: "deferred.db")
        #expect(deferred.fileHash == eager.fileHash)
        let expected = try ContentHash.sha256(databaseAt: deferred.url)
        try FileManager.default.removeItem(at: deferred.url)
        #expect(try deferred.contentHash == expected)
        #expect(try deferred.contentHash == eager.contentHash)
        if journalMode == "delete", case .computing = deferred.contentIdentity {} else if journalMode == "delete" {
            Issue.record("a file copied by pages hashes its content afterwards")
        }
    }

    @Test(arguments: SnapshotMethod.allCases)
    func aSnapshotDuringAnotherProcesssWriteTransactionHoldsTheCommittedState(method: SnapshotMethod) async throws {
        let s = try Setup(method)
        let db = try DBFixtures.makeDatabase(s.dir.child("x.db"), rows: 3)
        let user = try LiveSQLite(db)
        defer { user.finish() }
        try await user.run("BEGIN IMMEDIATE; INSERT INTO t(name) VALUES ('not yet');")
        #expect(try await s.pool.isWriterActive(db))
        #expect(try await s.snapshot(db).tableRowCounts == ["t": 3])
        try await user.run("COMMIT;")
        #expect(try await s.snapshot(db).tableRowCounts == ["t": 4])
    }

    @Test(arguments: SnapshotMethod.allCases)
    func theUsersJournalModeIsUnchanged(method: SnapshotMethod) async throws {
        let s = try Setup(method)
        let rollback = try DBFixtures.makeDatabase(s.dir.child("r.db"), rows: 2)
        let wal = try DBFixtures.makeDatabase(s.dir.child("w.db"), rows: 2, mode: "wal")
        let rollbackHash = try ContentHash.sha256(fileAt: rollback)
        let walHash = try ContentHash.sha256(fileAt: wal)
        _ = try await s.snapshot(rollback, named: "r.db")
        _ = try await s.snapshot(wal, named: "w.db")
        await s.pool.closeAll()

        #expect(try DBFixtures.formatVersions(rollback) == [1, 1])
        #expect(try Shell.sqlite(rollback, "PRAGMA journal_mode;").hasPrefix("delete"))
        #expect(!DBFixtures.exists(URL(fileURLWithPath: rollback.path + "-wal")))
        #expect(!DBFixtures.exists(URL(fileURLWithPath: rollback.path + "-journal")))
        #expect(try DBFixtures.formatVersions(wal) == [2, 2])
        #expect(try Shell.sqlite(wal, "PRAGMA journal_mode;").hasPrefix("wal"))
        // The pool is closed: reading the files here can drop no lock.
        #expect(try ContentHash.sha256(fileAt: rollback) == rollbackHash)
        #expect(try ContentHash.sha256(fileAt: wal) == walHash)
    }

    @Test(arguments: SnapshotMethod.allCases)
    func aCorruptDatabaseIsNotSnapshotted(method: SnapshotMethod) async throws {
        let s = try Setup(method)
        let db = s.dir.child("c.db")
        try DBFixtures.makeLargeDatabase(db, megabytes: 1)
        let pages = UInt64(DBFixtures.size(db) / 4096)
        for page in [pages / 3, pages / 2, pages - 2] {   // table and index pages
            try DBFixtures.overwrite(db, at: page * 4096, with: 0xff, count: 64)
        }
        await expectFlippioError(.corruptDatabase) { try await s.snapshot(db, named: "c.db") }
        #expect(!DBFixtures.exists(s.snapshotter.directory.appendingPathComponent("c.db")))
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: s.snapshotter.directory.path)) ?? []
        #expect(leftovers.isEmpty)
    }

    @Test func aCorruptIndexIsCaughtByBothMethods() async throws {
        for method in SnapshotMethod.allCases {
            let s = try Setup(method)
            let db = s.dir.child("i.db")
            try DBFixtures.makeLargeDatabase(db, megabytes: 1)
            // Damage the root page of the index: cells and pointers, not the table's rows.
            let rootpage = Int(try Shell.sqlite(db, "SELECT rootpage FROM sqlite_schema WHERE name = 'blobs_label';")
                .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            try DBFixtures.overwrite(db, at: UInt64(rootpage - 1) * 4096 + 8, with: 0x7f, count: 200)
            await expectFlippioError(.corruptDatabase) { try await s.snapshot(db, named: "i.db") }
        }
    }

    @Test func aNonSQLiteFileIsNotSQLite() async throws {
        let s = try Setup(.backup)
        let text = s.dir.child("notes.db")
        try Data("This is a text file\nwith two lines\n".utf8).write(to: text)
        await expectFlippioError(.notSQLite) { try await s.snapshot(text) }
    }

    @Test func aCopyTruncatedInPlaceUnderAWarmConnectionIsNotSQLiteNeverAnEmptyDatabase() async throws {
        let s = try Setup(.backup)
        let db = try DBFixtures.makeDatabase(s.dir.child("x.db"), rows: 3)
        _ = try await s.snapshot(db)   // the connection is warm, its page cache filled
        // A script rewriting the file in place: open(O_TRUNC) has run, its write has not yet.
        #expect(truncate(db.path, 0) == 0)
        await expectFlippioError(.notSQLite) { try await s.snapshot(db) }
    }

    @Test(arguments: SnapshotMethod.allCases)
    func aCopyRewrittenWhileItIsCopiedGivesNoSnapshotButARetry(method: SnapshotMethod) async throws {
        var s = try Setup(method)
        let db = try DBFixtures.makeDatabase(s.dir.child("x.db"), rows: 3)
        let bytes = try Data(contentsOf: db)
        // Rewritten in place with its own bytes: only `stat` can tell, and it must.
        s.snapshotter.afterCopyForTesting = { @Sendable in
            _ = truncate(db.path, 0)
            try? bytes.write(to: db)
        }
        await expectFlippioError(.databaseBusy) { try await s.snapshot(db) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.dir.child("snapshots").path).isEmpty,
                "nothing is left in the snapshot folder")

        s.snapshotter.afterCopyForTesting = nil
        let again = try await s.snapshot(db)
        #expect(again.tableRowCounts == ["t": 3], "once the file is quiet, the next try succeeds")
    }

    @Test func rowCountChangesDescribeEveryDifference() {
        let changes = Snapshotter.rowCountChanges(
            from: ["users": 3, "same": 1, "gone": 5],
            to: ["users": 4, "same": 1, "added": 2])
        #expect(changes == ["users": "3 → 4", "gone": "5 → dropped", "added": "new → 2"])
    }
}
