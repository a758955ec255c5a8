import Foundation
import GRDB

/// A database just copied from a device, folded into one self-contained file.
///
/// A pull copies `x.db` and, when present, `x.db-wal` or `x.db-journal` byte for byte beside it.
/// ``fold(_:)`` then lets SQLite itself make the copy whole: opening it rolls back a hot journal
/// (a transaction the app had not committed), and the WAL, whose frames hold the newest committed
/// rows, is checkpointed into the main file. The copy is then switched to `journal_mode=DELETE`,
/// so it is a plain file with no side files, and checked with `PRAGMA quick_check`.
///
/// For example:
///
/// ```swift
/// // after `cat`ing x.db and x.db-wal from the device into folder/
/// let summary = try PulledDatabase.fold(folder.appendingPathComponent("x.db"))
/// print(summary.tableRowCounts)   // ["users": 4, …]
/// ```
///
/// - Important: only for freshly pulled files that nobody else has open: folding writes to them.
///   Never call it on a database the user may have open.
public enum PulledDatabase {
    /// What a fold found and did.
    public struct Summary: Sendable, Equatable {
        /// Row counts per ordinary table.
        public var tableRowCounts: [String: Int]
        /// `PRAGMA page_count` after the fold.
        public var pageCount: Int
        /// `PRAGMA page_size`.
        public var pageSize: Int
        /// The folded file's size in bytes.
        public var size: Int64
        /// Whether the database was in WAL mode on the device.
        public var wasWAL: Bool
        /// Whether a non-empty `-wal` was beside the file and has been checkpointed into it.
        public var foldedWAL: Bool
        /// Whether a non-empty `-journal` was beside the file (a hot one is rolled back by SQLite).
        public var hadJournal: Bool
    }

    /// Folds `database` and its pulled `-wal`/`-journal` into one checked, self-contained file.
    ///
    /// - parameters:
    ///     - database: the pulled main file; its side files, if any, sit beside it.
    ///     - syncToDisk: whether the folded file is fsynced before returning. The default is true;
    ///       a caller that renames it into place later can sync it then (and only then).
    /// - returns: tables and row counts, page count, size.
    /// - throws: ``FlippioError/Code/notSQLite`` (the header is not SQLite's; a text file's first
    ///   line is quoted), ``FlippioError/Code/corruptDatabase`` (with the quick_check output),
    ///   ``FlippioError/Code/databaseMissing``.
    public static func fold(_ database: URL, syncToDisk: Bool = true) throws -> Summary {
        let path = database.path
        let header = try SQLiteHeader.read(fileAt: database)
        let wal = URL(fileURLWithPath: path + "-wal"), journal = URL(fileURLWithPath: path + "-journal")
        let walSize = DatabaseInspector.fileSize(wal), journalSize = DatabaseInspector.fileSize(journal)

        var configuration = Configuration()
        configuration.label = "flippio.fold"
        // Nobody else has the file open; a lock means something is wrong, so fail fast.
        configuration.busyMode = .immediateError
        DatabaseInspector.mapWholeFile(&configuration)
        var summary: Summary
        do {
            // Opening read-write is what lets SQLite roll back a hot journal and recover the WAL.
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            summary = try queue.writeWithoutTransaction { db -> Summary in
                let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? ""
                if mode == "wal" {
                    // Copy every committed frame into the main file and empty the WAL…
                    let row = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)")
                    if let busy: Int = row?[0], busy != 0 {
                        throw FlippioError(.databaseBusy, "Could not checkpoint the pulled copy \(path): it is in use.",
                                           remedy: "Close any program that has the freshly pulled file open and pull again.",
                                           context: ["path": path])
                    }
                    // …then leave WAL mode: header bytes 18/19 become 1 and the -wal/-shm are removed.
                    let newMode = try String.fetchOne(db, sql: "PRAGMA journal_mode = DELETE")
                    guard newMode == "delete" else {
                        throw FlippioError.internalError("Could not switch the pulled copy \(path) out of WAL mode (got \(newMode ?? "nil")).")
                    }
                }
                try DatabaseInspector.quickCheck(db, path: path, what: "The pulled database \(path)")
                let pages = try DatabaseInspector.pages(db)
                return Summary(tableRowCounts: try DatabaseInspector.tableRowCounts(db),
                               pageCount: pages.count, pageSize: pages.size, size: 0,
                               wasWAL: header.isWAL || mode == "wal", foldedWAL: mode == "wal" && walSize > 0,
                               hadJournal: journalSize > 0)
            }
            try queue.close()
        } catch {
            throw FlippioError.database(error, path: path, action: "fold the pulled copy")
        }
        // SQLite removed the side files it used. What may remain is a journal SQLite judged not
        // hot (empty, or with a zeroed header), which is stale: remove it so the copy stands alone.
        for side in DatabaseInspector.sideFiles(of: database) where unlink(side.path) != 0 && errno != ENOENT {
            throw FlippioError.workspaceWriteFailed(path: side.path, errno: errno)
        }
        if syncToDisk { try DatabaseInspector.syncToDisk(fileAt: database) }
        summary.size = DatabaseInspector.fileSize(database)
        return summary
    }
}
