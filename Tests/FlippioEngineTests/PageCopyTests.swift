@testable import FlippioEngine
import Foundation
import GRDB
import Testing
import TestSupport

/// The raw page copy a snapshot of a rollback-journal database is made with: the same bytes as
/// SQLite's backup API, under the connection's own lock, or no copy at all.
@Suite("PageCopy")
struct PageCopyTests {
    /// Databases written by the real `sqlite3`, one per shape the copy must get right.
    static let shapes: [(name: String, sql: String)] = [
        ("plain", "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT); CREATE INDEX i ON t(name);"
            + "INSERT INTO t(name) SELECT hex(randomblob(40)) FROM generate_series(1, 2000);"),
        ("page size 512", "PRAGMA page_size = 512; CREATE TABLE t(a); INSERT INTO t SELECT randomblob(300) FROM generate_series(1, 300);"),
        ("page size 65536", "PRAGMA page_size = 65536; CREATE TABLE t(a); INSERT INTO t SELECT randomblob(3000) FROM generate_series(1, 100);"),
        ("free pages", "CREATE TABLE t(a); INSERT INTO t SELECT randomblob(2000) FROM generate_series(1, 500); DELETE FROM t WHERE rowid % 3 = 0;"),
        ("auto_vacuum incremental", "PRAGMA auto_vacuum = INCREMENTAL; CREATE TABLE t(a); CREATE TABLE u(b);"
            + "INSERT INTO t SELECT randomblob(900) FROM generate_series(1, 400); DROP TABLE u; DELETE FROM t WHERE rowid < 100;"),
        ("many commits and schema changes", "CREATE TABLE t(a); CREATE TABLE u(b); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"
            + "ALTER TABLE t ADD COLUMN c; CREATE INDEX j ON u(b); DROP INDEX j; PRAGMA user_version = 7; INSERT INTO u VALUES (3);"),
        ("journal_mode persist", "PRAGMA journal_mode = PERSIST; CREATE TABLE t(a); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"),
    ]

    @Test(arguments: shapes.map(\.name))
    func aRollbackJournalDatabaseIsCopiedToTheBytesTheBackupAPIWrites(shape: String) throws {
        let dir = try TemporaryDirectory("flippio-pagecopy")
        let db = dir.child("x.db")
        try Shell.sqlite(db, Self.shapes.first { $0.name == shape }!.sql)
        let connection = try DatabaseQueue(path: db.path)

        let copied = dir.child("copied.db")
        let copy = try #require(try PageCopy.copy(connection, to: copied))
        let backedUp = try Self.backup(connection, to: dir.child("backed-up.db"))

        #expect(copy.size == Int64(DBFixtures.size(db)))
        #expect(copy.fileHash == (try ContentHash.sha256(fileAt: backedUp)))
        #expect(copy.contentHash == (try ContentHash.sha256(databaseAt: backedUp)))
        #expect(try Data(contentsOf: copied) == (try Data(contentsOf: backedUp)))
        #expect(try Data(contentsOf: copied) != (try Data(contentsOf: db)), "the header is the copy's own, not the original's")
        #expect(try Shell.sqlite(copied, "PRAGMA quick_check;") == "ok\n")
    }

    @Test func aHeaderFromBeforeTheInHeaderPageCountIsCopiedByTheFileSize() throws {
        // SQLite before 3.7.0 did not keep the page count at offset 28: a version-valid-for number
        // (92) that is not the change counter (24) tells a reader to count pages by the file's size.
        let dir = try TemporaryDirectory("flippio-pagecopy")
        let db = dir.child("old.db")
        try Shell.sqlite(db, "CREATE TABLE t(a); INSERT INTO t SELECT randomblob(500) FROM generate_series(1, 50);")
        try DBFixtures.overwrite(db, at: 28, with: 0, count: 4)
        try DBFixtures.overwrite(db, at: 92, with: 0, count: 4)
        let connection = try DatabaseQueue(path: db.path)

        let copied = dir.child("copied.db")
        #expect(try PageCopy.copy(connection, to: copied)?.size == Int64(DBFixtures.size(db)))
        #expect(try Data(contentsOf: copied) == (try Data(contentsOf: Self.backup(connection, to: dir.child("backed-up.db")))))
    }

