@testable import FlippioEngine
import Foundation
import GRDB
import Testing
import TestSupport

@Suite("ConnectionPool")
struct ConnectionPoolTests {
    @Test func warmOpensEveryDatabaseOnceAndHandsOutTheSameConnection() async throws {
        let dir = try TemporaryDirectory()
        let dbs = try (0..<3).map { try DBFixtures.makeDatabase(dir.child("d\($0).db"), rows: $0 + 1) }
        let pool = ConnectionPool()
        let failures = await pool.warm(dbs)
        #expect(failures.isEmpty)
        #expect(await pool.counters.opens == 3)
        let first = try await pool.connection(for: dbs[1])
        let second = try await pool.connection(for: dbs[1])
        #expect(first === second)
        #expect(await pool.counters.opens == 3, "a warm connection is not reopened")
        #expect(try await first.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 2)
        await pool.closeAll()
        #expect(await pool.openDatabases.isEmpty)
    }

    @Test func warmIsBoundedByCapacityAndReportsFailures() async throws {
        let dir = try TemporaryDirectory()
        let text = dir.child("notes.db")
        try Data("hello, not a database\n".utf8).write(to: text)
        let dbs = try (0..<4).map { try DBFixtures.makeDatabase(dir.child("d\($0).db")) }
        let pool = ConnectionPool(capacity: 3)
        let failures = await pool.warm([text] + dbs)
        #expect(failures[text]?.code == .notSQLite)
        #expect(await pool.counters.opens == 2, "only the first 3 are tried, one fails")
    }

    @Test func reopensAfterAnAtomicRenameSaveAndSeesTheNewContent() async throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), rows: 1)
        let pool = ConnectionPool()
        // Only the pool holds the old connection, so the pool can close it on reopen.
        do {
            let old = try await pool.connection(for: db)
            #expect(try await old.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 1)
        }

        #expect(Self.openDescriptors(to: db.path) == 1, "SQLite's descriptor on the file")

        // An editor saves by writing a new file and renaming it over the old one.
        let temp = try DBFixtures.makeDatabase(dir.child(".x.db.save-tmp"), rows: 5)
        #expect(rename(temp.path, db.path) == 0)

        let new = try await pool.connection(for: db)
        #expect(await pool.counters.reopens == 1)
        #expect(await pool.counters.opens == 2)
        #expect(try await new.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 5)
        _ = try await pool.connection(for: db)
        #expect(await pool.counters.reopens == 1)
        // The replaced file's connection is closed: no descriptor on the unlinked inode remains.
        #expect(Self.openDescriptors(to: db.path + " (deleted)") == 0)
    }

    @Test func byPath_isTheSameConnectionAsByURL_andStillReopensAfterARenameSave() async throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), rows: 1)
        let path = db.standardizedFileURL.path
        let pool = ConnectionPool()
        _ = await pool.warm([db])
        let byURL = try await pool.connection(for: db)
        #expect(try await pool.connection(atPath: path) === byURL)
        #expect(await pool.counters.opens == 1)

        let temp = try DBFixtures.makeDatabase(dir.child(".x.db.save-tmp"), rows: 3)
        #expect(rename(temp.path, db.path) == 0)
        let reopened = try await pool.connection(atPath: path)
        #expect(reopened !== byURL)
        #expect(await pool.counters.reopens == 1)
        #expect(try await reopened.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 3)
        #expect(try await pool.connection(for: db) === reopened)

        #expect(unlink(db.path) == 0)
        await #expect(throws: FlippioError.self) { try await pool.connection(atPath: path) }
        #expect(await pool.openDatabases.isEmpty, "a missing file's connection is dropped")
    }

    /// How many of this process's file descriptors point at `target` (as /proc/self/fd shows it).
    static func openDescriptors(to target: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == target }.count
    }

    @Test func evictsTheLeastRecentlyUsedBeyondCapacity() async throws {
        let dir = try TemporaryDirectory()
        let a = try DBFixtures.makeDatabase(dir.child("a.db"))
        let b = try DBFixtures.makeDatabase(dir.child("b.db"))
        let c = try DBFixtures.makeDatabase(dir.child("c.db"))
        let pool = ConnectionPool(capacity: 2)
        _ = try await pool.connection(for: a)
        _ = try await pool.connection(for: b)
        _ = try await pool.connection(for: a)   // a is now more recent than b
        _ = try await pool.connection(for: c)   // evicts b
        #expect(await pool.counters.evictions == 1)
        #expect(await pool.openDatabases.map(\.lastPathComponent) == ["c.db", "a.db"])
        _ = try await pool.connection(for: b)   // reopened, evicts a
        #expect(await pool.counters.opens == 4)
        #expect(await pool.openDatabases.map(\.lastPathComponent) == ["b.db", "c.db"])
    }

    @Test func aMissingDatabaseIsReportedAndItsConnectionDropped() async throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"))
        let pool = ConnectionPool()
        _ = try await pool.connection(for: db)
        try FileManager.default.removeItem(at: db)
        await expectFlippioError(.databaseMissing) { try await pool.connection(for: db) }
        await expectFlippioError(.databaseMissing) { try await pool.isWriterActive(db) }
        #expect(await pool.openDatabases.isEmpty)
    }

    // MARK: - Writer detection

    @Test(arguments: ["delete", "wal"])
    func isWriterActiveWhileAnotherProcessHoldsAWriteTransaction(mode: String) async throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), rows: 3, mode: mode)
        let pool = ConnectionPool()
        await pool.warm([db])
        let user = try LiveSQLite(db)
        defer { user.finish() }

        try await user.run("SELECT count(*) FROM t;")
        #expect(try await pool.isWriterActive(db) == false, "an open, reading connection is not a writer")

        try await user.run("BEGIN IMMEDIATE; INSERT INTO t(name) VALUES ('uncommitted');")
        #expect(try await pool.isWriterActive(db))
        // Readers are not blocked by a RESERVED lock or the WAL write lock, and see only committed rows.
        let queue = try await pool.connection(for: db)
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 3)

        try await user.run("COMMIT;")
        #expect(try await pool.isWriterActive(db) == false)
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 4)
    }

    @Test func aRolledBackTransactionIsNoLongerAWriter() async throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"))
        let pool = ConnectionPool()
        let user = try LiveSQLite(db)
        defer { user.finish() }
        try await user.run("BEGIN; UPDATE t SET name = 'changing';")
        #expect(try await pool.isWriterActive(db))
        try await user.run("ROLLBACK;")
        #expect(try await pool.isWriterActive(db) == false)
    }

    @Test func parsesTheKernelLockTable() throws {
        // Observed on this machine for `sqlite3` in BEGIN IMMEDIATE (rollback, then WAL).
        let text = """
            1: POSIX  ADVISORY  WRITE 23334 fe:00:16220442 1073741825 1073741825
            2: POSIX  ADVISORY  READ 23334 fe:00:16220442 1073741826 1073742335
            3: -> POSIX  ADVISORY  WRITE 999 fe:00:16220442 1073741824 1073741824
            4: POSIX  ADVISORY  WRITE 23383 fe:00:16221913 120 120
            5: OFDLCK ADVISORY  READ  -1 00:0f:41 128 EOF
            6: FLOCK  ADVISORY  WRITE 77 fe:00:123 0 EOF
            """
        let locks = WriterLockProbe.parse(text)
        #expect(locks.count == 4, "the blocked request (->) and the flock are skipped")
        #expect(locks.contains(.init(isWrite: true, pid: 23383, major: 0xfe, minor: 0, inode: 16221913, start: 120, end: 120)))
        #expect(locks.contains { $0.inode == 41 && $0.end == .max && !$0.isWrite && $0.minor == 0x0f })

        let reserved = locks.filter { $0.inode == 16220442 }
        #expect(reserved.count == 2)
        #expect(reserved.contains { $0.covers(WriterLockProbe.reservedByte) })
    }
}

