import Foundation
import Logging

/// One push of one tracked database, start to finish: the steps both `flippio push` and the
/// agent run, in DESIGN.md's order.
///
/// 1. Take the database's lock (its identity is the device and device path, not a local
///    spelling), so the agent, `flippio push`, `pull`, `resolve` and `forget` never overlap on it.
/// 2. Read the sidecar fresh from disk: it is the source of truth, whoever wrote it last. Gone
///    means forgotten (``Outcome/forgotten``); in conflict means nothing is pushed until resolved.
/// 3. Snapshot the committed state through the warm connection, `quick_check` it, hash its
///    content. A file SQLite cannot read is never pushed (``Outcome/invalid(_:)``).
/// 4. Equal to what the device already has? Nothing to push (``Outcome/unchanged``).
/// 5. Stop the app (configurable), then compare the device's fingerprint with the one expected.
///    If the app wrote its copy since, that is a conflict: nothing is overwritten, the device's
///    version is pulled beside the local one (``Outcome/conflict(copy:)``). When the sidecar says
///    the device holds exactly the base, a page delta goes first, without that look: its
///    device-side script makes the same comparison before its rename and refuses on a difference,
///    and the look follows (``pushByDeltaFirst(_:sidecar:database:bridge:appStopped:logger:)``).
///    The app is then stopped while the patch is uploaded; the script waits for the stop, and the
///    snapshot's content hash, needed only to record the push, is computed meanwhile.
/// 6. Record the push as pending in the sidecar (so a crash after the device `mv` is recognised on
///    restart instead of being mistaken for a conflict), push with retries, verify by hash.
/// 7. Record the new fingerprint and content hash, and the push in the history.
///
/// The pipeline never leaves the device with a partial file: the bridges upload to a temp name
/// and rename it over the target, and only if the device still holds the expected version.
public struct PushPipeline: Sendable {
    /// What a push did.
    public enum Outcome: Sendable, Equatable {
        case pushed(Sidecar.PushRecord)
        /// The content equals what the device has: nothing was sent.
        case unchanged
        /// The app changed its copy; its version was saved at `copy`.
        case conflict(copy: URL)
        /// The local copy is not a database that can be pushed.
        case invalid(FlippioError)
        /// The database is no longer tracked (its sidecar is gone): nothing was done.
        case forgotten
        /// The push failed; nothing on the device changed (or it holds the old or the new file).
        case failed(FlippioError)
    }

    /// Which device version a push may replace.
    public enum Mode: Sendable, Equatable {
        /// Only the version last pulled or pushed, and only when the content differs.
        case normal
        /// The same, but push even when the content equals the device's (`flippio push --force`).
        case force
        /// End a conflict: replace exactly the device version that was saved as the conflict copy
        /// (`resolve --keep-local`). A device that changed again since is a new conflict.
        case keepLocal
        /// End a conflict by merging row by row, taking this side's version of the rows changed on
        /// both (`resolve --merge-prefer`); the same compare-and-swap as ``keepLocal``.
        case mergePrefer(ThreeWayMerge.Preference)
    }

    public let workspace: Workspace
    public let sidecars: SidecarStore
    public let pool: ConnectionPool
    public let bridges: BridgeProvider
    public let stopAppBeforePush: Bool
    public let retry: RetryPolicy
    public let logger: Logger
    /// Start the app again after a verified push (`--restart-app`). The default is false.
    public var restartAppAfterPush = false
    /// A page delta is sent instead of the whole file when it is smaller than this fraction of
    /// the file (see ``FlippioConfiguration/deltaThreshold``); 0 turns deltas off. The default is 0.5.
    public var deltaThreshold = 0.5

    public init(workspace: Workspace, sidecars: SidecarStore, pool: ConnectionPool, bridges: BridgeProvider,
                stopAppBeforePush: Bool, retry: RetryPolicy, logger: Logger) {
        self.workspace = workspace
        self.sidecars = sidecars
        self.pool = pool
        self.bridges = bridges
        self.stopAppBeforePush = stopAppBeforePush
        self.retry = retry
        self.logger = logger
    }

    /// Pushes `database` if its content differs from the device's (see ``Mode``).
    ///
    /// - parameter lockTimeout: how long to wait for another process working on the same database.
    public func push(_ database: URL, mode: Mode = .normal, lockTimeout: Duration = .seconds(120)) async -> Outcome {
        do {
            return try await holdingLock(of: database, timeout: lockTimeout) { try await pushLocked(database, mode: mode) } ?? .forgotten
        } catch let error as FlippioError {
            return .failed(error)
        } catch {
            return .failed(FlippioError.internalError("Push of \(database.path) failed: \(error)"))
        }
    }

