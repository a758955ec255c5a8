import Foundation
import Logging

// MARK: - Delta push

extension PushPipeline {
    /// What crossed the wire for one push.
    struct Sent {
        var fingerprint: DeviceFingerprint
        /// Bytes uploaded: the patch for a delta, the whole file otherwise.
        var bytes: Int64
        /// The page delta that was sent (computed against the base), nil for a whole file.
        var delta: PageDelta?
        var viaDelta: Bool { delta != nil }

        init(fingerprint: DeviceFingerprint, bytes: Int64, delta: PageDelta? = nil) {
            self.fingerprint = fingerprint
            self.bytes = bytes
            self.delta = delta
        }
    }

    /// Sends only the pages that differ from the base when that is safe and worth it; nil means
    /// "push the whole file" (and says why in the log when a delta was tried).
    ///
    /// A page delta rewrites the device's file page by page, so it is only sent when the device
    /// holds byte for byte the file the delta was computed against:
    ///
    /// - the device's fingerprint is the expected one (`deviceAsExpected`: no merge, no adopted
    ///   push in this attempt) with no `-wal`/`-journal` beside it (their pages are not in the base);
    /// - a base is kept (the sidecar names its hash) and the device's file is the base, page for page: after a verified push they are the same file;
    ///   after a pull, the device's content hash is the base's. Header bytes may differ (a pull's
    ///   base is a backup-API snapshot, which rewrites some): page 0 travels with every patch.
    /// - the journal mode is the base's (a switch rewrites the header's meaning; a full push is simpler);
    /// - the patch is smaller than ``deltaThreshold`` of the file (a VACUUMed copy moves every page).
    ///
    /// The device checks the result's SHA-256 before its rename anyway, so a wrong guess costs a
    /// wasted patch, never a wrong file.
    ///
    /// - throws: ``FlippioError/Code/conflict`` when the device changed during the push (as a full
    ///   push would); no other error: a delta that fails falls back to the full push.
    func pushByDelta(_ upload: Upload, to remote: RemoteDatabase, sidecar: Sidecar, expecting: DeviceFingerprint,
                     deviceAsExpected: Bool, bridge: any DeviceBridge, logger: Logger) async throws -> Sent? {
        guard let delta = plannedDelta(upload, to: remote, sidecar: sidecar, expecting: expecting,
                                       deviceAsExpected: deviceAsExpected, logger: logger) else { return nil }
        return try await sendDelta(delta, upload: upload, to: remote, expecting: expecting, bridge: bridge, beforeSwap: {}, logger: logger)
    }

    /// The app could not be stopped before a page delta's swap (see `beforeSwap`): the push fails
    /// with `underlying`, as it did when the stop came first.
    struct AppNotStopped: Error {
        var underlying: any Error
    }

    /// What a page delta sent before looking at the device did.
    enum DeltaFirst {
        /// Not tried: the usual order (the device's fingerprint, then a delta or the whole file).
        case notTried
        /// Considered, and not sent or not landed: the pipeline looks at the device and goes on
        /// as usual, with the whole file (a delta would be the same one again).
        case fallBack
        case sent(Sent)
    }

    /// A page delta sent before looking at the device, when the sidecar says the device holds
    /// exactly the base: no push pending, the last version known without `-wal` or `-journal`.
    ///
    /// A separate look first (the fingerprint, a `sha256sum` of the whole file on the device) would
    /// only repeat what the device-side script does anyway before its rename: compare `x.db`,
    /// `x.db-wal` and `x.db-journal` with the expected fingerprint, and rename nothing when they
    /// differ. So the app's writes are kept either way; what changes is the order when the app did
    /// write: the script refuses the delta (a conflict, nothing replaced), and the pipeline then
    /// looks at the device as usual: merge, conflict copy, or the whole file.
    ///
    /// WAL-mode devices take the usual order: their upload is rewritten to WAL mode first, in place,
    /// and the merge path that may follow reads the snapshot as taken.
    ///
    /// `appStopped` waits for the app's stop, which runs beside the patch's upload: the device-side
    /// script, the first step the app could see, starts after it.
    ///
    /// - throws: the stop's error, with the sidecar as it was.
    func pushByDeltaFirst(_ upload: Upload, sidecar: inout Sidecar, database: URL, bridge: any DeviceBridge,
                          appStopped: @escaping @Sendable () async throws -> Void, logger: Logger) async throws -> DeltaFirst {
        guard Self.triesDeltaFirst(sidecar) else { return .notTried }
        let remote = sidecar.origin.remoteDatabase
        let expected = sidecar.expectedDeviceFingerprint
        guard let delta = plannedDelta(upload, to: remote, sidecar: sidecar, expecting: expected,
                                       deviceAsExpected: true, logger: logger) else { return .fallBack }
        let stateBefore = sidecar.state
        sidecar.state = .pushing
        sidecar.pendingPushHash = upload.fileHash
        try await save(sidecar, database)
        do {
            // Not landed: the pending record stays, as after any failed push (the check after the
            // rename may have failed with our file in place: the look that follows adopts it).
            let beforeSwap: @Sendable () async throws -> Void = {
                do { try await appStopped() } catch { throw AppNotStopped(underlying: error) }
            }
            return try await sendDelta(delta, upload: upload, to: remote, expecting: expected, bridge: bridge,
                                       beforeSwap: beforeSwap, logger: logger)
                .map(DeltaFirst.sent) ?? .fallBack
        } catch let error as AppNotStopped {
            // Nothing on the device was touched but the staging folder.
            sidecar.state = stateBefore
            sidecar.pendingPushHash = nil
            try await save(sidecar, database)
            throw error.underlying
        } catch let error as FlippioError where error.code == .conflict {
            // Refused before the rename: nothing on the device changed.
            logger.info("the device's copy is not the one last pushed or pulled; looking at it", metadata: ["error": "\(error.message)"])
            sidecar.state = stateBefore
            sidecar.pendingPushHash = nil
            try await save(sidecar, database)
            return .fallBack
        }
    }

