import Foundation
import GRDB

/// The tables of one schema of a connection (`main`, `base`, ...) and how the merge treats each
/// (internal).
struct SchemaLayout {
    /// How the merge treats a table.
    enum Policy: Equatable {
        /// Rows merged one by one (keyed) or the table taken whole (key-less).
        case rows
        /// A counter table SQLite or Core Data maintains: the merged value is the max of both
        /// sides, per key (`sqlite_sequence`: seq per name; `Z_PRIMARYKEY`: Z_MAX per Z_ENT).
        case maxCounter(key: String, value: String)
        /// Metadata the app (Room, Core Data, Android) owns: the device's version wins, never a
        /// conflict (`room_master_table`, `android_metadata`, `Z_METADATA`, `Z_MODELCACHE`).
        case deviceWins
        /// Derived data rebuilt after a merge, never diffed (FTS index shadow tables,
        /// `sqlite_stat*`).
        case derived
    }

    struct Table {
        let name: String
        let columns: [String]
        /// Primary-key columns in key order; empty for a key-less table.
        let primaryKey: [String]
        let policy: Policy
        /// Whether the key is an `INTEGER PRIMARY KEY` (the rowid: the app lets SQLite choose it).
        let hasRowidKey: Bool
        /// Whether a foreign key of some table refers to this one.
        let isReferenced: Bool
        var isKeyed: Bool { !primaryKey.isEmpty }
    }

    /// One row of `sqlite_schema`, without `rootpage` (a VACUUM moves pages, not content).
    struct SchemaObject: Hashable {
        let type: String
        let name: String
        let tableName: String
        let sql: String?
    }

    let schema: String
    let tables: [Table]
    let objects: Set<SchemaObject>
    /// `PRAGMA user_version` (Room and SQLiteOpenHelper keep their schema version there).
    let userVersion: Int64
    /// FTS3/4/5 virtual tables (rebuilt after rows are applied).
    let ftsTables: [String]

    /// Tables whose rows the session extension diffs: keyed, not derived.
    var sessionTables: [String] { tables.filter { $0.isKeyed && $0.policy != .derived }.map(\.name) }

    func table(_ name: String) -> Table? { tables.first { $0.name == name } }

    static func read(_ db: Database, schema: String) throws -> SchemaLayout {
        let q = quote(schema)
        let objects = try Row.fetchAll(db, sql: """
            SELECT type, name, tbl_name, sql FROM \(q).sqlite_schema WHERE name NOT LIKE 'sqlite_stat%'
            """).map { SchemaObject(type: $0[0], name: $0[1], tableName: $0[2], sql: $0[3]) }
        let userVersion = try Int64.fetchOne(db, sql: "PRAGMA \(q).user_version") ?? 0

        var ftsTables: [String] = []
        var derived: Set<String> = []
        for object in objects where object.type == "table" {
            guard let sql = object.sql?.lowercased(), sql.hasPrefix("create virtual table") else { continue }
            // The module name follows USING; FTS index shadow tables are rebuilt, not merged.
            // Their `_content` table (internal-content FTS) is the data itself and is merged.
            guard let using = sql.range(of: "using") else { continue }
            let module = sql[using.upperBound...].trimmingCharacters(in: .whitespaces).prefix(4)
            if module.hasPrefix("fts3") || module.hasPrefix("fts4") {
                ftsTables.append(object.name)
                for suffix in ["segments", "segdir", "docsize", "stat"] { derived.insert("\(object.name)_\(suffix)") }
            } else if module.hasPrefix("fts5") {
                ftsTables.append(object.name)
                for suffix in ["data", "idx", "docsize", "config"] { derived.insert("\(object.name)_\(suffix)") }
            }
        }

        var tables: [Table] = []
        var referenced: Set<String> = []
        let plain = objects.filter { object in
            object.type == "table" && !(object.sql?.lowercased().hasPrefix("create virtual table") ?? false)
        }
        for object in plain {
            for fk in try Row.fetchAll(db, sql: "PRAGMA \(q).foreign_key_list(\(quote(object.name)))") {
                referenced.insert((fk["table"] as String).lowercased())
            }
        }
        for object in plain.sorted(by: { $0.name < $1.name }) {
            let info = try Row.fetchAll(db, sql: "PRAGMA \(q).table_info(\(quote(object.name)))")
            let columns: [String] = info.map { $0["name"] }
            let primaryKey = info.filter { ($0["pk"] as Int) > 0 }
                .sorted { ($0["pk"] as Int) < ($1["pk"] as Int) }
                .map { $0["name"] as String }
            let policy: Policy
            let lower = object.name.lowercased()
            if derived.contains(object.name) || lower.hasPrefix("sqlite_stat") {
                policy = .derived
            } else if lower == "sqlite_sequence" {
                policy = .maxCounter(key: "name", value: "seq")
            } else if object.name == "Z_PRIMARYKEY", columns.contains("Z_ENT"), columns.contains("Z_MAX") {
                policy = .maxCounter(key: "Z_ENT", value: "Z_MAX")
            } else if ["room_master_table", "android_metadata", "z_metadata", "z_modelcache"].contains(lower) {
                policy = .deviceWins
            } else {
                policy = .rows
            }
            let keyType = info.first { ($0["pk"] as Int) > 0 }.map { ($0["type"] as String).uppercased() }
            let withoutRowid = object.sql?.lowercased().contains("without rowid") ?? false
            tables.append(Table(name: object.name, columns: columns, primaryKey: primaryKey, policy: policy,
                                hasRowidKey: primaryKey.count == 1 && keyType == "INTEGER" && !withoutRowid,
                                isReferenced: referenced.contains(object.name.lowercased())))
        }
        return SchemaLayout(schema: schema, tables: tables, objects: Set(objects), userVersion: userVersion,
                            ftsTables: ftsTables.sorted())
    }

