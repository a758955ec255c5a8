import Foundation
import GRDB
import Logging

// MARK: - Row-level sync: when the device changed too

extension PushPipeline {
    /// The file a push sends, with its hashes: the snapshot, or a merge of it with the device's rows.
    struct Upload {
        var file: URL
        var fileHash: String
        /// ``Snapshot/contentHash`` (which may still be computed: reading it waits).
        var contentHash: String {
            get throws { try contentIdentity.value() }
        }
        var contentIdentity: PendingHash
        var size: Int64
        var rowCounts: [String: Int]
        /// The file's pages compared with the base while the snapshot was copied (only for the
        /// snapshot as taken: a rewritten or merged file is compared again).
        var comparison: PageDelta.Comparison?

        init(_ snapshot: Snapshot) {
            file = snapshot.url
            fileHash = snapshot.fileHash
            contentIdentity = snapshot.contentIdentity
            size = snapshot.size
            rowCounts = snapshot.tableRowCounts
            comparison = snapshot.comparison
        }

        init(_ file: URL, rowCounts: [String: Int]) throws {
            self.file = file
            let hashes = try ContentHash.hashes(ofDatabaseAt: file)
            (contentIdentity, fileHash) = (.known(hashes.content), hashes.file)
            size = DatabaseInspector.fileSize(file)
            self.rowCounts = (try? Self.counts(file)) ?? rowCounts
        }

        /// The same content with header bytes 18–19 saying WAL (and no `-wal` beside it).
        func inWALMode() throws -> Upload {
            do {
                var configuration = Configuration()
                configuration.busyMode = .immediateError
                let queue = try DatabaseQueue(path: file.path, configuration: configuration)
                _ = try queue.writeWithoutTransaction { try String.fetchOne($0, sql: "PRAGMA journal_mode = WAL") }
                try queue.close()  // the last connection checkpoints and removes the -wal
            } catch {
                throw FlippioError.database(error, path: file.path, action: "keep the device's WAL journal mode in")
            }
            return try Upload(file, rowCounts: rowCounts)
        }

        private static func counts(_ file: URL) throws -> [String: Int] {
            var configuration = Configuration()
            configuration.readonly = true
            let queue = try DatabaseQueue(path: file.path, configuration: configuration)
            defer { try? queue.close() }
            return try queue.read { try DatabaseInspector.tableRowCounts($0) }
        }
    }

    /// A merged file about to be pushed.
    struct MergedPush {
        var file: URL
        var result: ThreeWayMerge.Result
    }

    /// What the device's new version means for this push.
    enum Reconciliation {
        /// Only header bytes changed (the app reopened its database in WAL mode, a no-op write):
        /// push over exactly the version looked at.
        case sameContent(DeviceFingerprint)
        /// Both sides changed different rows: push the merge, over exactly the version merged.
        case merged(MergedPush, DeviceFingerprint)
        /// Rows changed on both sides, or the schema: recorded, nothing pushed.
        case conflict(Outcome)
    }

    /// The device's copy differs from the one last agreed on: pulls it and compares its content
    /// with the base; merges row by row when both sides changed rows.
    func reconcile(_ sidecar: inout Sidecar, database: URL, remote: RemoteDatabase, snapshot: Snapshot,
                   bridge: any DeviceBridge) async throws -> Reconciliation {
        let staging = try workspace.scratchDirectory("device")
        defer { try? FileManager.default.removeItem(at: staging) }
        let pulled = try await retry.run("pull \(remote.path)", onRetry: AgentMetrics.shared.retried) {
            try await bridge.pull(remote, into: staging, progress: nil)
        }
        let summary = try PulledDatabase.fold(pulled.mainFile)
        sidecar.deviceJournalWAL = summary.wasWAL
        guard let base = BaseStore(workspace: workspace).existing(for: remote, expectedHash: sidecar.baseHash) else {
            // No common ancestor (a sidecar from before bases were kept): nothing to merge against.
            return .conflict(try await recordConflict(&sidecar, database: database, remote: remote, bridge: bridge,
                                                      pulled: (pulled.mainFile, pulled.fingerprint)))
        }
        if try ContentIdentity.sameContent(base, pulled.mainFile) {
            logger.info("the app's copy changed only in its header (journal mode, change counter); not a change",
                        metadata: ["db": "\(database.lastPathComponent)"])
            return .sameContent(pulled.fingerprint)
        }
        let folder = try workspace.scratchDirectory("merge")
        let output = folder.appendingPathComponent(database.lastPathComponent)
        let outcome: ThreeWayMerge.Outcome
        do {
            outcome = try ThreeWayMerge.merge(base: base, local: snapshot.url, device: pulled.mainFile, into: output)
        } catch {
            try? FileManager.default.removeItem(at: folder)
            throw error
        }
        switch outcome {
        case .merged(let result):
            logger.info("merged: \(result.rowsFromDevice) rows from the app, \(result.rowsFromDesktop) from the desktop",
                        metadata: ["db": "\(database.lastPathComponent)"])
            return .merged(MergedPush(file: output, result: result), pulled.fingerprint)
        case .conflict(let detail):
            try? FileManager.default.removeItem(at: folder)
            return .conflict(try await recordConflict(&sidecar, database: database, remote: remote, bridge: bridge,
                                                      pulled: (pulled.mainFile, pulled.fingerprint), detail: detail))
        }
    }

