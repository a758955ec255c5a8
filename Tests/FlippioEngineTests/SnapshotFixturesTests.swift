import FlippioEngine
import Foundation
import Testing
import TestSupport

// Fixtures shared by the database tests (ConnectionPool, Snapshot, PulledDatabase): databases
// made by the real sqlite3 CLI, and a live sqlite3 process that keeps a database open.

enum DBFixtures {
    static var sqlite3: URL {
        get throws {
            guard let url = Products.systemTool("sqlite3") else { throw ShellError("sqlite3 is not installed") }
            return url
        }
    }

    /// A database with table `t(id INTEGER PRIMARY KEY, name TEXT)` holding `rows` rows, in `mode`.
    @discardableResult
    static func makeDatabase(_ url: URL, rows: Int = 3, mode: String = "delete") throws -> URL {
        try Shell.sqlite(url, """
            PRAGMA journal_mode=\(mode);
            CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < \(rows))
            INSERT INTO t(name) SELECT 'row ' || i FROM c;
            """)
        return url
    }

    /// A database of about `megabytes` MB of 1 KB random blobs, with an index.
    static func makeLargeDatabase(_ url: URL, megabytes: Int) throws {
        try Shell.sqlite(url, """
            CREATE TABLE blobs(id INTEGER PRIMARY KEY, label TEXT, payload BLOB);
            CREATE INDEX blobs_label ON blobs(label);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < \(megabytes * 720))
            INSERT INTO blobs(label, payload) SELECT hex(randomblob(8)), randomblob(1000) FROM c;
            """)
    }

    /// `SELECT count(*) FROM table` through the sqlite3 CLI (another process).
    static func count(_ url: URL, _ table: String = "t", where condition: String = "1") throws -> Int {
        Int(try Shell.sqlite(url, "SELECT count(*) FROM \(table) WHERE \(condition);")
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Header bytes 18 and 19 (1 = rollback journal, 2 = WAL), read by `od` in another process,
    /// so the test process never opens (and closes) a file its pool has open.
    static func formatVersions(_ url: URL) throws -> [Int] {
        let result = try Shell.run(URL(fileURLWithPath: "/usr/bin/od"), ["-An", "-tu1", "-j18", "-N2", url.path])
        return result.out.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
    }

    /// Copies files with `cp` (another process), as a pull copies them off a device.
    static func copy(_ from: URL, to: URL) throws {
        let result = try Shell.run(URL(fileURLWithPath: "/bin/cp"), [from.path, to.path])
        guard result.status == 0 else { throw ShellError("cp failed: \(result.err)") }
    }

    static func exists(_ url: URL) -> Bool { FileManager.default.fileExists(atPath: url.path) }

    static func size(_ url: URL) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue ?? -1
    }

    /// Overwrites `count` bytes at `offset` of a file nobody has open.
    static func overwrite(_ url: URL, at offset: UInt64, with byte: UInt8, count: Int) throws {
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data(repeating: byte, count: count))
    }
}

/// A real `sqlite3` process with its stdin on a pipe: it keeps the database open between
/// statements, so a test can hold a transaction open or leave rows in the WAL.
final class LiveSQLite: @unchecked Sendable {
    private let process = Process()
    private let input = Pipe(), output = Pipe(), errors = Pipe()
    private let lock = NSLock()
    private var received = ""
    private var errorText = ""

    init(_ database: URL) throws {
        process.executableURL = try DBFixtures.sqlite3
        process.arguments = [database.path]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        output.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.received += String(decoding: data, as: UTF8.self) }
        }
        errors.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.errorText += String(decoding: data, as: UTF8.self) }
        }
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Sends `sql` and waits until sqlite3 has run it (it echoes a marker afterwards).
    func run(_ sql: String) async throws {
        let marker = "done-\(UUID().uuidString.prefix(8))"
        input.fileHandleForWriting.write(Data("\(sql)\nSELECT '\(marker)';\n".utf8))
        try await waitUntil("sqlite3 ran: \(sql)") {
            let (out, err) = lock.withLock { (received, errorText) }
            if !err.isEmpty { throw ShellError("sqlite3 failed: \(err)") }
            return out.contains(marker)
        }
    }

    /// Ends the session normally (closing stdin lets sqlite3 close the database and exit).
    func finish() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
        errors.fileHandleForReading.readabilityHandler = nil
    }

    /// Kills the process mid-whatever (a crash: locks vanish, files stay as they are).
    func kill() {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
        errors.fileHandleForReading.readabilityHandler = nil
    }

    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

@Suite("Database fixtures")
struct SnapshotFixturesTests {
    @Test func liveSQLiteKeepsTheDatabaseOpenBetweenStatements() async throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), mode: "wal")
        let live = try LiveSQLite(db)
        try await live.run("INSERT INTO t(name) VALUES ('live');")
        // Still open: the WAL holds the row, not yet checkpointed into the main file.
        #expect(DBFixtures.size(URL(fileURLWithPath: db.path + "-wal")) > 0)
        live.finish()
        #expect(!DBFixtures.exists(URL(fileURLWithPath: db.path + "-wal")))
        #expect(try DBFixtures.count(db) == 4)
    }
}

/// Expects `body` to throw a ``FlippioError`` with `code`, and returns it.
@discardableResult
func expectFlippioError<T>(
    _ code: FlippioError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T
) -> FlippioError? {
    let error = #expect(throws: FlippioError.self, sourceLocation: sourceLocation) { _ = try body() }
    #expect(error?.code == code, "\(error.map { String(describing: $0) } ?? "no error")", sourceLocation: sourceLocation)
    return error
}

/// Async form of ``expectFlippioError(_:sourceLocation:_:)``.
@discardableResult
func expectFlippioError<T>(
    _ code: FlippioError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T
) async -> FlippioError? {
    let error = await #expect(throws: FlippioError.self, sourceLocation: sourceLocation) { _ = try await body() }
    #expect(error?.code == code, "\(error.map { String(describing: $0) } ?? "no error")", sourceLocation: sourceLocation)
    return error
}
