import Foundation
import GRDB

/// Applies the changes base→`source` onto `main`, which holds base→`main` changes of its own
/// (internal; the one engine behind ``ThreeWayMerge`` and ``ChangesetApplier``).
///
/// The connection has three schemas attached: `main` (the file written), `base` (the common
/// ancestor) and `source` (the version whose changes are brought in). The caller opens the
/// transaction; nothing here commits.
///
/// Rules, per table (see ``SchemaLayout/Policy``):
/// - keyed tables: the changeset base→source is applied with `sqlite3changeset_apply_v2`; a row
///   whose key changed on both sides is a conflict unless both sides ended with the same row;
/// - key-less tables: taken whole from the side that changed; changed on both sides (to
///   different rows) is a conflict;
/// - `sqlite_sequence`, `Z_PRIMARYKEY`: the max of both sides per key;
/// - `room_master_table`, `android_metadata`, `Z_METADATA`, `Z_MODELCACHE`: the device's wins;
/// - FTS index shadow tables are not diffed; FTS tables over changed content are rebuilt.
/// Triggers are off while applying: each side's end state already holds what its triggers wrote.
struct DeltaApplication {
    enum Side { case source, target }

    /// Whether `source` is the device's version (else `main` is).
    let sourceIsDevice: Bool
    /// Which side's row to keep for conflicting rows; nil: report them and change nothing.
    let prefer: Side?

    struct Report {
        var schema: SchemaConflict?
        var conflicts: [RowConflict] = []
        /// Rows the source changed (inserted, updated, deleted) that went into `main`.
        var rowsFromSource = 0
        /// Rows `main` had changed since the base.
        var rowsFromTarget = 0
        /// Tables whose rows changed in `main`.
        var touchedTables: Set<String> = []
        /// Rows inserted on both sides with the same rowid key: the source's got a new key.
        var rekeyed: [ThreeWayMerge.RekeyedRow] = []
    }

    private struct RowKey: Hashable {
        let table: String
        let key: [SQLValue]
    }

    func run(_ db: Database) throws -> Report {
        var report = Report()
        let base = try SchemaLayout.read(db, schema: "base")
        let source = try SchemaLayout.read(db, schema: "source")
        let target = try SchemaLayout.read(db, schema: "main")
        let sourceChanges = source.differences(from: base)
        let targetChanges = target.differences(from: base)
        if !sourceChanges.isEmpty || !targetChanges.isEmpty {
            report.schema = SchemaConflict(localChanges: sourceIsDevice ? targetChanges : sourceChanges,
                                           deviceChanges: sourceIsDevice ? sourceChanges : targetChanges)
            return report
        }
        return try SessionExtension.withTriggersDisabled(db) {
            try apply(db, layout: base, report: &report)
            return report
        }
    }

