import Foundation
import GRDB

// MARK: - SQLite errors as FlippioError

extension FlippioError {
    /// Turns an error from SQLite (GRDB's `DatabaseError`) into a ``FlippioError`` the user can act on.
    ///
    /// `FlippioError`s pass through unchanged; other errors become `.internalError`.
    ///
    /// - parameters:
    ///     - error: what SQLite (or anything else) threw.
    ///     - path: the database file involved, named in the message.
    ///     - action: what the agent was doing, e.g. "open", "snapshot", "fold".
    static func database(_ error: any Error, path: String, action: String) -> FlippioError {
        if let error = error as? FlippioError { return error }
        guard let dbError = error as? DatabaseError else {
            return FlippioError(.internalError, "Could not \(action) \(path): \(error).",
                                remedy: "This is a bug in flippio; please report it with the log.",
                                context: ["path": path])
        }
        let detail = dbError.message ?? "\(dbError.extendedResultCode)"
        var context = ["path": path, "sqliteCode": String(dbError.extendedResultCode.rawValue)]
        context["sqliteMessage"] = dbError.message
        switch dbError.resultCode {
        case .SQLITE_NOTADB:
            return FlippioError(.notSQLite, "\(path) is not an SQLite database (\(detail)).",
                                remedy: "Choose an SQLite database file, or pull it again if it should be one.",
                                context: context)
        case .SQLITE_CORRUPT:
            return FlippioError(.corruptDatabase, "\(path) is corrupt: \(detail).",
                                remedy: "Restore the file (pull it again, or undo the last edit); a corrupt database is never pushed.",
                                context: context)
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return FlippioError(.databaseBusy, "\(path) is locked by another program (\(detail)).",
                                remedy: "Commit or close the transaction in the program that holds it; the agent retries.",
                                context: context)
        case .SQLITE_READONLY where dbError.extendedResultCode == .SQLITE_READONLY_ROLLBACK:
            return FlippioError(.databaseBusy, "\(path) has a hot journal left by a program that crashed mid-transaction.",
                                remedy: "Open the database once with sqlite3 (or your editor) so SQLite rolls the interrupted transaction back.",
                                context: context)
        case .SQLITE_CANTOPEN where !FileManager.default.fileExists(atPath: path):
            return FlippioError(.databaseMissing, "\(path) does not exist.",
                                remedy: "Pull the database again, or run `flippio forget` to stop tracking it.",
                                context: context)
        case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_AUTH:
            return FlippioError(.permissionDenied, "Could not open \(path): \(detail).",
                                remedy: "Check the permissions of the file and of its folder (SQLite needs to create the -shm file for WAL databases).",
                                context: context)
        case .SQLITE_FULL:
            return FlippioError(.workspaceWriteFailed, "Could not \(action) \(path): the disk is full.",
                                remedy: "Free some disk space; the edit stays local and is pushed once space is back.",
                                context: context)
        default:
            return FlippioError(.internalError, "Could not \(action) \(path): \(detail).",
                                remedy: "Check the file with `sqlite3 \(path) 'PRAGMA integrity_check'`; if it is fine, report this with the log.",
                                context: context)
        }
    }
}