    @Test func aWALDatabaseOrAFileLongerThanItsPagesIsLeftToTheBackupAPI() throws {
        let dir = try TemporaryDirectory("flippio-pagecopy")
        let wal = dir.child("wal.db")
        try Shell.sqlite(wal, "PRAGMA journal_mode = WAL; CREATE TABLE t(a); INSERT INTO t VALUES (1);")
        #expect(try PageCopy.copy(try DatabaseQueue(path: wal.path), to: dir.child("a.db")) == nil)
        #expect(!DBFixtures.exists(dir.child("a.db")), "nothing created")

        let long = dir.child("long.db")
        try Shell.sqlite(long, "CREATE TABLE t(a); INSERT INTO t VALUES (1);")
        let handle = try FileHandle(forWritingTo: long)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(repeating: 0, count: 4096))
        try handle.close()
        #expect(try PageCopy.copy(try DatabaseQueue(path: long.path), to: dir.child("b.db")) == nil)
        #expect(!DBFixtures.exists(dir.child("b.db")))
    }

    @Test func copyingKeepsEveryReadLockTheProcessHolds() throws {
        // POSIX locks belong to the process: closing any descriptor of the file drops all of them,
        // SQLite's too. The copy reads through SQLite's own handle, so a read transaction another
        // connection of this process holds still keeps a writer out afterwards.
        let dir = try TemporaryDirectory("flippio-pagecopy")
        let db = dir.child("x.db")
        try Shell.sqlite(db, "CREATE TABLE t(a); INSERT INTO t VALUES (1);")
        let reader = try DatabaseQueue(path: db.path)
        let copier = try DatabaseQueue(path: db.path)
        let sqlite3 = try #require(Products.systemTool("sqlite3"))

        try reader.read { db2 in
            _ = try Int.fetchOne(db2, sql: "SELECT count(*) FROM t")
            #expect(try PageCopy.copy(copier, to: dir.child("copy.db")) != nil)
            let write = try Shell.run(sqlite3, [db.path, "INSERT INTO t VALUES (2);"])
            #expect(write.status != 0 && write.err.contains("locked"), "the writer is kept out: \(write.err)")
        }
        #expect(try Shell.sqlite(db, "INSERT INTO t VALUES (2); SELECT count(*) FROM t;") == "2\n", "and gets in once the reader ends")
    }

    @Test func theSnapshotOfADatabaseIsTheSameWhicheverWayItWasCopied() async throws {
        // A database leaving WAL mode is copied by the backup API before and by pages after: an
        // unchanged database keeps its content identity across the switch. (Not its file hash:
        // leaving WAL mode is one more commit to the copy, so its change counter differs.)
        let dir = try TemporaryDirectory("flippio-pagecopy")
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), rows: 30, mode: "wal")
        let snapshotter = Snapshotter(directory: dir.child("snapshots"))
        let inWAL = try snapshotter.snapshot(of: try DatabaseQueue(path: db.path), named: "a.db")
        try Shell.sqlite(db, "PRAGMA journal_mode = DELETE;")
        let connection = try DatabaseQueue(path: db.path)
        #expect(try PageCopy.copy(connection, to: dir.child("probe.db")) != nil, "now copied by pages")
        let inDelete = try snapshotter.snapshot(of: connection, named: "b.db")
        #expect(try inDelete.contentHash == inWAL.contentHash)
    }

    @Test(arguments: ["UPDATE t SET b = randomblob(900) WHERE rowid IN (3, 250)",
                      "INSERT INTO t SELECT randomblob(900) FROM generate_series(1, 300)",
                      "DELETE FROM t WHERE rowid > 100"])
    func theComparisonMadeWhileCopyingIsThePageDeltaOfTheCopy(edit: String) throws {
        let dir = try TemporaryDirectory("flippio-pagecopy")
        let db = dir.child("x.db")
        try Shell.sqlite(db, "PRAGMA auto_vacuum = FULL; CREATE TABLE t(b); INSERT INTO t SELECT randomblob(900) FROM generate_series(1, 400);")
        let base = dir.child("base.db")
        _ = try PageCopy.copy(try DatabaseQueue(path: db.path), to: base)
        try Shell.sqlite(db, edit)

        let copied = dir.child("copied.db")
        let copy = try #require(try PageCopy.copy(try DatabaseQueue(path: db.path), to: copied, comparingWith: base))
        let comparison = try #require(copy.comparison)
        #expect(!comparison.changedPages.isEmpty)
        #expect(PageDelta(comparison, targetSize: copy.size) == (try PageDelta.between(base: base, snapshot: copied)))
    }

    @Test func aBaseOfAnotherPageSizeIsNotCompared() throws {
        let dir = try TemporaryDirectory("flippio-pagecopy")
        let db = dir.child("x.db"), base = dir.child("base.db")
        try Shell.sqlite(db, "CREATE TABLE t(b); INSERT INTO t VALUES (1);")
        try Shell.sqlite(base, "PRAGMA page_size = 1024; CREATE TABLE t(b); INSERT INTO t VALUES (1);")
        let copy = try #require(try PageCopy.copy(try DatabaseQueue(path: db.path), to: dir.child("c.db"), comparingWith: base))
        #expect(copy.comparison == nil)
    }

    /// The backup API's copy into a new file, as the snapshotter made it before pages were copied.
    static func backup(_ connection: DatabaseQueue, to url: URL) throws -> URL {
        let destination = try DatabaseQueue(path: url.path)
        try connection.backup(to: destination)
        try destination.close()
        return url
    }
}
