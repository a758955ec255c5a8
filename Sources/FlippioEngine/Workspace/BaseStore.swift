import Foundation

/// The common ancestor of each tracked database: the exact content last agreed with the device
/// (the pulled copy with its WAL folded in, then each verified push), kept in
/// `<workspace>/.flippio/base/<identity>.db`.
///
/// A three-way merge needs it: "changed" is judged against it on both sides, and the changesets
/// base→local and base→device are what get merged. Copies are written atomically (a temp file in
/// the same folder, fsync, rename), so a crash leaves the old base or the new one; a snapshot is
/// adopted by a rename alone (``adopt(_:for:)``), and after a page delta the base takes the same
/// pages in place (``update(with:from:for:)``), so a crash may leave no base or a damaged one. The
/// sidecar records the base's content hash (``Sidecar/baseHash``); ``url(for:)`` is only to be trusted
/// when that hash matches.
///
/// For example:
///
/// ```swift
/// let bases = BaseStore(workspace: workspace)
/// try bases.save(snapshot.url, for: remote)       // after a verified push
/// if let base = bases.existing(for: remote) { ... }
/// ```
public struct BaseStore: Sendable {
    public let workspace: Workspace

    public init(workspace: Workspace) {
        self.workspace = workspace
    }

    /// Where the base of `database` lives (whether or not it exists yet).
    public func url(for database: RemoteDatabase) -> URL {
        workspace.stateDirectory.appendingPathComponent("base/\(Workspace.identityKey(for: database)).db")
    }

    /// The base of `database`, when one was kept and its content is `expectedHash` (a base that
    /// does not match its sidecar is not a common ancestor of anything).
    public func existing(for database: RemoteDatabase, expectedHash: String?) -> URL? {
        let url = url(for: database)
        guard let expectedHash, FileManager.default.fileExists(atPath: url.path),
              (try? ContentHash.sha256(databaseAt: url)) == expectedHash else { return nil }
        return url
    }

    /// Makes a copy of `file` (a snapshot, pulled or merged file: never the live local copy) the
    /// base of `database`, atomically.
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed``.
    public func save(_ file: URL, for database: RemoteDatabase) throws {
        let folder = try workspace.stateSubdirectory("base")
        let target = url(for: database)
        let temp = folder.appendingPathComponent(".\(target.lastPathComponent).\(UUID().uuidString.prefix(8)).tmp")
        do {
            try FileManager.default.copyItem(at: file, to: temp)
            try DatabaseInspector.syncToDisk(fileAt: temp)
        } catch {
            unlink(temp.path)
            throw FlippioError.workspaceWriteFailed(path: target.path, errno: errno == 0 ? EIO : errno)
        }
        guard rename(temp.path, target.path) == 0 else {
            let code = errno
            unlink(temp.path)
            throw FlippioError.workspaceWriteFailed(path: target.path, errno: code)
        }
    }

    /// Makes `file` itself the base of `database`: renamed into place (copied when it lies on
    /// another file system), so that the snapshot a push sent becomes the base without a second
    /// whole-file copy.
    ///
    /// Not synced to disk, and the old base is unlinked before the rename: a base is never trusted
    /// without its hash (``existing(for:expectedHash:)`` re-hashes it before a merge; a page delta
    /// computed against a damaged base fails the device's SHA-256 check and goes as a whole file),
    /// so a crash that loses it costs a whole-file push or a conflict copy, never a wrong file.
    /// Renaming over an existing file would make ext4 start writing the new one out at once
    /// (`auto_da_alloc`), and the next fsync anywhere on the disk, the sidecar's, would wait for
    /// all of it: 0.2 s per 200 MB here.
    ///
    /// - Important: `file` is consumed (gone afterwards): only for a file nothing reads after the
    ///   push, never the live local copy.
    /// - throws: ``FlippioError/Code/workspaceWriteFailed``.
    public func adopt(_ file: URL, for database: RemoteDatabase) throws {
        _ = try workspace.stateSubdirectory("base")
        let target = url(for: database)
        unlink(target.path)
        if rename(file.path, target.path) == 0 { return }
        let code = errno
        guard code == EXDEV else { throw FlippioError.workspaceWriteFailed(path: target.path, errno: code) }
        try save(file, for: database)
        unlink(file.path)
    }

    /// Writes the pages of `delta` from `snapshot` into the base of `database`, in place, after
    /// the device took the same delta: the base is then byte for byte the snapshot, and only the
    /// changed pages were written. `delta` must have been computed against this base.
    ///
    /// Not synced, like ``adopt(_:for:)``: a crash half-way leaves a base whose hash is not the
    /// sidecar's, which is then not trusted (a whole-file push, or a conflict copy instead of a
    /// merge). When the write fails, the snapshot is adopted instead.
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed``.
    public func update(with delta: PageDelta, from snapshot: URL, for database: RemoteDatabase) throws {
        let target = url(for: database)
        do {
            guard try ContentIdentity.fileSize(target) == delta.baseSize else {
                throw FlippioError.workspaceWriteFailed(path: target.path, errno: ESTALE)
            }
            try delta.writePages(from: snapshot, into: target)
        } catch {
            try adopt(snapshot, for: database)
        }
    }

    /// Removes the base of `database` (`flippio forget`).
    public func remove(for database: RemoteDatabase) {
        unlink(url(for: database).path)
    }
}