    /// Runs `body` holding the database's lock (its identity read from the sidecar); nil when the
    /// database is not tracked (any more): forgotten before or while waiting for the lock.
    func holdingLock<T>(of database: URL, timeout: Duration, _ body: () async throws -> T) async throws -> T? {
        let origin: Sidecar.Origin
        do {
            origin = try SidecarStore.load(forDatabase: database).origin
        } catch FlippioError.notTracked {
            return nil
        }
        let lock = try workspace.lock(for: origin.remoteDatabase)
        try await lock.acquire(timeout: timeout)
        defer { lock.release() }
        do {
            return try await body()
        } catch FlippioError.notTracked {
            return nil
        }
    }

    private func pushLocked(_ database: URL, mode: Mode) async throws -> Outcome {
        let started = ContinuousClock.now
        var sidecar = try SidecarStore.load(forDatabase: database)
        let logger = Logger.forDatabase(sidecar.origin, file: database, base: self.logger)
        let remote = sidecar.origin.remoteDatabase
        if sidecar.state == .conflict && (mode == .normal || mode == .force) {
            return .conflict(copy: sidecar.conflictCopy.map { URL(fileURLWithPath: $0) } ?? database)
        }

        // 3. Snapshot.
        var steps = StepTimes()
        let snapshot: Snapshot
        // With a base and deltas on, the copy is compared with the base on the way.
        let base = BaseStore(workspace: workspace).url(for: remote)
        let deltaPossible = deltaThreshold > 0 && mode == .normal && sidecar.baseHash != nil
        // A page delta sent first (5a) needs the content hash only to record the push: it is
        // computed while the device works, unless the snapshot may turn out unchanged (below).
        let deltaFirstLikely = deltaPossible && Self.takesDeltaFirst(sidecar)
        do {
            snapshot = try await takeSnapshot(of: database, comparingWith: deltaPossible ? base : nil,
                                              defersContentHash: deltaFirstLikely)
        } catch let error as FlippioError where error.code == .notSQLite || error.code == .corruptDatabase || error.code == .databaseMissing {
            sidecar.state = .invalid
            sidecar.lastError = .init(error, at: Date())
            try await save(sidecar, database)
            return .invalid(error)
        }
        defer { try? FileManager.default.removeItem(at: snapshot.url) }
        steps.lap("snapshot (copy, quick_check, hash)")
        logger.trace("push: snapshot: \(snapshot.steps)")

        // 4. Nothing new for the device? Known without the content hash when a page the content
        // hash covers differs from the base, which is what the device holds (see takesDeltaFirst).
        let changedForSure = deltaFirstLikely && Self.differsFromBase(snapshot, base: base)
        if !changedForSure {
            try Self.migrateContentHashes(&sidecar, snapshot: snapshot)
            sidecar.localContentHash = try snapshot.contentHash
        }
        // After a merge wrote the device's rows into the copy, its pages differ from the device's
        // although its rows do not: compare by content once.
        if sidecar.localWrittenByMerge == true, try snapshot.contentHash != sidecar.deviceContentHash {
            let bases = BaseStore(workspace: workspace)
            if let base = bases.existing(for: remote, expectedHash: sidecar.baseHash),
               (try? ContentIdentity.sameContent(snapshot.url, base)) == true {
                sidecar.deviceContentHash = try snapshot.contentHash
            }
        }
        sidecar.localWrittenByMerge = nil
        if !changedForSure, try snapshot.contentHash == sidecar.deviceContentHash && mode == .normal && sidecar.pendingPushHash == nil {
            sidecar.state = .clean
            sidecar.lastError = nil
            sidecar.nextRetryAt = nil
            try await save(sidecar, database)
            return .unchanged
        }

        let bridge = try await bridges.bridge(for: sidecar.origin.platform)

        // 5. Stop the app, then look at what the device holds now. A page delta sent first (5a)
        // uploads its patch meanwhile, and its device-side script waits for the stop.
        let retry = self.retry
        let stop: Task<Void, any Error>? = stopAppBeforePush ? Task {
            try await retry.run("stop \(remote.appID)", onRetry: AgentMetrics.shared.retried) {
                try await bridge.stopApp(deviceID: remote.deviceID, appID: remote.appID)
            }
        } : nil
        let appStopped: @Sendable () async throws -> Void = { try await stop?.value }
        // 5a. A device expected to hold exactly the base takes a page delta without a look first
        // (its script compares the fingerprint before the rename, as for every push).
        var deltaConsidered = false
        if mode == .normal {
            let first = try await pushByDeltaFirst(Upload(snapshot), sidecar: &sidecar, database: database, bridge: bridge,
                                                   appStopped: appStopped, logger: logger)
            // Waits for a content hash still being computed: everything below may read or
            // rewrite the snapshot.
            sidecar.localContentHash = try snapshot.contentHash
            switch first {
            case .sent(let sent):
                steps.lap("the page delta push")
                return try await recordPush(sent, upload: Upload(snapshot), merge: nil, expectedAtSwap: sidecar.expectedDeviceFingerprint,
                                            snapshot: snapshot, sidecar: &sidecar, database: database, started: started,
                                            steps: &steps, logger: logger)
            case .fallBack:
                deltaConsidered = true
                steps.lap("the page delta, not sent or not landed")
            case .notTried:
                break
            }
        }
        try await appStopped()
        if stopAppBeforePush { steps.lap("stopping the app") }
        let current = try await retry.run("fingerprint \(remote.path)", onRetry: AgentMetrics.shared.retried) { try await bridge.fingerprint(remote) }
        steps.lap("the device's fingerprint")
        var upload = Upload(snapshot)
        var expectedAtSwap = current
        var merge: MergedPush?
        // Only a device that holds exactly what the sidecar expects can take a page delta.
        let deviceAsExpected = current == sidecar.expectedDeviceFingerprint && sidecar.pendingPushHash == nil
        switch mode {
        case .keepLocal, .mergePrefer:
            let saved = sidecar.conflictFingerprint ?? sidecar.expectedDeviceFingerprint
            if current != saved {
                logger.notice("the app changed its copy again since the conflict; that is a new conflict",
                              metadata: ["saved": "\(saved)", "now": "\(current)"])
                return try await recordConflict(&sidecar, database: database, remote: remote, bridge: bridge)
            }
            if case .mergePrefer(let side) = mode {
                merge = try mergeForResolution(sidecar, remote: remote, snapshot: snapshot, preferring: side)
                upload = try Upload(merge!.file, rowCounts: snapshot.tableRowCounts)
            }
        case .normal, .force:
            if current != sidecar.expectedDeviceFingerprint {
                if let pending = sidecar.pendingPushHash, current == DeviceFingerprint(mainHash: pending) {
                    // An earlier push reached the device but its result was never recorded (the agent
                    // was killed after the `mv`): adopt it rather than calling it a conflict.
                    // Its upload may still lie in the device's temp folder (the push was cut before its
                    // clean-up), so the push below runs even when the content is the same: the bridge
                    // overwrites and then removes its temp files, and the result is verified again.
                    logger.notice("adopting an earlier push found on the device; pushing it again to finish its clean-up")
                    sidecar.fingerprintAtLastPush = current
                    sidecar.pendingPushHash = nil
                } else if sidecar.pendingPushHash != nil,
                          Self.isUnfinishedSwap(current, expected: sidecar.expectedDeviceFingerprint) {
                    // iOS swaps in separate AFC calls: an earlier push removed the stale -wal/-shm
                    // and was cut before its rename. The main file is the one expected, the journals
                    // are gone because we removed them (that push had already checked them): finish
                    // the push over what is there now instead of calling it a conflict.
                    logger.notice("finishing an earlier push that was cut between removing the journals and the rename")
                    expectedAtSwap = current
                } else {
                    switch try await reconcile(&sidecar, database: database, remote: remote, snapshot: snapshot, bridge: bridge) {
                    case .sameContent(let fingerprint):
                        expectedAtSwap = fingerprint
                    case .merged(let merged, let fingerprint):
                        merge = merged
                        upload = try Upload(merged.file, rowCounts: snapshot.tableRowCounts)
                        expectedAtSwap = fingerprint
                    case .conflict(let outcome):
                        return outcome
                    }
                }
            }
        }
        defer { if let merge { try? FileManager.default.removeItem(at: merge.file.deletingLastPathComponent()) } }
        // The app's journal mode stays as it was: a WAL database is pushed in WAL mode (with no
        // -wal), so the app's next open rewrites nothing.
        if sidecar.deviceJournalWAL == true { upload = try upload.inWALMode() }

        // 6. Push, recorded as pending first.
        sidecar.state = .pushing
        sidecar.pendingPushHash = upload.fileHash
        try await save(sidecar, database)
        steps.lap("preparing the upload")

        // The bridge replaces nothing if the device no longer holds `expectedAtSwap` at the rename
        // (an app that was not stopped wrote meanwhile): that is a conflict like the one above.
        let sent: Sent
        do {
            if merge == nil, !deltaConsidered, let delta = try await pushByDelta(upload, to: remote, sidecar: sidecar, expecting: expectedAtSwap,
                                                               deviceAsExpected: deviceAsExpected, bridge: bridge, logger: logger) {
                sent = delta
            } else {
                let fingerprint = try await retry.run("push \(remote.path)", onRetry: AgentMetrics.shared.retried) {
                    try await bridge.push(snapshot: upload.file, snapshotHash: upload.fileHash, to: remote,
                                          expecting: expectedAtSwap, progress: nil)
                }
                sent = Sent(fingerprint: fingerprint, bytes: upload.size)
            }
        } catch let error as FlippioError where error.code == .conflict {
            // A retry after an attempt whose rename landed (its verification was cut off) finds
            // our own file: that is the push done, not a conflict.
            if let now = try? await bridge.fingerprint(remote), now == DeviceFingerprint(mainHash: upload.fileHash) {
                sent = Sent(fingerprint: now, bytes: upload.size)
            } else {
                logger.notice("the app wrote its copy during the push; nothing was replaced", metadata: ["error": "\(error.message)"])
                sidecar.pendingPushHash = nil
                return try await recordConflict(&sidecar, database: database, remote: remote, bridge: bridge)
            }
        } catch {
            // Nothing replaced, or the verification failed: the pending record stays, so a later
            // look that finds our file on the device adopts it.
            sidecar.state = .dirty
            try? await save(sidecar, database)
            throw error
        }

        steps.lap(sent.viaDelta ? "the page delta push" : "the whole-file push")
        return try await recordPush(sent, upload: upload, merge: merge, expectedAtSwap: expectedAtSwap, snapshot: snapshot,
                                    sidecar: &sidecar, database: database, started: started, steps: &steps, logger: logger)
    }