    private func apply(_ db: Database, layout: SchemaLayout, report: inout Report) throws {
        let keyed = layout.sessionTables
        let sourceData = try SessionExtension.diff(db, from: "base", to: "source", tables: keyed)
        let targetData = try SessionExtension.diff(db, from: "base", to: "main", tables: keyed)

        // Keys each side changed, for the row-level rules (counter and app-metadata tables
        // have their own rules and never conflict).
        var targetKeys: Set<RowKey> = []
        try SessionExtension.forEachChange(in: targetData) { reader in
            report.rowsFromTarget += 1
            targetKeys.insert(RowKey(table: reader.header().table, key: reader.primaryKey()))
        }
        var sourceOperations: [RowKey: ChangeReader.Operation] = [:]
        var sourceCount = 0
        try SessionExtension.forEachChange(in: sourceData) { reader in
            sourceCount += 1
            let (table, _, operation) = reader.header()
            guard layout.table(table)?.policy == .rows else { return }
            let key = RowKey(table: table, key: reader.primaryKey())
            if targetKeys.contains(key) { sourceOperations[key] = operation }
        }

        // Rows changed on both sides: the same end row is no conflict; anything else is.
        var settled: Set<RowKey> = []
        var preferred: [(table: SchemaLayout.Table, key: [SQLValue], row: [ColumnValue]?)] = []
        for (key, operation) in sourceOperations.sorted(by: { "\($0.key.table)\($0.key.key)" < "\($1.key.table)\($1.key.key)" }) {
            guard let table = layout.table(key.table) else { continue }
            settled.insert(key)
            let sourceRow = try table.row(db, schema: "source", key: key.key)
            let targetRow = try table.row(db, schema: "main", key: key.key)
            if sourceRow == targetRow { continue }
            let baseRow = try table.row(db, schema: "base", key: key.key)
            if baseRow == nil, !sourceIsDevice, table.hasRowidKey, !table.isReferenced,
               let sourceRow, case .integer(let old)? = key.key.first {
                // Both sides inserted with the next rowid (AUTOINCREMENT or not): two different
                // rows, not one changed twice. The desktop's row takes the next free key; no
                // foreign key refers to this table, so nothing else points at the old key.
                let new = try nextRowid(db, table: table)
                try replaceRow(db, table: table, key: [.integer(new)], with: sourceRow.map {
                    $0.column == table.primaryKey[0] ? ColumnValue(column: $0.column, value: .integer(new)) : $0
                })
                report.rekeyed.append(.init(table: table.name, column: table.primaryKey[0], from: old, to: new))
                report.rowsFromSource += 1
                report.touchedTables.insert(table.name)
                continue
            }
            let conflict = rowConflict(table: table, key: key.key, operation: operation,
                                       base: baseRow, source: sourceRow, target: targetRow)
            report.conflicts.append(conflict)
            if let prefer { preferred.append((table, key.key, prefer == .source ? sourceRow : targetRow)) }
        }
        if !report.conflicts.isEmpty && prefer == nil { return }

        let foreignKeysBefore = try foreignKeyViolations(db)
        var constraintKeys: [(table: String, key: [SQLValue])] = []
        try SessionExtension.apply(db, sourceData) { kind, reader in
            let (tableName, _, _) = reader.header()
            let policy = layout.table(tableName)?.policy ?? .rows
            switch policy {
            case .deviceWins where sourceIsDevice:
                return kind == .data || kind == .conflict ? .replace : .omit
            case .deviceWins, .maxCounter, .derived:
                return .omit
            case .rows:
                let key = RowKey(table: tableName, key: reader.primaryKey())
                if settled.contains(key) { return .omit }
                // Not changed on the other side, yet in conflict: a constraint (UNIQUE, NOT
                // NULL, CHECK) the merged row breaks. (DATA, NOTFOUND and CONFLICT need a
                // change on the other side, which `settled` holds; foreign keys are checked
                // after the apply, since they are not enforced while applying.)
                constraintKeys.append((tableName, key.key))
                return .omit
            }
        }
        report.rowsFromSource += sourceCount - settled.count
        for (tableName, key) in constraintKeys {
            guard let table = layout.table(tableName) else { continue }
            report.rowsFromSource -= 1
            report.conflicts.append(RowConflict(
                kind: .constraintViolation, table: tableName, primaryKey: keyColumns(table, key),
                base: try table.row(db, schema: "base", key: key),
                local: try table.row(db, schema: sourceIsDevice ? "main" : "source", key: key),
                device: try table.row(db, schema: sourceIsDevice ? "source" : "main", key: key),
                explanation: "The \(sourceIsDevice ? "device's" : "desktop's") version of this row breaks a UNIQUE, NOT NULL or CHECK constraint of \(tableName) in the merged database."))
        }
        try SessionExtension.forEachChange(in: sourceData) { reader in
            report.touchedTables.insert(reader.header().table)
        }

        // Conflicting rows under --merge-prefer: the preferred side's whole row.
        for (table, key, row) in preferred {
            try replaceRow(db, table: table, key: key, with: row)
            report.touchedTables.insert(table.name)
        }

        try mergeKeylessTables(db, layout: layout, report: &report)
        try mergeCounters(db, layout: layout)
        try rebuildFullTextIndexes(db, layout: layout, touched: report.touchedTables)

        for violation in try foreignKeyViolations(db).subtracting(foreignKeysBefore).sorted(by: { $0.description < $1.description }) {
            report.conflicts.append(try foreignKeyConflict(db, layout: layout, violation: violation))
        }
    }

