import Foundation
import GRDB

/// Merges the desktop's and the device's changes to a database, row by row, against their
/// common ancestor (the base).
///
/// The merged file is a copy of the device's version with the desktop's changes (the changeset
/// base→local, from SQLite's session extension) applied in one transaction, then checked with
/// `PRAGMA quick_check` and `PRAGMA foreign_key_check`. Nothing is written when a row changed on
/// both sides (unless ``Preference`` says which side wins), when the schema changed on either
/// side, or when the merged rows break a constraint. For example:
///
/// ```swift
/// switch try ThreeWayMerge.merge(base: base, local: snapshot, device: pulled, into: merged) {
/// case .merged(let result):
///     // push `merged` (compare-and-swap against `pulled`), then bring the device's rows
///     // into the live local file with ChangesetApplier
/// case .conflict(let conflict):
///     // keep both files; show conflict.rows
/// }
/// ```
///
/// What SQLite and the app frameworks maintain stays consistent: `sqlite_sequence` and Core
/// Data's `Z_PRIMARYKEY` take the max of both sides; `room_master_table`, `android_metadata`,
/// `Z_METADATA` and `Z_MODELCACHE` keep the device's version; FTS3/4/5 index tables are never
/// diffed and are rebuilt when their content changed (triggers are off while applying, since
/// each side's rows already hold what its triggers wrote).
///
/// Rows of a table changed on both sides merge when both sides changed *different* rows; the
/// same row changed on both sides is a conflict unless both ended with the same values (even
/// when they changed different columns: the user decides). Key-less tables are taken whole from
/// the side that changed them. A row both sides inserted under the same `INTEGER PRIMARY KEY`
/// (two new rows that got the same next rowid) is not a conflict when no foreign key refers to
/// the table: the desktop's row gets the next free rowid (``Result/rekeyedRows``).
///
/// ## Topics
///
/// - ``merge(base:local:device:into:prefer:)``
/// - ``Outcome``
/// - ``Result``
/// - ``Preference``
public enum ThreeWayMerge {
    /// Which side wins for conflicting rows (`--merge-prefer local|device`); every other row is merged.
    public enum Preference: String, Sendable, Codable, CaseIterable {
        case local, device
    }

    /// A desktop row that both sides inserted under the same rowid and that got a new one.
    public struct RekeyedRow: Sendable, Hashable, Codable {
        public let table: String
        public let column: String
        public let from: Int64
        public let to: Int64
    }

    /// A merged file.
    public struct Result: Sendable, Equatable {
        /// Rows the device changed since the base (now in the merged file).
        public let rowsFromDevice: Int
        /// Rows the desktop changed since the base that went into the merged file.
        public let rowsFromDesktop: Int
        /// Rows changed on both sides, resolved by the ``Preference`` (empty without one).
        public let resolvedConflicts: [RowConflict]
        /// Desktop rows inserted under a rowid the device also used, moved to a new rowid.
        public let rekeyedRows: [RekeyedRow]
    }

    public enum Outcome: Sendable {
        /// The merged file was written to the output URL.
        case merged(Result)
        /// Nothing was written; the conflicting rows or the schema change.
        case conflict(MergeConflict)
    }