    /// What differs between this schema and `other`, one line per object, empty when equal.
    func differences(from other: SchemaLayout) -> [String] {
        var lines: [String] = []
        let mine = Dictionary(objects.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let theirs = Dictionary(other.objects.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for name in Set(mine.keys).union(theirs.keys).sorted() {
            switch (theirs[name], mine[name]) {
            case (nil, let added?): lines.append("\(added.type) \(name) added")
            case (let removed?, nil): lines.append("\(removed.type) \(name) removed")
            case (let before?, let after?) where before != after: lines.append("\(after.type) \(name) changed")
            default: break
            }
        }
        if userVersion != other.userVersion {
            lines.append("user_version \(other.userVersion) → \(userVersion)")
        }
        return lines
    }
}

/// `"name"`, with embedded quotes doubled.
func quote(_ identifier: String) -> String {
    "\"\(identifier.replacingOccurrences(of: "\"", with: "\"\""))\""
}

extension SchemaLayout.Table {
    /// Whether the rows of this table are the same multiset in `a` and `b` (for key-less tables,
    /// which the session extension cannot diff).
    func sameRows(_ db: Database, _ a: String, _ b: String) throws -> Bool {
        let groups = (1...columns.count).map(String.init).joined(separator: ",")
        func counted(_ schema: String) -> String {
            "SELECT *, count(*) FROM \(quote(schema)).\(quote(name)) GROUP BY \(groups)"
        }
        let sql = """
            SELECT EXISTS (\(counted(a)) EXCEPT \(counted(b))) OR EXISTS (\(counted(b)) EXCEPT \(counted(a)))
            """
        return try !(Bool.fetchOne(db, sql: sql) ?? true)
    }

    /// The row with primary key `key` in `schema`, or nil when there is none.
    func row(_ db: Database, schema: String, key: [SQLValue]) throws -> [ColumnValue]? {
        let condition = primaryKey.map { "\(quote($0)) IS ?" }.joined(separator: " AND ")
        let sql = "SELECT \(columns.map(quote).joined(separator: ",")) FROM \(quote(schema)).\(quote(name)) WHERE \(condition)"
        guard let row = try Row.fetchOne(db, sql: sql, arguments: StatementArguments(key.map(\.databaseValue))) else {
            return nil
        }
        return columns.indices.map { ColumnValue(column: columns[$0], value: SQLValue(row[$0] as DatabaseValue)) }
    }
}