    /// 7. Records a verified push: the pushed content is the new common ancestor (the base), its
    /// fingerprint what the device now holds; a merge's rows come into the local copy.
    private func recordPush(_ sent: Sent, upload: Upload, merge: MergedPush?, expectedAtSwap: DeviceFingerprint, snapshot: Snapshot,
                            sidecar: inout Sidecar, database: URL, started: ContinuousClock.Instant, steps: inout StepTimes,
                            logger: Logger) async throws -> Outcome {
        let remote = sidecar.origin.remoteDatabase
        let elapsed = ContinuousClock.now - started
        var record = Sidecar.PushRecord(
            at: Date(), contentHash: try upload.contentHash, bytes: upload.size,
            durationMilliseconds: Int(elapsed.milliseconds),
            changedTables: Snapshotter.rowCountChanges(from: sidecar.lastRowCounts ?? [:], to: upload.rowCounts))
        record.viaDelta = sent.viaDelta
        record.bytesSent = sent.bytes
        let fingerprint = sent.fingerprint
        logger.info(sent.viaDelta ? "pushed by page delta" : "pushed the whole file",
                    metadata: ["bytesSent": "\(sent.bytes)", "fileBytes": "\(upload.size)", "ms": "\(record.durationMilliseconds)"])
        let bases = BaseStore(workspace: workspace)
        if let delta = sent.delta, merge == nil {
            // The device took the pages that differ from the base: so does the base, in place.
            // The snapshot is then deleted before the kernel writes it out (a snapshot adopted as
            // the base was 200 MB of disk writes per push, which slowed the next snapshot's copy).
            try bases.update(with: delta, from: upload.file, for: remote)
        } else if merge == nil {
            // The snapshot is not read again (only a merge brings its rows into the local copy):
            // it becomes the base as it is, without another copy of the whole file.
            try bases.adopt(upload.file, for: remote)
        } else {
            try bases.save(upload.file, for: remote)
        }
        sidecar.baseHash = try upload.contentHash
        sidecar.fingerprintAtLastPush = fingerprint
        sidecar.deviceContentHash = try upload.contentHash
        if let merge {
            record.merged = .init(rowsFromDevice: merge.result.rowsFromDevice, rowsFromDesktop: merge.result.rowsFromDesktop)
            AgentMetrics.shared.merged()
            await bringMergedRowsIn(merge, to: database, expectedAtSwap: expectedAtSwap, snapshot: snapshot,
                              remote: remote, sidecar: &sidecar, logger: logger)
        }
        sidecar.lastRowCounts = upload.rowCounts
        sidecar.pendingPushHash = nil
        sidecar.state = .clean
        sidecar.lastError = nil
        sidecar.nextRetryAt = nil
        sidecar.conflictCopy = nil
        sidecar.conflictFingerprint = nil
        sidecar.conflictDetail = nil
        if restartAppAfterPush {
            let started = await AppLauncher(bridges: bridges, logger: logger)
                .start(platform: remote.platform, deviceID: remote.deviceID, appID: remote.appID)
            record.appRestarted = started == .started
        }
        sidecar.recordPush(record)
        try await save(sidecar, database)
        steps.lap("the new base and the sidecar")
        logger.debug("push steps: \(steps)")
        return .pushed(record)
    }

