import Foundation
import GRDB

/// Brings the device's rows into the live local database file, through SQLite, in one
/// transaction.
///
/// The changes base→device are applied to the file the user edits, so an editor that has it open
/// keeps a valid view and sees the new rows; the file is never replaced. The same rules as
/// ``ThreeWayMerge`` hold (key-less tables, `sqlite_sequence`, `Z_PRIMARYKEY`, app metadata,
/// FTS rebuild, triggers off while applying). For example:
///
/// After a ``ThreeWayMerge``, pass the local snapshot that was merged as `base` and the merged
/// file as `device`: the live file then gets exactly the merged content (including desktop rows
/// the merge moved to a new rowid), and edits the user made since the snapshot are kept, or
/// reported as a conflict when they touch the same rows.
///
/// ```swift
/// let applier = ChangesetApplier(busyTimeout: 5, attempts: 3)
/// switch try applier.apply(base: baseCopy, device: pulled, toLiveDatabaseAt: localFile) {
/// case .applied(let rows): log("brought in \(rows) rows")
/// case .conflict(let conflict): // the user edited the same rows since the merge: merge again
/// }
/// ```
///
/// ## Why a second connection to the live file is safe
///
/// The agent's pool keeps read-only connections to the file. This type opens its own writable
/// `DatabaseQueue` on it, with a busy timeout. That is safe because SQLite opens the file: SQLite
/// keeps one lock table per inode for the whole process (`unixInodeInfo`), and a connection it
/// closes does not release locks another connection holds. The danger is a non-SQLite
/// `open()`/`close()` of the same file in this process (POSIX drops every lock the process holds
/// on the file at the first `close()`): this type never reads the live file by other means.
public struct ChangesetApplier: Sendable {
    /// How long SQLite waits for another program's lock on each attempt. The default is 5 seconds.
    public var busyTimeout: TimeInterval
    /// How many times a transaction that found the file locked is tried. The default is 3.
    public var attempts: Int

    public init(busyTimeout: TimeInterval = 5, attempts: Int = 3) {
        self.busyTimeout = busyTimeout
        self.attempts = max(1, attempts)
    }

    public enum Outcome: Sendable, Equatable {
        /// The device's changes are in the live file (`rows`: rows inserted, updated or deleted;
        /// 0 when the device's content equals the base).
        case applied(rows: Int)
        /// Nothing was written: the local file changed the same rows (or its schema) since the
        /// base. The caller merges again (``ThreeWayMerge``) with a fresh snapshot.
        case conflict(MergeConflict)
    }

    /// Applies the changes base→`device` to the live database at `live`, in one IMMEDIATE
    /// transaction.
    ///
    /// - parameters:
    ///     - base: the common ancestor (the base copy); read only.
    ///     - device: the device's version (pulled, WAL folded in); read only.
    ///     - live: the local database file; written through SQLite, never replaced.
    /// - throws: ``FlippioError/Code/databaseBusy`` when another program held a write lock (or a
    ///   long read in rollback-journal mode) through every attempt: retry later, nothing was
    ///   written. ``FlippioError/Code/notSQLite`` / ``FlippioError/Code/databaseMissing`` for
    ///   `base` or `device`; ``FlippioError/Code/databaseMissing`` when `live` does not exist;
    ///   ``FlippioError/Code/corruptDatabase``. Conflicts are not thrown: see ``Outcome``.
    public func apply(base: URL, device: URL, toLiveDatabaseAt live: URL) throws -> Outcome {
        // Not SQLiteHeader.read(live): a FileHandle closed on the live file drops SQLite's locks.
        guard FileManager.default.fileExists(atPath: live.path) else {
            throw FlippioError(.databaseMissing, "\(live.path) does not exist.",
                               remedy: "Pull the database again, or run `flippio forget` to stop tracking it.",
                               context: ["path": live.path])
        }
        let queue: DatabaseQueue
        do {
            queue = try DatabaseQueue(path: live.path, configuration: MergeConnection.configuration(busyTimeout: busyTimeout))
        } catch {
            throw FlippioError.database(error, path: live.path, action: "open")
        }
        defer { try? queue.close() }
        return try apply(base: base, device: device, using: queue)
    }

    /// ``apply(base:device:toLiveDatabaseAt:)`` on a thread of its own.
    ///
    /// Waiting for an editor's write lock blocks the calling thread for up to ``busyTimeout`` per
    /// attempt (SQLite's busy handler sleeps): on a thread of the cooperative pool, which has one
    /// thread per core, that would stall every other database's work meanwhile.
    public func applyOnOwnThread(base: URL, device: URL, toLiveDatabaseAt live: URL) async throws -> Outcome {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try self.apply(base: base, device: device, toLiveDatabaseAt: live) })
            }
        }
    }

    /// Applies the changes base→`device` through `writer`, a writable connection the caller
    /// owns on the live file, in one IMMEDIATE transaction.
    ///
    /// `writer`'s busy mode decides how long each attempt waits (``busyTimeout`` is not used);
    /// foreign-key enforcement is switched off for the transaction and restored afterwards (a
    /// changeset applied row by row must not fire ON DELETE CASCADE actions).
    ///
    /// - throws: as ``apply(base:device:toLiveDatabaseAt:)``.
    public func apply(base: URL, device: URL, using writer: DatabaseQueue) throws -> Outcome {
        try MergeConnection.requireDatabase(base)
        try MergeConnection.requireDatabase(device)
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try applyOnce(writer, base: base, device: device)
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && attempt < attempts {
                continue
            } catch {
                throw FlippioError.database(error, path: writer.path, action: "bring the device's rows into")
            }
        }
    }

    private func applyOnce(_ queue: DatabaseQueue, base: URL, device: URL) throws -> Outcome {
        try queue.writeWithoutTransaction { db in
            let foreignKeys = try Bool.fetchOne(db, sql: "PRAGMA foreign_keys") ?? false
            try db.execute(sql: "PRAGMA foreign_keys = OFF")
            try MergeConnection.attach(db, base, as: "base")
            try MergeConnection.attach(db, device, as: "source")
            defer {
                try? db.execute(sql: "DETACH DATABASE base; DETACH DATABASE source")
                if foreignKeys { try? db.execute(sql: "PRAGMA foreign_keys = ON") }
            }
            var report = DeltaApplication.Report()
            // IMMEDIATE: take the write lock first (waiting up to the busy timeout), so a
            // writer that comes in meanwhile waits for us rather than failing us half-way.
            try db.inTransaction(.immediate) {
                report = try DeltaApplication(sourceIsDevice: true, prefer: nil).run(db)
                return report.schema == nil && report.conflicts.isEmpty ? .commit : .rollback
            }
            if let schema = report.schema { return .conflict(MergeConflict(schema: schema, rows: [])) }
            if !report.conflicts.isEmpty { return .conflict(MergeConflict(schema: nil, rows: report.conflicts)) }
            return .applied(rows: report.rowsFromSource)
        }
    }
}
