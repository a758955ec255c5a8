import Foundation

/// A row that changed on both sides, or a change the merged result cannot hold.
///
/// `base`, `local` and `device` are the whole row (column names and values) in each version,
/// nil where the row does not exist there (deleted, or not yet inserted).
public struct RowConflict: Sendable, Hashable, Codable {
    /// Why the row could not be merged.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// The same row was updated on both sides to different values.
        case updatedOnBothSides = "updated-on-both-sides"
        /// Deleted on the desktop, updated on the device.
        case deletedLocallyUpdatedOnDevice = "deleted-locally-updated-on-device"
        /// Updated on the desktop, deleted on the device.
        case updatedLocallyDeletedOnDevice = "updated-locally-deleted-on-device"
        /// Inserted on both sides with the same key and different values.
        case insertedOnBothSides = "inserted-on-both-sides"
        /// A table without a PRIMARY KEY changed on both sides (rows cannot be matched).
        case keylessTableChangedOnBothSides = "keyless-table-changed-on-both-sides"
        /// The merged row breaks a UNIQUE, NOT NULL or CHECK constraint.
        case constraintViolation = "constraint-violation"
        /// The merged result breaks a foreign key (e.g. a child added on one side, its parent
        /// deleted on the other).
        case foreignKeyViolation = "foreign-key-violation"
    }

    public let kind: Kind
    public let table: String
    /// The primary-key columns and values (empty for a key-less table; `rowid` when the row
    /// has no declared key).
    public let primaryKey: [ColumnValue]
    public let base: [ColumnValue]?
    public let local: [ColumnValue]?
    public let device: [ColumnValue]?
    /// One sentence for the user.
    public let explanation: String

    public init(kind: Kind, table: String, primaryKey: [ColumnValue], base: [ColumnValue]?,
                local: [ColumnValue]?, device: [ColumnValue]?, explanation: String) {
        self.kind = kind
        self.table = table
        self.primaryKey = primaryKey
        self.base = base
        self.local = local
        self.device = device
        self.explanation = explanation
    }
}

/// The schema (tables, indexes, triggers, views, `user_version`) changed on one side or both:
/// rows cannot be merged across a migration.
public struct SchemaConflict: Sendable, Hashable, Codable {
    /// What changed in the desktop copy since the base, one line per object ("table notes changed").
    public let localChanges: [String]
    /// What changed on the device since the base.
    public let deviceChanges: [String]

    public var explanation: String {
        var parts: [String] = []
        if !deviceChanges.isEmpty {
            parts.append("the device's schema changed (\(deviceChanges.joined(separator: "; "))), probably an app migration")
        }
        if !localChanges.isEmpty {
            parts.append("the desktop copy's schema changed (\(localChanges.joined(separator: "; ")))")
        }
        return "Rows cannot be merged because " + parts.joined(separator: " and ")
            + ". Keep one side whole (resolve --keep-local or --keep-device)."
    }
}

/// Why a merge did not produce a file: a schema change, or rows changed on both sides.
public struct MergeConflict: Sendable, Hashable, Codable {
    public let schema: SchemaConflict?
    public let rows: [RowConflict]

    public var explanation: String {
        if let schema { return schema.explanation }
        let tables = Set(rows.map(\.table)).sorted().joined(separator: ", ")
        return "\(rows.count) row\(rows.count == 1 ? "" : "s") changed on both sides (\(tables)); "
            + "resolve with --keep-local, --keep-device or --merge-prefer local|device."
    }
}

extension FlippioError {
    static func schemaChanged(path: String, differences: [String]) -> FlippioError {
        FlippioError(.schemaChanged,
                     "The schema of \(path) differs from the base: \(differences.joined(separator: "; ")).",
                     remedy: "Rows cannot be merged across a schema change; keep one version whole.",
                     context: ["path": path])
    }
}
