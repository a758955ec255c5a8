import Foundation
import GRDB

/// Connections for the merge: database files attached to one SQLite connection (internal).
///
/// Every file is opened by SQLite itself, never by `open()`/`close()` here: SQLite shares its
/// POSIX locks between the connections of one process through its per-inode table
/// (`unixInodeInfo`), so attaching a file that the agent's pool also holds open does not drop the
/// pool's locks. A plain `FileHandle` opened and closed on the same file would.
enum MergeConnection {
    /// The configuration of every merge connection: foreign keys not enforced while applying
    /// (a changeset is applied row by row, in an order that can break a constraint half-way;
    /// `PRAGMA foreign_key_check` judges the end result) and the given busy timeout.
    static func configuration(busyTimeout: TimeInterval = 5) -> Configuration {
        var configuration = Configuration()
        configuration.foreignKeysEnabled = false
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "flippio.merge"
        return configuration
    }

    /// Runs `body` on a private in-memory connection with each file attached under its schema name.
    ///
    /// - throws: errors of SQLite as ``FlippioError`` (``FlippioError/Code/notSQLite`` ...), and
    ///   what `body` throws.
    static func withAttached<T>(_ files: KeyValuePairs<String, URL>, _ body: (Database) throws -> T) throws -> T {
        for (_, url) in files { try requireDatabase(url) }
        let queue: DatabaseQueue
        do { queue = try DatabaseQueue(configuration: configuration()) } catch {
            throw FlippioError.database(error, path: ":memory:", action: "open")
        }
        defer { try? queue.close() }
        var current = files.first?.value.path ?? ""
        do {
            return try queue.writeWithoutTransaction { db in
                for (schema, url) in files {
                    current = url.path
                    try attach(db, url, as: schema)
                }
                current = files.map(\.value.path).joined(separator: " and ")
                return try body(db)
            }
        } catch {
            throw FlippioError.database(error, path: current, action: "compare")
        }
    }

    static func attach(_ db: Database, _ url: URL, as schema: String) throws {
        try db.execute(sql: "ATTACH DATABASE ? AS \(quote(schema))", arguments: [url.path])
        // ATTACH is lazy: read the schema now, so a non-database fails here, named.
        _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM \(quote(schema)).sqlite_schema")
    }

    /// Throws ``FlippioError/Code/databaseMissing`` or ``FlippioError/Code/notSQLite`` unless `url`
    /// is an SQLite file (SQLite would create a missing file and call an empty one a database).
    static func requireDatabase(_ url: URL) throws {
        _ = try SQLiteHeader.read(fileAt: url)
    }
}
