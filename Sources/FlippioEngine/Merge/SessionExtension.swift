import CSQLiteSession
import Foundation
import GRDB

/// The session-extension calls the merge needs, on a GRDB connection (internal).
///
/// Every function runs on the connection's own thread (inside a GRDB `read`/`write` closure).
enum SessionExtension {
    /// The changeset that turns `from.table` into `to.table` for each of `tables`
    /// (`sqlite3session_diff`); tables need a PRIMARY KEY, and the same columns in both schemas.
    static func diff(_ db: Database, from: String, to: String, tables: [String]) throws -> Data {
        guard !tables.isEmpty else { return Data() }
        let connection = try connection(of: db)
        var session: OpaquePointer?
        try check(fl_session_create(connection, to, &session), db, "create a session on \(to)")
        defer { fl_session_delete(session) }
        for table in tables {
            try check(fl_session_attach(session, table), db, "attach \(table) to a session")
            var message: UnsafeMutablePointer<CChar>?
            let rc = fl_session_diff(session, from, table, &message)
            if rc != FL_SQLITE_OK {
                let text = message.map { String(cString: $0) } ?? String(cString: fl_errmsg(connection))
                fl_free(message)
                throw DatabaseError(resultCode: ResultCode(rawValue: rc),
                                    message: "sqlite3session_diff(\(from) → \(to), \(table)): \(text)")
            }
        }
        var size: Int32 = 0
        var buffer: UnsafeMutableRawPointer?
        try check(fl_session_changeset(session, &size, &buffer), db, "build a changeset")
        defer { fl_free(buffer) }
        guard let buffer, size > 0 else { return Data() }
        return Data(bytes: buffer, count: Int(size))
    }

    /// Calls `body` for each change of `changeset`, in order (`sqlite3changeset_start` / `_next`).
    static func forEachChange(in changeset: Data, _ body: (ChangeReader) throws -> Void) throws {
        guard !changeset.isEmpty else { return }
        var bytes = changeset
        try bytes.withUnsafeMutableBytes { raw in
            var iterator: OpaquePointer?
            var rc = fl_changeset_start(&iterator, Int32(raw.count), raw.baseAddress)
            guard rc == FL_SQLITE_OK, let iterator else {
                throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: "sqlite3changeset_start failed")
            }
            var failure: (any Error)?
            while failure == nil {
                rc = fl_changeset_next(iterator)
                guard rc == FL_SQLITE_ROW else { break }
                do { try body(ChangeReader(iterator: iterator)) } catch { failure = error }
            }
            let finalize = fl_changeset_finalize(iterator)
            if let failure { throw failure }
            if rc != FL_SQLITE_DONE || finalize != FL_SQLITE_OK {
                throw DatabaseError(resultCode: ResultCode(rawValue: rc == FL_SQLITE_DONE ? finalize : rc),
                                    message: "the changeset is malformed")
            }
        }
    }

    /// What a conflict handler decides (`SQLITE_CHANGESET_OMIT`, `_REPLACE`, `_ABORT`).
    enum Resolution: Int32 {
        case omit = 0, replace = 1, abort = 2
    }

    /// The conflict kinds of `sqlite3changeset_apply_v2` (`SQLITE_CHANGESET_DATA` ...).
    enum ConflictKind: Int32 {
        case data = 1, notFound = 2, conflict = 3, constraint = 4, foreignKey = 5
    }

    private final class HandlerBox {
        let handler: (ConflictKind, ChangeReader) -> Resolution
        init(_ handler: @escaping (ConflictKind, ChangeReader) -> Resolution) { self.handler = handler }
    }

    /// Applies `changeset` to the `main` schema of `db` (`sqlite3changeset_apply_v2`, every table).
    ///
    /// `handler` decides each conflict; returning `.abort` rolls the whole changeset back and
    /// throws `SQLITE_ABORT`.
    static func apply(_ db: Database, _ changeset: Data,
                      handler: @escaping (ConflictKind, ChangeReader) -> Resolution) throws {
        guard !changeset.isEmpty else { return }
        let connection = try connection(of: db)
        let box = HandlerBox(handler)
        let context = Unmanaged.passRetained(box)
        defer { context.release() }
        let rc = changeset.withUnsafeBytes { raw in
            fl_changeset_apply(connection, Int32(raw.count), raw.baseAddress, { context, kind, iterator in
                guard let context, let iterator else { return Int32(FL_CHANGESET_ABORT) }
                let box = Unmanaged<HandlerBox>.fromOpaque(context).takeUnretainedValue()
                // Kinds beyond the five documented ones do not exist in this SQLite; abort if one appears.
                guard let kind = ConflictKind(rawValue: kind) else { return Int32(FL_CHANGESET_ABORT) }
                return box.handler(kind, ChangeReader(iterator: iterator)).rawValue
            }, context.toOpaque())
        }
        try check(rc, db, "apply a changeset")
    }

    /// Runs `body` with SQLite triggers disabled on `db` (`SQLITE_DBCONFIG_ENABLE_TRIGGER`).
    ///
    /// A changeset between two end states already holds every row the triggers wrote on that
    /// side (audit rows, counters, FTS content): firing them again while applying would write
    /// those rows a second time.
    static func withTriggersDisabled<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        let connection = try connection(of: db)
        let previous = fl_db_set_triggers_enabled(connection, 0)
        defer { fl_db_set_triggers_enabled(connection, previous == 0 ? 0 : 1) }
        return try body()
    }

    private static func connection(of db: Database) throws -> OpaquePointer {
        guard let connection = db.sqliteConnection else {
            throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "the connection is closed")
        }
        return connection
    }

    private static func check(_ rc: Int32, _ db: Database, _ action: String) throws {
        guard rc != FL_SQLITE_OK else { return }
        let message = db.sqliteConnection.map { String(cString: fl_errmsg($0)) } ?? "closed connection"
        throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: "could not \(action): \(message)")
    }
}

