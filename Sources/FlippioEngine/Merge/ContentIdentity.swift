import Crypto
import Foundation
import GRDB

/// Whether two database files hold the same content, whatever SQLite rewrote in their headers.
///
/// SQLite changes header fields without a change of data: bytes 18–19 when a connection opens
/// the file in WAL mode, the file change counter (24–27) on every write transaction, and the
/// version-valid-for number and library version (92–99) with it. An app that merely opens its
/// database must not look like an edit, so "changed" is judged by content:
///
/// 1. fast path: equal sizes and equal pages with those header bytes masked ⇒ same content;
/// 2. otherwise, through SQLite: the same `sqlite_schema` rows (root pages aside), the same
///    `user_version`, no row changes in the changeset between them, the same rows in key-less
///    tables. A VACUUM (every page moved, no row changed) is the same content.
///
/// For example:
///
/// ```swift
/// if try ContentIdentity.sameContent(base, pulled) { /* the app only reopened it */ }
/// let hash = try ContentIdentity.hash(ofDatabaseAt: snapshot)
/// ```
///
/// - Important: the files are read with plain file handles: pass snapshots, pulled files and
///   base copies, never the live file the agent's pool holds open (closing a second descriptor
///   drops SQLite's POSIX locks for the whole process).
public enum ContentIdentity {
    /// Header byte ranges SQLite rewrites without a change of data (``ContentHash/volatileHeaderRanges``).
    public static var volatileHeaderRanges: [Range<Int>] { ContentHash.volatileHeaderRanges }

    /// Hex SHA-256 of the file with ``volatileHeaderRanges`` zeroed: equal for the same pages
    /// whatever journal mode, change counter or SQLite version last wrote the file.
    ///
    /// The main file only: fold a `-wal` into it first (a snapshot or a pulled file is folded).
    ///
    /// - throws: ``FlippioError/Code/databaseMissing``, ``FlippioError/Code/notSQLite``.
    public static func hash(ofDatabaseAt url: URL) throws -> String {
        _ = try SQLiteHeader.read(fileAt: url)
        return try ContentHash.sha256(databaseAt: url)
    }

    /// Whether the two files have the same size and the same bytes, header fields in
    /// ``volatileHeaderRanges`` aside (the fast path: true ⇒ same content; false ⇒ ask
    /// ``sameContent(_:_:)``).
    public static func samePages(_ a: URL, _ b: URL) throws -> Bool {
        // Committed pages in a -wal beside a file are content the main file does not show yet.
        guard !hasWAL(a), !hasWAL(b) else { return false }
        let sizeA = try fileSize(a), sizeB = try fileSize(b)
        guard sizeA == sizeB else { return false }
        let ha = try open(a), hb = try open(b)
        defer { try? ha.close(); try? hb.close() }
        var first = true
        while true {
            let ca = try ha.read(upToCount: 1 << 20) ?? Data()
            let cb = try hb.read(upToCount: 1 << 20) ?? Data()
            if ca.isEmpty && cb.isEmpty { return true }
            if first ? masked(ca) != masked(cb) : ca != cb { return false }
            first = false
        }
    }

    /// Whether `a` and `b` hold the same schema and the same rows.
    ///
    /// - throws: ``FlippioError/Code/notSQLite``, ``FlippioError/Code/databaseMissing``,
    ///   ``FlippioError/Code/corruptDatabase``.
    public static func sameContent(_ a: URL, _ b: URL) throws -> Bool {
        if try samePages(a, b) { return true }
        return try MergeConnection.withAttached(["base": a, "other": b]) { db in
            let layoutA = try SchemaLayout.read(db, schema: "base")
            let layoutB = try SchemaLayout.read(db, schema: "other")
            guard layoutB.differences(from: layoutA).isEmpty else { return false }
            let changes = try SessionExtension.diff(db, from: "base", to: "other", tables: layoutA.sessionTables)
            guard changes.isEmpty else { return false }
            for table in layoutA.tables where !table.isKeyed && table.policy != .derived {
                guard try table.sameRows(db, "base", "other") else { return false }
            }
            return true
        }
    }

    // MARK: - Helpers

    /// Whether a non-empty `-wal` file lies beside `url`.
    static func hasWAL(_ url: URL) -> Bool {
        let attributes = try? FileManager.default.attributesOfItem(atPath: url.path + "-wal")
        return ((attributes?[.size] as? NSNumber)?.int64Value ?? 0) > 0
    }

    static func masked(_ chunk: Data) -> Data {
        var bytes = chunk
        for range in volatileHeaderRanges where range.upperBound <= bytes.count {
            bytes.replaceSubrange(range, with: repeatElement(0, count: range.count))
        }
        return bytes
    }

    static func fileSize(_ url: URL) throws -> Int64 {
        do {
            return ((try FileManager.default.attributesOfItem(atPath: url.path)[.size]) as? NSNumber)?.int64Value ?? 0
        } catch {
            throw FlippioError(.databaseMissing, "\(url.path) does not exist.",
                               remedy: "Pull the database again.", context: ["path": url.path])
        }
    }

    static func open(_ url: URL) throws -> FileHandle {
        do { return try FileHandle(forReadingFrom: url) } catch {
            throw FlippioError(.databaseMissing, "Could not read \(url.path): \(error.localizedDescription).",
                               remedy: "Pull the database again.", context: ["path": url.path])
        }
    }
}
