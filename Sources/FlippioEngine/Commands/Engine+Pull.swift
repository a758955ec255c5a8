import Foundation
import GRDB

extension Engine {
    /// What `flippio pull` did for one database.
    public struct PullReport: Sendable, Codable, Equatable {
        public var remotePath: String
        public var localPath: String
        public var bytes: Int64
        /// Whether the device had a `-wal` that was folded into the copy.
        public var foldedWAL: Bool
        public var tables: [String: Int]
        public var contentHash: String
        /// Where the replaced local copy was kept (`x.local-<time>.db`), when there was one.
        public var keptLocalCopy: String?
    }

    /// Copies databases of `app` into the workspace and starts tracking them.
    ///
    /// `paths` selects databases by absolute device path, by a path relative to the app's folder
    /// (`databases/notes.db`) or by file name; empty means every database the app has.
    ///
    /// - parameter overwrite: replace a local copy that has changes not pushed yet.
    /// - throws: when a selected path is not one of the app's databases, or the device refuses.
    /// - parameter follow: whether the copies follow the app's changes (nil: config `follow`;
    ///   `pull --no-follow` passes false).
    public func pull(device query: String, app: String, paths: [String], overwrite: Bool = false, follow: Bool? = nil,
                     progress: TransferProgress? = nil) async throws -> [PullReport] {
        var times = StepTimes()
        let device = try await device(query)
        times.lap("device")
        let bridge = try await bridges.bridge(for: device.platform)
        let available = try await configuration.retry.run("find databases") {
            try await bridge.databases(deviceID: device.id, appID: app)
        }
        let selected = try Self.select(paths, from: available, app: app)
        times.lap("listing")
        logger.debug("pull from \(device.id) \(app): \(times)")
        var reports: [PullReport] = []
        for remote in selected {
            reports.append(try await pull(remote, device: device, bridge: bridge, overwrite: overwrite, follow: follow, progress: progress))
        }
        return reports
    }

    static func select(_ paths: [String], from available: [RemoteDatabase], app: String) throws -> [RemoteDatabase] {
        guard !paths.isEmpty else {
            guard !available.isEmpty else {
                throw FlippioError(.noSuchFile, "\(app) has no SQLite databases (no file in its folders starts with the SQLite header).",
                                   remedy: "Open the app once so it creates its database, then run `flippio dbs` again.")
            }
            return available
        }
        return try paths.map { path in
            if let exact = available.first(where: { $0.path == path }) { return exact }
            let suffix = path.hasPrefix("/") ? path : "/" + path
            let matches = available.filter { $0.path.hasSuffix(suffix) }
            if matches.count == 1 { return matches[0] }
            let list = available.map(\.path).joined(separator: "\n  ")
            if matches.count > 1 {
                throw FlippioError(.invalidArgument, "\"\(path)\" matches several databases of \(app):\n  \(matches.map(\.path).joined(separator: "\n  "))",
                                   remedy: "Give the full device path.")
            }
            throw FlippioError(.noSuchFile, "\(app) has no database \"\(path)\".",
                               remedy: available.isEmpty ? "The app has no databases yet." : "Its databases are:\n  \(list)")
        }
    }

    /// Pulls one database, holding its lock throughout: device files into a scratch folder, WAL
    /// folded by SQLite, checked, hashed, then written into place and recorded in a new sidecar.
    ///
    /// An existing local copy is never lost: unpushed edits (looked for before the transfer and
    /// again after it, since a save may land meanwhile) stop the pull unless `overwrite`, which
    /// first keeps the old copy as `x.local-<time>.db`. The new content is written *into* the
    /// existing file through SQLite (``LocalReplacement``), so an editor that has it open sees the
    /// new rows and nothing writes to an unlinked file.
    func pull(_ remote: RemoteDatabase, device: Device, bridge: any DeviceBridge, overwrite: Bool, follow: Bool? = nil,
              progress: TransferProgress?) async throws -> PullReport {
        var times = StepTimes()
        let local = try workspace.localURL(for: remote)
        let lock = try workspace.lock(for: remote)
        try await lock.acquire(timeout: .seconds(120))
        defer { lock.release() }

        let replacement = LocalReplacement(database: local, pipeline: pipeline)
        if !overwrite { try await replacement.refuseUnpushedEdits() }
        times.lap("lock and local check")

        let staging = try workspace.scratchDirectory("pull")
        defer { try? FileManager.default.removeItem(at: staging) }
        let pulled = try await configuration.retry.run("pull \(remote.path)") {
            try await bridge.pull(remote, into: staging, progress: progress)
        }
        times.lap("transfer")
        if !FileManager.default.fileExists(atPath: local.path) {
            // It will be renamed into place: start writing it to disk now, while it is checked
            // and snapshotted (LocalReplacement's fsync before the rename then finds it written).
            DatabaseInspector.startSyncToDisk(fileAt: pulled.mainFile)
        }
        // Not synced here: LocalReplacement syncs it when it renames it into place (a first pull);
        // otherwise its content goes into the existing copy through SQLite and it is deleted.
        let summary = try PulledDatabase.fold(pulled.mainFile, syncToDisk: false)
        times.lap("fold")
        // The staging file is ours alone (not a live tracked database), so a short-lived connection is fine.
        let staged = try DatabaseQueue(path: pulled.mainFile.path)
        defer { try? staged.close() }
        var snapshotter = Snapshotter(directory: staging.appendingPathComponent("snapshot", isDirectory: true))
        // fold() has just quick_checked and counted the staged file, which only this process
        // writes: the snapshot is its page-for-page copy, made for its content hash.
        snapshotter.checksCopy = false
        let snapshot = try snapshotter.snapshot(of: staged, named: "pulled")
        times.lap("snapshot")

        // A save during the transfer counts too.
        if !overwrite { try await replacement.refuseUnpushedEdits() }
        let kept = try await replacement.replace(with: staged, stagedFile: pulled.mainFile, keepingOld: overwrite)
        times.lap("into place")

        var sidecar = Sidecar(
            origin: .init(platform: remote.platform, deviceID: device.id, deviceModel: device.model, appID: remote.appID,
                          remotePath: remote.path, access: remote.access),
            pulledAt: Date(), fingerprintAtPull: pulled.fingerprint, contentHash: try snapshot.contentHash)
        sidecar.lastRowCounts = summary.tableRowCounts
        // The common ancestor of later merges: exactly what the device and the copy now agree on.
        // The snapshot is not needed after this, and it is synced: moved, not copied.
        try BaseStore(workspace: workspace).adopt(snapshot.url, for: remote)
        times.lap("base")
        sidecar.baseHash = try snapshot.contentHash
        sidecar.deviceJournalWAL = summary.wasWAL
        sidecar.follow = follow
        try await sidecars.write(sidecar, forDatabase: local, replacingUnreadable: overwrite)
        times.lap("sidecar")
        logger.info("pulled \(remote.path) to \(local.path)")
        logger.debug("pull \(remote.path): \(times)")
        return PullReport(remotePath: remote.path, localPath: local.path, bytes: summary.size,
                          foldedWAL: pulled.walFile != nil, tables: summary.tableRowCounts, contentHash: try snapshot.contentHash,
                          keptLocalCopy: kept?.path)
    }
}