/// The change an iterator points at: valid only during the callback that received it.
struct ChangeReader {
    let iterator: OpaquePointer

    enum Operation: String, Sendable, Codable { case insert, update, delete }

    /// Table name, column count and operation.
    func header() -> (table: String, columnCount: Int, operation: Operation) {
        var table: UnsafePointer<CChar>?
        var count: Int32 = 0
        var op: Int32 = 0
        _ = fl_changeset_op(iterator, &table, &count, &op)
        let operation: Operation = op == FL_OP_INSERT ? .insert : op == FL_OP_DELETE ? .delete : .update
        return (table.map { String(cString: $0) } ?? "", Int(count), operation)
    }

    /// Whether each column is part of the primary key.
    func primaryKeyFlags() -> [Bool] {
        var flags: UnsafeMutablePointer<UInt8>?
        var count: Int32 = 0
        _ = fl_changeset_pk(iterator, &flags, &count)
        guard let flags else { return [] }
        return (0..<Int(count)).map { flags[$0] != 0 }
    }

    /// Old values (nil where the change does not carry the column).
    func old(_ count: Int) -> [SQLValue?] { values(count, fl_changeset_old) }
    /// New values (nil where the change does not carry the column).
    func new(_ count: Int) -> [SQLValue?] { values(count, fl_changeset_new) }
    /// The conflicting row's values (only in a DATA or CONFLICT handler call).
    func conflicting(_ count: Int) -> [SQLValue?] { values(count, fl_changeset_conflict) }

    private func values(_ count: Int,
                        _ read: (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Int32) -> [SQLValue?] {
        (0..<count).map { column in
            var value: OpaquePointer?
            guard read(iterator, Int32(column), &value) == FL_SQLITE_OK, let value else { return nil }
            return SQLValue(value)
        }
    }

    /// The primary-key values, from the old values (update, delete) or the new ones (insert).
    func primaryKey() -> [SQLValue] {
        let (_, count, operation) = header()
        let flags = primaryKeyFlags()
        let source = operation == .insert ? new(count) : old(count)
        return zip(flags, source).compactMap { isKey, value in isKey ? (value ?? .null) : nil }
    }
}