    /// Merges `local` and `device` against `base` into a new file at `output`.
    ///
    /// The three inputs are read through SQLite and never changed: pass the base copy, a
    /// snapshot of the local file and the pulled device file, not a file a program is writing.
    /// `output` is replaced (with its `-wal`/`-journal`); it keeps the device's journal mode.
    ///
    /// - parameters:
    ///     - prefer: nil to report conflicts and write nothing; `.local` / `.device` to keep that
    ///       side's whole row for each conflicting row. A schema conflict is never resolved here.
    /// - returns: ``Outcome/merged(_:)`` or ``Outcome/conflict(_:)``. A conflict is not an error.
    /// - throws: ``FlippioError/Code/notSQLite``, ``FlippioError/Code/databaseMissing`` (an input),
    ///   ``FlippioError/Code/corruptDatabase`` (an input, or the merged file fails `quick_check`),
    ///   ``FlippioError/Code/workspaceWriteFailed`` (disk full), ``FlippioError/Code/invalidArgument``
    ///   (`output` is an input). `output` is removed on any error or conflict.
    public static func merge(base: URL, local: URL, device: URL, into output: URL,
                             prefer: Preference? = nil) throws -> Outcome {
        for url in [base, local, device] {
            try MergeConnection.requireDatabase(url)
            guard url.standardizedFileURL.path != output.standardizedFileURL.path else {
                throw FlippioError(.invalidArgument, "The merge output \(output.path) is one of its inputs.",
                                   remedy: "Write the merge to a new file.", context: ["path": output.path])
            }
        }
        removeDatabase(at: output)
        do {
            try FileManager.default.copyItem(at: device, to: output)
            // A -wal not yet folded into the device file holds committed rows: it goes with
            // the copy, and SQLite folds it in when the merge connection closes.
            if ContentIdentity.hasWAL(device) {
                try FileManager.default.copyItem(atPath: device.path + "-wal", toPath: output.path + "-wal")
            }
        } catch {
            throw FlippioError.workspaceWriteFailed(path: output.path, errno: Int32(clamping: errnoOf(error)))
        }
        var keep = false
        defer { if !keep { removeDatabase(at: output) } }

        let application = DeltaApplication(sourceIsDevice: false,
                                           prefer: prefer.map { $0 == .local ? .source : .target })
        let report: DeltaApplication.Report
        do {
            let queue = try DatabaseQueue(path: output.path, configuration: MergeConnection.configuration())
            defer { try? queue.close() }
            report = try queue.writeWithoutTransaction { db in
                try MergeConnection.attach(db, base, as: "base")
                try MergeConnection.attach(db, local, as: "source")
                var report = DeltaApplication.Report()
                try db.inTransaction {
                    report = try application.run(db)
                    let failed = report.schema != nil || (!report.conflicts.isEmpty && prefer == nil)
                    return failed ? .rollback : .commit
                }
                try db.execute(sql: "DETACH DATABASE base; DETACH DATABASE source")
                if report.schema == nil, report.conflicts.isEmpty || prefer != nil {
                    try quickCheck(db, path: output.path)
                }
                return report
            }
        } catch {
            throw FlippioError.database(error, path: output.path, action: "merge into")
        }
        if let schema = report.schema {
            return .conflict(MergeConflict(schema: schema, rows: []))
        }
        if !report.conflicts.isEmpty && prefer == nil {
            return .conflict(MergeConflict(schema: nil, rows: report.conflicts))
        }
        // Constraint and foreign-key violations cannot be resolved by preferring a side.
        let unresolvable = report.conflicts.filter { $0.kind == .constraintViolation || $0.kind == .foreignKeyViolation }
        if !unresolvable.isEmpty {
            return .conflict(MergeConflict(schema: nil, rows: unresolvable))
        }
        keep = true
        return .merged(Result(rowsFromDevice: report.rowsFromTarget, rowsFromDesktop: report.rowsFromSource,
                              resolvedConflicts: report.conflicts, rekeyedRows: report.rekeyed))
    }

    static func quickCheck(_ db: Database, path: String) throws {
        let lines = try String.fetchAll(db, sql: "PRAGMA main.quick_check")
        guard lines == ["ok"] else {
            throw FlippioError(.corruptDatabase, "The merged database \(path) fails quick_check: \(lines.prefix(3).joined(separator: "; ")).",
                               remedy: "This is a bug in flippio's merge; keep both versions and report it with the log.",
                               context: ["path": path])
        }
    }

    /// Removes a database file and its journals (a leftover `-wal` would be replayed over a new file).
    static func removeDatabase(at url: URL) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            try? FileManager.default.removeItem(atPath: url.path + suffix)
        }
    }

    private static func errnoOf(_ error: any Error) -> Int {
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return ns.code }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return underlying.code
        }
        return Int(EIO)
    }
}