    /// Whether ``pushByDeltaFirst(_:sidecar:database:bridge:appStopped:logger:)`` tries a delta at
    /// all: no push pending (its outcome on the device is unknown) and not a WAL-mode device.
    static func triesDeltaFirst(_ sidecar: Sidecar) -> Bool {
        sidecar.pendingPushHash == nil && sidecar.deviceJournalWAL != true
    }

    /// The page delta ``pushByDelta(_:to:sidecar:expecting:deviceAsExpected:bridge:logger:)`` would
    /// send, computed against the base; nil when none is safe or worth it (the log says why).
    func plannedDelta(_ upload: Upload, to remote: RemoteDatabase, sidecar: Sidecar, expecting: DeviceFingerprint,
                      deviceAsExpected: Bool, logger: Logger) -> PageDelta? {
        guard deltaThreshold > 0, deviceAsExpected, expecting.walHash == nil, expecting.journalHash == nil,
              expecting.mainHash != nil,
              sidecar.baseHash != nil
        else { return nil }
        // The base's own content hash is not re-checked here (reading the whole file again would
        // cost what the delta saves): a base that is not what the sidecar says makes the device's
        // copy fail its SHA-256 check, and the full push follows.
        let base = BaseStore(workspace: workspace).url(for: remote)
        guard FileManager.default.fileExists(atPath: base.path) else { return nil }
        let delta: PageDelta
        do {
            guard try SQLiteHeader.read(fileAt: base).isWAL == SQLiteHeader.read(fileAt: upload.file).isWAL else {
                logger.debug("push: the journal mode changed since the base; pushing the whole file")
                return nil
            }
            // Trusted without reading when the last verified push recorded both (they are saved
            // together); else the device's last known content must be the base's, to the header.
            if sidecar.fingerprintAtLastPush != expecting,
               sidecar.deviceContentHash != sidecar.baseHash {
                logger.debug("push: the device's file is not the base; pushing the whole file")
                return nil
            }
            var steps = StepTimes()
            if let comparison = upload.comparison, comparison.base == base {
                delta = PageDelta(comparison, targetSize: upload.size)
                steps.lap("the page comparison made while copying")
            } else {
                delta = try PageDelta.between(base: base, snapshot: upload.file)
                steps.lap("comparing the snapshot with the base, page by page")
            }
            logger.trace("push: \(steps)")
        } catch {
            logger.debug("push: no page delta (\(error)); pushing the whole file")
            return nil
        }
        guard delta.isWorthSending(threshold: deltaThreshold) else {
            logger.debug("push: \(delta.changedPages) changed pages (\(delta.patchSize) bytes) are not worth a delta; pushing the whole file")
            return nil
        }
        return delta
    }

    /// Sends `delta` (see ``pushByDelta(_:to:sidecar:expecting:deviceAsExpected:bridge:logger:)``);
    /// nil when it did not land (the log says why): the whole file goes instead.
    func sendDelta(_ delta: PageDelta, upload: Upload, to remote: RemoteDatabase, expecting: DeviceFingerprint,
                   bridge: any DeviceBridge, beforeSwap: @escaping @Sendable () async throws -> Void, logger: Logger) async throws -> Sent? {
        let folder = try workspace.scratchDirectory("delta")
        defer { try? FileManager.default.removeItem(at: folder) }
        let patch = folder.appendingPathComponent("patch.bin")
        do {
            try delta.writePatch(from: upload.file, to: patch)
            let fingerprint = try await bridge.pushDelta(delta, patch: patch, snapshotHash: upload.fileHash,
                                                         to: remote, expecting: expecting, beforeSwap: beforeSwap)
            logger.debug("push: page delta applied", metadata: [
                "pages": "\(delta.changedPages)", "runs": "\(delta.runs.count)",
                "bytes": "\(delta.patchSize)", "fileBytes": "\(upload.size)"])
            return Sent(fingerprint: fingerprint, bytes: delta.patchSize, delta: delta)
        } catch let error as FlippioError where error.code == .conflict {
            throw error
        } catch let error as AppNotStopped {
            throw error
        } catch let error as FlippioError where error.code == .deltaUnsupported {
            logger.info("no page delta on this device; pushing the whole file", metadata: ["reason": "\(error.message)"])
            return nil
        } catch {
            // Nothing on the device changed (the bridge renames only a verified copy), or the
            // check after the rename failed: the full push below then finds our own file, which
            // the pipeline takes as the push done.
            logger.notice("the page delta push failed; pushing the whole file instead", metadata: ["error": "\(error)"])
            return nil
        }
    }
}
