import Foundation
import GRDB

/// Replaces a local copy's content with a version from the device (`flippio pull` again,
/// `resolve --keep-device`) without losing anything and without replacing the file.
///
/// Two promises:
///
/// - **No edit is lost.** ``refuseUnpushedEdits()`` stops when the copy holds changes the device
///   does not have (the caller asks again after the transfer: a save can land meanwhile), and
///   ``replace(with:stagedFile:keepingOld:)`` keeps the old copy first (as `x.local-<time>.db`,
///   its `-wal` folded in, checked) when asked to, or when nothing tracked it; if that copy cannot
///   be made, nothing is replaced.
/// - **Open editors keep a valid view.** The new content is written *into* the existing file with
///   SQLite's backup API, under SQLite's own locking: an editor that has the file open sees the new
///   rows, and its next write goes to the live file, not to an unlinked inode as after a rename.
///
/// The caller holds the database's lock (``Workspace/lock(for:)``) throughout.
struct LocalReplacement {
    let database: URL
    let pipeline: PushPipeline

    /// Throws ``FlippioError/Code/unpushedChanges`` when the local copy holds edits that are not on
    /// the device (or is in conflict, or cannot be read to tell). Nothing to lose: returns.
    func refuseUnpushedEdits() async throws {
        guard FileManager.default.fileExists(atPath: database.path),
              var sidecar = try? SidecarStore.load(forDatabase: database) else { return }
        if sidecar.state == .conflict {
            throw FlippioError.unpushedChanges(database, why: "it is in conflict with the device")
        }
        let snapshot: Snapshot
        do {
            snapshot = try await pipeline.takeSnapshot(of: database)
        } catch let error as FlippioError where error.code == .notSQLite || error.code == .corruptDatabase {
            throw FlippioError.unpushedChanges(database, why: "it cannot be read as a database (\(error.message))")
        }
        defer { try? FileManager.default.removeItem(at: snapshot.url) }
        try PushPipeline.migrateContentHashes(&sidecar, snapshot: snapshot)
        if try snapshot.contentHash != sidecar.deviceContentHash {
            throw FlippioError.unpushedChanges(database, why: "it has changes that are not on the device yet")
        }
    }

    /// Writes the content of `staged` (a pulled, folded, checked file at `stagedFile`) into the
    /// local copy.
    ///
    /// - parameter keepingOld: keep the old copy as `x.local-<time>.db` first. An untracked file at
    ///   the same path is always kept.
    /// - returns: where the old copy was kept, if it was.
    /// - throws: ``FlippioError/Code/workspaceWriteFailed`` when the old copy cannot be kept (nothing
    ///   is replaced), ``FlippioError/Code/databaseBusy`` when an editor holds a write lock longer
    ///   than the busy timeout, the errors of the backup.
    func replace(with staged: DatabaseQueue, stagedFile: URL, keepingOld: Bool) async throws -> URL? {
        guard FileManager.default.fileExists(atPath: database.path) else {
            // First pull: nothing is open yet, so one rename puts the file in place.
            try Self.removeSideFiles(of: database)
            try DatabaseInspector.syncToDisk(fileAt: stagedFile)
            guard rename(stagedFile.path, database.path) == 0 else {
                throw FlippioError.workspaceWriteFailed(path: database.path, errno: errno)
            }
            return nil
        }
        let tracked = (try? SidecarStore.load(forDatabase: database)) != nil
        let kept = keepingOld || !tracked ? try await keepOldCopy() : nil
        do {
            var configuration = Configuration()
            configuration.label = "flippio.replace"
            configuration.busyMode = .timeout(10)
            let destination = try DatabaseQueue(path: database.path, configuration: configuration)
            defer { try? destination.close() }
            try staged.backup(to: destination)
        } catch {
            let failure = FlippioError.database(error, path: database.path, action: "write the pulled version into")
            // A file SQLite cannot read has no editor with a valid view: once its bytes are kept,
            // the pulled file takes its place.
            guard kept != nil, failure.code == .notSQLite || failure.code == .corruptDatabase else { throw failure }
            try Self.removeSideFiles(of: database)
            try DatabaseInspector.syncToDisk(fileAt: stagedFile)
            guard rename(stagedFile.path, database.path) == 0 else {
                throw FlippioError.workspaceWriteFailed(path: database.path, errno: errno)
            }
        }
        return kept
    }

    /// Keeps the current local copy beside it as `x.local-<time>.db`: a snapshot through SQLite
    /// (its `-wal` folded in, `quick_check`ed), or its bytes as they are when SQLite cannot read it.
    private func keepOldCopy() async throws -> URL {
        let copy = PushPipeline.siblingCopyURL(for: database, tag: "local", at: Date())
        do {
            let snapshot: Snapshot
            do {
                snapshot = try await pipeline.takeSnapshot(of: database)
            } catch let error as FlippioError where error.code == .notSQLite || error.code == .corruptDatabase {
                try FileManager.default.copyItem(at: database, to: copy)
                return copy
            }
            try FileManager.default.moveItem(at: snapshot.url, to: copy)
            return copy
        } catch {
            throw FlippioError(.workspaceWriteFailed,
                               "Could not keep the local copy \(database.path) as \(copy.lastPathComponent) (\(error)); nothing was replaced.",
                               remedy: "Free some disk space or fix the folder's permissions, then try again.",
                               context: ["path": database.path, "copy": copy.path])
        }
    }

    private static func removeSideFiles(of database: URL) throws {
        for side in DatabaseInspector.sideFiles(of: database) where unlink(side.path) != 0 && errno != ENOENT {
            throw FlippioError.workspaceWriteFailed(path: side.path, errno: errno)
        }
    }
}

extension FlippioError {
    static func unpushedChanges(_ database: URL, why: String) -> FlippioError {
        FlippioError(.unpushedChanges, "\(database.path) was not replaced: \(why).",
                     remedy: "Push them with `flippio push \(database.path)` (or end the conflict with `flippio resolve`), or pull again with --overwrite: your copy is then kept beside it as .local-<time>.",
                     context: ["path": database.path])
    }
}
