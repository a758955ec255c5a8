import Foundation
import Logging

// MARK: - Following: the app's changes into the local copy

extension PushPipeline {
    /// What a bring-in did (``bringIn(_:lockTimeout:)``).
    public enum BringInOutcome: Sendable, Equatable {
        /// The device holds the version last agreed on (fingerprint): nothing was pulled. Our own
        /// push comes back as this: the fingerprint it recorded is the device's new one.
        case unchanged
        /// The device's bytes changed, its rows did not (the app reopened its database in WAL
        /// mode, a no-op write): only the new fingerprint was recorded.
        case sameContent
        /// The app's changes are in the live local file (`rows` inserted, updated or deleted),
        /// and the device's version is the new base.
        case broughtIn(rows: Int)
        /// The local copy changed too: nothing was written; a push merges both sides.
        case localChanged
        /// The database is no longer tracked.
        case forgotten
        /// Nothing was written (a busy local file, a device gone, a timeout).
        case failed(FlippioError)
    }

    /// Brings the app's change into the live local copy, the row "device changed, local same" of
    /// DESIGN.md §6.
    ///
    /// Under the database's lock (so it never overlaps a push, `pull`, `resolve`):
    ///
    /// 1. Fingerprint the device. The version last agreed on → ``BringInOutcome/unchanged``: one
    ///    `sha256sum` is all a spurious event (or our own push's rename) costs.
    /// 2. Snapshot the local copy. Changed since the base (by content) → ``BringInOutcome/localChanged``:
    ///    the push path pulls, merges row by row and pushes.
    /// 3. Pull the device's version (reading needs no stop: the app keeps running). Same rows as
    ///    the base → record the fingerprint only.
    /// 4. Apply the changeset base→device to the live file through SQLite in one IMMEDIATE
    ///    transaction (``ChangesetApplier``; busy timeout, a few attempts): an editor that has the
    ///    file open sees the rows, and the file is never replaced. A lock the user's tool holds
    ///    through every attempt is waited out, never broken: ``FlippioError/Code/databaseBusy``
    ///    (retryable) and the caller tries again after a backoff.
    /// 5. The pulled version becomes the base; the sidecar records its fingerprint and content and
    ///    ``Sidecar/localWrittenByMerge``, so the next look at the local file recognises the rows
    ///    written as the device's by content and pushes nothing back.
    ///
    /// - parameter lockTimeout: how long to wait for another process working on the same database.
    /// - returns: never throws; failures are ``BringInOutcome/failed(_:)``.
    public func bringIn(_ database: URL, lockTimeout: Duration) async -> BringInOutcome {
        do {
            return try await holdingLock(of: database, timeout: lockTimeout) { try await bringInLocked(database) } ?? .forgotten
        } catch let error as FlippioError {
            return .failed(error)
        } catch {
            return .failed(FlippioError.internalError("Bringing the app's change into \(database.path) failed: \(error)"))
        }
    }

    private func bringInLocked(_ database: URL) async throws -> BringInOutcome {
        var sidecar = try SidecarStore.load(forDatabase: database)
        let remote = sidecar.origin.remoteDatabase
        let logger = Logger.forDatabase(sidecar.origin, file: database, base: self.logger)
        // A conflict waits for the user; a push whose result was not recorded is the push path's.
        if sidecar.state == .conflict { return .unchanged }
        if sidecar.pendingPushHash != nil { return .localChanged }

        let bridge = try await bridges.bridge(for: remote.platform)
        let current = try await retry.run("fingerprint \(remote.path)", onRetry: AgentMetrics.shared.retried) {
            try await bridge.fingerprint(remote)
        }
        if current == sidecar.expectedDeviceFingerprint { return .unchanged }

        let bases = BaseStore(workspace: workspace)
        guard let base = bases.existing(for: remote, expectedHash: sidecar.baseHash) else {
            // No common ancestor to take a changeset from: the push path keeps both versions.
            return .localChanged
        }
        let snapshot = try await takeSnapshot(of: database)
        defer { try? FileManager.default.removeItem(at: snapshot.url) }
        let localUnchanged = try snapshot.contentHash == sidecar.deviceContentHash || ContentIdentity.sameContent(snapshot.url, base)
        guard localUnchanged else { return .localChanged }

        let staging = try workspace.scratchDirectory("follow")
        defer { try? FileManager.default.removeItem(at: staging) }
        let pulled = try await retry.run("pull \(remote.path)", onRetry: AgentMetrics.shared.retried) {
            try await bridge.pull(remote, into: staging, progress: nil)
        }
        let summary = try PulledDatabase.fold(pulled.mainFile)
        sidecar.deviceJournalWAL = summary.wasWAL
        if try ContentIdentity.sameContent(base, pulled.mainFile) {
            sidecar.fingerprintAtLastPush = pulled.fingerprint
            try await saveFollowed(sidecar, database)
            return .sameContent
        }

        let rows: Int
        switch try await ChangesetApplier().applyOnOwnThread(base: base, device: pulled.mainFile, toLiveDatabaseAt: database) {
        case .applied(let count):
            rows = count
        case .conflict(let detail):
            // The user wrote the same rows between the snapshot and the write: both changed.
            logger.debug("the local copy changed while the app's rows were brought in: \(detail.explanation)")
            return .localChanged
        }
        let device = try Upload(pulled.mainFile, rowCounts: [:])
        try bases.save(pulled.mainFile, for: remote)
        sidecar.baseHash = try device.contentHash
        sidecar.deviceContentHash = try device.contentHash
        sidecar.fingerprintAtLastPush = pulled.fingerprint
        sidecar.localWrittenByMerge = true
        sidecar.lastRowCounts = device.rowCounts
        sidecar.lastError = nil
        sidecar.nextRetryAt = nil
        try await saveFollowed(sidecar, database)
        AgentMetrics.shared.broughtIn(rows)
        return .broughtIn(rows: rows)
    }

    /// Writes `sidecar` (read under the lock the bring-in holds, so not stale).
    private func saveFollowed(_ sidecar: Sidecar, _ database: URL) async throws {
        var sidecar = sidecar
        sidecar.updatedAt = Date()
        try await sidecars.write(sidecar, forDatabase: database)
    }
}