    /// `resolve --merge-prefer`: merges the local copy with the device version saved with the
    /// conflict, taking `side`'s version of the rows changed on both.
    ///
    /// - throws: ``FlippioError/Code/conflict`` when the conflict is of a kind no preference
    ///   settles (a schema change, a constraint the merged rows break), or when no base was kept.
    func mergeForResolution(_ sidecar: Sidecar, remote: RemoteDatabase, snapshot: Snapshot,
                            preferring side: ThreeWayMerge.Preference) throws -> MergedPush {
        guard let deviceCopy = sidecar.conflictCopy, FileManager.default.fileExists(atPath: deviceCopy),
              let base = BaseStore(workspace: workspace).existing(for: remote, expectedHash: sidecar.baseHash) else {
            throw FlippioError(.conflict, "There is no saved device version and common ancestor to merge (the conflict copy or the base is gone).",
                               remedy: "Use `flippio resolve FILE --keep-local` or `--keep-device`.",
                               context: ["deviceCopy": sidecar.conflictCopy ?? ""])
        }
        let folder = try workspace.scratchDirectory("merge")
        let output = folder.appendingPathComponent("merged.db")
        switch try ThreeWayMerge.merge(base: base, local: snapshot.url, device: URL(fileURLWithPath: deviceCopy), into: output,
                                       prefer: side) {
        case .merged(let result):
            return MergedPush(file: output, result: result)
        case .conflict(let detail):
            try? FileManager.default.removeItem(at: folder)
            throw FlippioError(.conflict, "--merge-prefer cannot settle this conflict: \(detail.explanation)",
                               remedy: "Use `flippio resolve FILE --keep-local` or `--keep-device`.")
        }
    }

    /// After a merged push, brings the device's rows into the live local file through SQLite (in
    /// one transaction, with a busy timeout; never by replacing the file), so an editor that has
    /// it open sees them.
    ///
    /// If that cannot be done now (the user changed the same rows since the snapshot, or holds a
    /// write lock), the snapshot stays the common ancestor and the device's version as it was
    /// before the merge stays the expected one: the next check finds the device "changed" and
    /// merges again, with the newer local rows. Nothing is lost either way.
    func bringMergedRowsIn(_ merge: MergedPush, to database: URL, expectedAtSwap: DeviceFingerprint, snapshot: Snapshot,
                           remote: RemoteDatabase, sidecar: inout Sidecar, logger: Logger) async {
        do {
            switch try await ChangesetApplier().applyOnOwnThread(base: snapshot.url, device: merge.file, toLiveDatabaseAt: database) {
            case .applied:
                sidecar.localWrittenByMerge = true
                return
            case .conflict(let detail):
                logger.notice("the local copy changed the same rows during the merge; merging again at the next check",
                              metadata: ["conflict": "\(detail.explanation)"])
            }
        } catch {
            logger.notice("the app's rows could not be written into the local copy yet (\(error)); merging again at the next check")
        }
        // Without that base, no ancestor: the next check then keeps both versions (a conflict).
        let saved = (try? BaseStore(workspace: workspace).save(snapshot.url, for: remote)) != nil
        sidecar.baseHash = saved ? try? snapshot.contentHash : nil
        sidecar.fingerprintAtLastPush = expectedAtSwap
    }
}
