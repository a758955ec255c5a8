import Foundation
import GRDB

/// The row changes that turn one database file into another, as SQLite's session extension
/// records them.
///
/// Built with `sqlite3session_diff` between two files attached to one connection, for every
/// table with a PRIMARY KEY (rowid tables with a declared key, `WITHOUT ROWID` tables). Tables
/// without a key, FTS index shadow tables and `sqlite_stat*` are not in a changeset: the merge
/// handles them separately. For example:
///
/// ```swift
/// let changeset = try Changeset.between(base: baseURL, and: deviceURL)
/// for change in changeset.changes {
///     print(change.operation, change.table, change.primaryKey)
/// }
/// ```
///
/// ## Topics
///
/// - ``between(base:and:)``
/// - ``Change``
public struct Changeset: Sendable {
    /// One row change.
    public struct Change: Sendable, Hashable, Codable {
        public enum Operation: String, Sendable, Hashable, Codable { case insert, update, delete }

        public let table: String
        public let operation: Operation
        /// The table's column names, in order (the value arrays below follow them).
        public let columns: [String]
        /// The primary-key columns and their values.
        public let primaryKey: [ColumnValue]
        /// Values before the change: every column for a delete, the key and the changed
        /// columns for an update (nil for the others), all nil for an insert.
        public let old: [SQLValue?]
        /// Values after the change: every column for an insert, the changed columns for an
        /// update (nil for the others), all nil for a delete.
        public let new: [SQLValue?]
    }

    /// The changeset blob, as `sqlite3session_changeset` produced it (empty when nothing changed).
    public let data: Data
    /// The changes, decoded for display and counting.
    public let changes: [Change]

    /// Whether nothing changed in keyed tables.
    public var isEmpty: Bool { data.isEmpty }

    /// The changeset that turns `base` into `other`.
    ///
    /// Both files are attached to one private in-memory connection and read through SQLite, so
    /// a file another connection of this process holds open is safe to pass (SQLite shares its
    /// locks per inode). Pass snapshots, not files a writer is changing.
    ///
    /// - throws: ``FlippioError/Code/schemaChanged`` when the two schemas differ (a changeset
    ///   needs the same tables and keys on both sides); ``FlippioError/Code/notSQLite``,
    ///   ``FlippioError/Code/corruptDatabase``, ``FlippioError/Code/databaseMissing`` for bad files.
    public static func between(base: URL, and other: URL) throws -> Changeset {
        try MergeConnection.withAttached(["base": base, "other": other]) { db in
            let baseLayout = try SchemaLayout.read(db, schema: "base")
            let otherLayout = try SchemaLayout.read(db, schema: "other")
            let differences = otherLayout.differences(from: baseLayout)
            guard differences.isEmpty else {
                throw FlippioError.schemaChanged(path: other.path, differences: differences)
            }
            let data = try SessionExtension.diff(db, from: "base", to: "other", tables: otherLayout.sessionTables)
            return try Changeset(data: data, layout: otherLayout)
        }
    }

    init(data: Data, layout: SchemaLayout) throws {
        self.data = data
        var changes: [Change] = []
        try SessionExtension.forEachChange(in: data) { reader in
            changes.append(reader.change(layout: layout))
        }
        self.changes = changes
    }
}

extension ChangeReader {
    func change(layout: SchemaLayout) -> Changeset.Change {
        let (table, count, operation) = header()
        let columns = layout.table(table)?.columns ?? (0..<count).map { "column\($0)" }
        let flags = primaryKeyFlags()
        let old = operation == .insert ? Array(repeating: nil, count: count) : self.old(count)
        let new = operation == .delete ? Array(repeating: nil, count: count) : self.new(count)
        let keySource = operation == .insert ? new : old
        let primaryKey = flags.indices.filter { flags[$0] }.map {
            ColumnValue(column: columns[$0], value: keySource[$0] ?? .null)
        }
        return Changeset.Change(table: table, operation: .init(rawValue: operation.rawValue)!,
                                columns: columns, primaryKey: primaryKey, old: old, new: new)
    }
}