    /// Whether `current` is what a push of ours leaves when it is cut after removing the stale
    /// journals and before its rename: the expected main file, and no `-wal`/`-journal` where the
    /// expected version had one. Only meaningful while a push is recorded as pending.
    static func isUnfinishedSwap(_ current: DeviceFingerprint, expected: DeviceFingerprint) -> Bool {
        current.mainHash != nil && current.mainHash == expected.mainHash
            && current.walHash == nil && current.journalHash == nil
            && (expected.walHash != nil || expected.journalHash != nil)
    }

    /// Writes `sidecar` (read under the lock this push holds, so not stale).
    func save(_ sidecar: Sidecar, _ database: URL) async throws {
        var sidecar = sidecar
        sidecar.updatedAt = Date()
        try await sidecars.write(sidecar, forDatabase: database)
    }

    /// Whether a push of `sidecar`'s database will most likely start with a page delta
    /// (``pushByDeltaFirst(_:sidecar:database:bridge:appStopped:logger:)``) to a device that holds the base's
    /// content, with no step before it that needs the snapshot's content hash: no push pending, no
    /// merge's rows just written in, no WAL device, hashes of the current scheme.
    static func takesDeltaFirst(_ sidecar: Sidecar) -> Bool {
        triesDeltaFirst(sidecar) && sidecar.baseHash != nil && sidecar.deviceContentHash == sidecar.baseHash
            && sidecar.localWrittenByMerge != true && sidecar.state != .conflict
            && (sidecar.contentHashScheme ?? 1) >= Sidecar.currentContentHashScheme
    }