extension ConnectionPoolTests {
    @Test func aHotJournalInTheUsersDatabaseIsReportedNotRolledBack() async throws {
        let dir = try TemporaryDirectory()
        let live = dir.child("live.db")
        try Shell.sqlite(live, """
            CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
            INSERT INTO t(payload) SELECT zeroblob(500) FROM c;
            """)
        // An editor crashed mid-transaction: the copy taken then has a hot journal.
        let editor = try LiveSQLite(live)
        try await editor.run("PRAGMA cache_size=10; BEGIN; UPDATE t SET payload = randomblob(500);")
        let db = dir.child("x.db")
        try DBFixtures.copy(live, to: db)
        try DBFixtures.copy(URL(fileURLWithPath: live.path + "-journal"), to: URL(fileURLWithPath: db.path + "-journal"))
        editor.kill()
        let journalHash = try ContentHash.sha256(fileAt: URL(fileURLWithPath: db.path + "-journal"))
        let dbHash = try ContentHash.sha256(fileAt: db)

        let pool = ConnectionPool()
        let error = await expectFlippioError(.databaseBusy) {
            let queue = try await pool.connection(for: db)
            return try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") }
        }
        #expect(error?.message.contains("hot journal") == true)
        await pool.closeAll()
        // Read-only: the agent leaves the roll-back to the user's own tool.
        #expect(try ContentHash.sha256(fileAt: URL(fileURLWithPath: db.path + "-journal")) == journalHash)
        #expect(try ContentHash.sha256(fileAt: db) == dbHash)
    }

    @Test func aConnectionEvictedWhileInUseStaysUsable() async throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), rows: 2)
        let pool = ConnectionPool(capacity: 1)
        let queue = try await pool.connection(for: db)
        await pool.close(db)
        _ = try await pool.connection(for: DBFixtures.makeDatabase(dir.child("other.db")))
        // A snapshot that got the connection before it was dropped still completes.
        let snapshot = try Snapshotter(directory: dir.child("snapshots")).snapshot(of: queue, named: "x.db")
        #expect(snapshot.tableRowCounts == ["t": 2])
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 2)
    }
}