    // MARK: - Conflicts

    private func rowConflict(table: SchemaLayout.Table, key: [SQLValue], operation: ChangeReader.Operation,
                             base: [ColumnValue]?, source: [ColumnValue]?, target: [ColumnValue]?) -> RowConflict {
        let local = sourceIsDevice ? target : source
        let device = sourceIsDevice ? source : target
        let kind: RowConflict.Kind
        let explanation: String
        switch (base, local, device) {
        case (nil, _, _):
            kind = .insertedOnBothSides
            explanation = "A row with this key was inserted on both sides with different values."
        case (_?, nil, _?):
            kind = .deletedLocallyUpdatedOnDevice
            explanation = "The row was deleted on the desktop and updated on the device."
        case (_?, _?, nil):
            kind = .updatedLocallyDeletedOnDevice
            explanation = "The row was updated on the desktop and deleted on the device."
        default:
            kind = .updatedOnBothSides
            explanation = "The row was updated on both sides to different values."
        }
        return RowConflict(kind: kind, table: table.name, primaryKey: keyColumns(table, key),
                           base: base, local: local, device: device, explanation: explanation)
    }

    /// One more than the largest rowid either side used (or AUTOINCREMENT handed out).
    private func nextRowid(_ db: Database, table: SchemaLayout.Table) throws -> Int64 {
        let t = quote(table.name), k = quote(table.primaryKey[0])
        var candidates = ["(SELECT max(\(k)) FROM main.\(t))", "(SELECT max(\(k)) FROM source.\(t))"]
        if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE name = 'sqlite_sequence')") == true {
            candidates += ["main", "source"].map { "(SELECT max(seq) FROM \($0).sqlite_sequence WHERE name = '\(table.name.replacingOccurrences(of: "'", with: "''"))')" }
        }
        return try Int64.fetchOne(db, sql: "SELECT max(\(candidates.map { "coalesce(\($0), 0)" }.joined(separator: ", ")))")! + 1
    }

    private func keyColumns(_ table: SchemaLayout.Table, _ key: [SQLValue]) -> [ColumnValue] {
        zip(table.primaryKey, key).map { ColumnValue(column: $0, value: $1) }
    }

    private func replaceRow(_ db: Database, table: SchemaLayout.Table, key: [SQLValue], with row: [ColumnValue]?) throws {
        let condition = table.primaryKey.map { "\(quote($0)) IS ?" }.joined(separator: " AND ")
        try db.execute(sql: "DELETE FROM main.\(quote(table.name)) WHERE \(condition)",
                       arguments: StatementArguments(key.map(\.databaseValue)))
        guard let row else { return }
        let columns = row.map { quote($0.column) }.joined(separator: ",")
        let marks = Array(repeating: "?", count: row.count).joined(separator: ",")
        try db.execute(sql: "INSERT INTO main.\(quote(table.name)) (\(columns)) VALUES (\(marks))",
                       arguments: StatementArguments(row.map(\.value.databaseValue)))
    }

    // MARK: - Key-less tables, counters, FTS

    private func mergeKeylessTables(_ db: Database, layout: SchemaLayout, report: inout Report) throws {
        for table in layout.tables where !table.isKeyed && (table.policy == .rows || table.policy == .deviceWins) {
            guard try !table.sameRows(db, "base", "source") else { continue }
            let targetChanged = try !table.sameRows(db, "base", "main")
            let takeSource: Bool
            if !targetChanged || (table.policy == .deviceWins && sourceIsDevice) {
                takeSource = true
            } else if try table.sameRows(db, "source", "main") || table.policy == .deviceWins {
                takeSource = false
            } else {
                report.conflicts.append(RowConflict(
                    kind: .keylessTableChangedOnBothSides, table: table.name, primaryKey: [],
                    base: nil, local: nil, device: nil,
                    explanation: "\(table.name) has no PRIMARY KEY, so its rows cannot be matched, and it changed on both sides."))
                takeSource = prefer == .source
            }
            guard takeSource else { continue }
            try db.execute(sql: "DELETE FROM main.\(quote(table.name))")
            try db.execute(sql: "INSERT INTO main.\(quote(table.name)) SELECT * FROM source.\(quote(table.name))")
            report.rowsFromSource += db.changesCount
            report.touchedTables.insert(table.name)
        }
    }

    /// `sqlite_sequence` and `Z_PRIMARYKEY`: the larger counter of both sides, so the next
    /// AUTOINCREMENT id (or Core Data primary key) is new on both.
    private func mergeCounters(_ db: Database, layout: SchemaLayout) throws {
        for table in layout.tables {
            guard case .maxCounter(let key, let value) = table.policy else { continue }
            let t = quote(table.name), k = quote(key), v = quote(value)
            try db.execute(sql: """
                UPDATE main.\(t) SET \(v) = max(coalesce(\(v), 0),
                    coalesce((SELECT s.\(v) FROM source.\(t) s WHERE s.\(k) IS \(t).\(k)), 0))
                WHERE \(k) IN (SELECT \(k) FROM source.\(t));
                INSERT INTO main.\(t) SELECT * FROM source.\(t) WHERE \(k) NOT IN (SELECT \(k) FROM main.\(t));
                """)
        }
    }

    /// Rebuilds the FTS tables whose content changed: their index shadow tables are never
    /// diffed, and the triggers that keep them (Room's) were off while applying.
    private func rebuildFullTextIndexes(_ db: Database, layout: SchemaLayout, touched: Set<String>) throws {
        guard !touched.isEmpty else { return }
        let touchedLower = touched.map { $0.lowercased() }
        for fts in layout.ftsTables {
            let sql = (layout.objects.first { $0.name == fts }?.sql ?? "").lowercased()
            let external = touchedLower.contains { name in
                ["content=\(name)", "content=\"\(name)\"", "content='\(name)'", "content=`\(name)`"]
                    .contains { sql.replacingOccurrences(of: " ", with: "").contains($0) }
            }
            guard external || touched.contains("\(fts)_content") else { continue }
            do {
                try db.execute(sql: "INSERT INTO main.\(quote(fts))(\(quote(fts))) VALUES('rebuild')")
            } catch {
                // A contentless FTS table (content='') cannot be rebuilt; its index is the data.
                continue
            }
        }
    }

    // MARK: - Foreign keys

    private struct Violation: Hashable, CustomStringConvertible {
        let table: String
        let rowid: Int64?
        let parent: String
        var description: String { "\(table) \(rowid.map(String.init) ?? "-") \(parent)" }
    }

    private func foreignKeyViolations(_ db: Database) throws -> Set<Violation> {
        Set(try Row.fetchAll(db, sql: "PRAGMA main.foreign_key_check").map {
            Violation(table: $0[0], rowid: $0[1], parent: $0[2])
        })
    }

    private func foreignKeyConflict(_ db: Database, layout: SchemaLayout, violation: Violation) throws -> RowConflict {
        let explanation = "This row of \(violation.table) refers to a row of \(violation.parent) that is not in the merged database (added on one side, its parent deleted on the other)."
        guard let table = layout.table(violation.table), let rowid = violation.rowid else {
            return RowConflict(kind: .foreignKeyViolation, table: violation.table, primaryKey: [],
                               base: nil, local: nil, device: nil, explanation: explanation)
        }
        guard table.isKeyed,
              let row = try Row.fetchOne(db, sql: "SELECT \(table.primaryKey.map(quote).joined(separator: ",")) FROM main.\(quote(table.name)) WHERE rowid = ?", arguments: [rowid])
        else {
            return RowConflict(kind: .foreignKeyViolation, table: table.name,
                               primaryKey: [ColumnValue(column: "rowid", value: .integer(rowid))],
                               base: nil, local: nil, device: nil, explanation: explanation)
        }
        let key = (0..<row.count).map { SQLValue(row[$0] as DatabaseValue) }
        return RowConflict(kind: .foreignKeyViolation, table: table.name, primaryKey: keyColumns(table, key),
                           base: try table.row(db, schema: "base", key: key),
                           local: try table.row(db, schema: sourceIsDevice ? "main" : "source", key: key),
                           device: try table.row(db, schema: sourceIsDevice ? "source" : "main", key: key),
                           explanation: explanation)
    }
}