    /// Whether `snapshot`'s content surely differs from the base at `base`: its comparison with
    /// that file (made while copying) found a changed page after the first (the content hash
    /// masks only bytes of the first page) or another size.
    ///
    /// A base file that is not what the sidecar says can make this true for an unchanged copy:
    /// the push that follows then sends the same content again, which costs time, never data.
    static func differsFromBase(_ snapshot: Snapshot, base: URL) -> Bool {
        guard let comparison = snapshot.comparison, comparison.base == base else { return false }
        return comparison.baseSize != snapshot.size || comparison.changedPages.contains { $0 > 0 }
    }

    /// Sidecars of earlier versions hold plain file hashes, which include SQLite's version
    /// number. When the snapshot's plain hash equals the recorded one, the content is the same:
    /// record it in the current scheme. Otherwise the content changed and is pushed.
    static func migrateContentHashes(_ sidecar: inout Sidecar, snapshot: Snapshot) throws {
        guard (sidecar.contentHashScheme ?? 1) < Sidecar.currentContentHashScheme else { return }
        if sidecar.deviceContentHash == snapshot.fileHash { sidecar.deviceContentHash = try snapshot.contentHash }
        sidecar.contentHashScheme = Sidecar.currentContentHashScheme
    }

    /// The device changed its copy in a way no merge can settle: keeps the device's version beside
    /// `database` (the one pulled for the merge, or a fresh pull), records the conflict, the
    /// fingerprint of the version kept and what conflicts, no push pending.
    func recordConflict(_ sidecar: inout Sidecar, database: URL, remote: RemoteDatabase, bridge: any DeviceBridge,
                        pulled: (file: URL, fingerprint: DeviceFingerprint)? = nil, detail: MergeConflict? = nil) async throws -> Outcome {
        let copy: URL
        let fingerprint: DeviceFingerprint
        if let pulled {
            copy = Self.conflictCopyURL(for: database, at: Date())
            try FileManager.default.copyItem(at: pulled.file, to: copy)
            fingerprint = pulled.fingerprint
        } else {
            (copy, fingerprint) = try await keepDeviceVersion(of: remote, beside: database, bridge: bridge)
        }
        sidecar.state = .conflict
        sidecar.conflictCopy = copy.path
        sidecar.conflictFingerprint = fingerprint
        sidecar.conflictDetail = detail
        sidecar.pendingPushHash = nil
        sidecar.lastError = .init(FlippioError.conflict(database: database, deviceCopy: copy, detail: detail), at: Date())
        if let detail { AgentMetrics.shared.rowConflicts(detail.rows.count) }
        try await save(sidecar, database)
        return .conflict(copy: copy)
    }

    /// Takes a consistent snapshot of the live local copy through its warm connection, into
    /// this process's scratch folder.
    func takeSnapshot(of database: URL, comparingWith base: URL? = nil, defersContentHash: Bool = false) async throws -> Snapshot {
        guard FileManager.default.fileExists(atPath: database.path) else {
            throw FlippioError(.databaseMissing, "The local copy \(database.path) is gone.",
                               remedy: "Pull it again with `flippio pull`, or stop tracking it with `flippio forget \(database.path)`.")
        }
        var snapshotter = Snapshotter(directory: try workspace.processScratchDirectory())
        snapshotter.comparingWith = base.flatMap { FileManager.default.fileExists(atPath: $0.path) ? $0 : nil }
        snapshotter.defersContentHash = defersContentHash
        let connection = try await pool.connection(for: database)
        return try snapshotter.snapshot(of: connection, named: "snapshot-\(UUID().uuidString).db")
    }

    /// Pulls the device's version of a database to `x.device-<time>.db` beside the local copy,
    /// and returns it with the fingerprint of the version pulled.
    func keepDeviceVersion(of remote: RemoteDatabase, beside database: URL,
                           bridge: any DeviceBridge) async throws -> (copy: URL, fingerprint: DeviceFingerprint) {
        let staging = try workspace.scratchDirectory("conflict")
        defer { try? FileManager.default.removeItem(at: staging) }
        let pulled = try await retry.run("pull \(remote.path)", onRetry: AgentMetrics.shared.retried) { try await bridge.pull(remote, into: staging, progress: nil) }
        _ = try PulledDatabase.fold(pulled.mainFile)
        let copy = Self.conflictCopyURL(for: database, at: Date())
        try FileManager.default.moveItem(at: pulled.mainFile, to: copy)
        return (copy, pulled.fingerprint)
    }

    /// `notes.db` → `notes.device-20261129-174203.db`.
    static func conflictCopyURL(for database: URL, at date: Date) -> URL {
        siblingCopyURL(for: database, tag: "device", at: date)
    }

    /// `notes.db` → `notes.<tag>-20261129-174203.db`, beside it: the names of kept versions.
    /// A name already taken (two versions kept within a second) gets `-2`, `-3`...
    static func siblingCopyURL(for database: URL, tag: String, at date: Date) -> URL {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        let stamp = formatter.string(from: date)
        let ext = database.pathExtension
        let stem = database.deletingPathExtension().lastPathComponent
        let folder = database.deletingLastPathComponent()
        var counter = 1
        while true {
            let unique = counter == 1 ? stamp : "\(stamp)-\(counter)"
            let url = folder.appendingPathComponent(ext.isEmpty ? "\(stem).\(tag)-\(unique)" : "\(stem).\(tag)-\(unique).\(ext)")
            var info = stat()
            if lstat(url.path, &info) != 0 { return url }
            counter += 1
        }
    }
}

extension FlippioError {
    static func conflict(database: URL, deviceCopy: URL, detail: MergeConflict? = nil) -> FlippioError {
        let what = detail.map { " \($0.explanation)" } ?? ""
        return FlippioError(.conflict,
                            "The app changed \(database.lastPathComponent) on the device in a way that cannot be merged with your edit; nothing was overwritten. The device's version is at \(deviceCopy.path).\(what)",
                            remedy: "See the rows with `flippio conflicts \(database.path)`, then `flippio resolve \(database.path)` with --keep-local (push yours), --keep-device (take the device's) or --merge-prefer local|device.",
                            context: ["database": database.path, "deviceCopy": deviceCopy.path])
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
