import Foundation
import Synchronization

// MARK: - Delta push

extension AndroidBridge {
    /// Devices found without `dd` or `truncate`, for the life of the process: asking again on
    /// every push would cost a failed upload and script each time, and a device's toybox does not
    /// change while it is plugged in.
    static let devicesWithoutDelta = Mutex<Set<String>>([])

    /// More runs than this make the device script too long for one `adb shell` command line (adbd
    /// takes up to 1 MiB; each run is a ~200-byte `dd`), and a patch that scattered is rarely small.
    static let maximumDeltaRuns = 2_000

    /// Sends only the changed pages (see ``DeviceBridge/pushDelta(_:patch:snapshotHash:to:expecting:beforeSwap:)``):
    ///
    /// 1. remove temp files of interrupted attempts; `adb push` the patch to
    ///    `/data/local/tmp/flippio-<id>-<attempt>.db` (``PushNames``); wait for `beforeSwap`;
    /// 2. in ONE device-side script, as the app: `cp x.db DIR/.x.db.flippio-tmp-<attempt>`, then
    ///    for each run `dd if=PATCH of=COPY bs=PAGE seek=FIRST skip=OFFSET count=N conv=notrunc`,
    ///    `truncate -s SIZE COPY` when the file shrank (exit 5 when any of them fails), then the
    ///    swap every push shares: the copy's SHA-256 must be the snapshot's, the device must still
    ///    hold `expecting`, journals removed, `mv` over `x.db`;
    /// 3. verify that the target is the checked copy (inode and size); remove the patch.
    ///
    /// The copy is written in place (`conv=notrunc`): without it toybox would cut the file at the
    /// first run's end. The target itself is never written until the rename, so a `dd` that stops
    /// half-way (a full disk) leaves the device's database as it was.
    ///
    /// - throws: ``FlippioError/Code/deltaUnsupported`` when the device has no `dd`/`truncate`
    ///   (remembered for the process's life) or the patch has more than ``maximumDeltaRuns`` runs;
    ///   ``FlippioError/Code/conflict``; ``FlippioError/Code/verificationFailed`` when a step on the
    ///   device failed or the copy's hash differs; the codes of `AndroidErrors`.
    public func pushDelta(_ delta: PageDelta, patch: URL, snapshotHash: String, to database: RemoteDatabase,
                          expecting: DeviceFingerprint, beforeSwap: @Sendable () async throws -> Void) async throws -> DeviceFingerprint {
        let serial = database.deviceID
        if Self.devicesWithoutDelta.withLock({ $0.contains(serial) }) {
            throw FlippioError.deltaUnsupported("Device \(serial) has no `dd` or `truncate` (found earlier).")
        }
        guard delta.runs.count <= Self.maximumDeltaRuns, !delta.pageSizeChanged, delta.pageSize > 0 else {
            throw FlippioError.deltaUnsupported("The page delta has \(delta.runs.count) runs; a whole file is simpler.")
        }
        let (prefix, subject) = try validate(database)
        let names = PushNames(serial: serial, path: database.path)
        let q = DeviceShellQuoting.quote
        let uploaded = try await upload(patch, as: names, for: database, prefix: prefix, subject: subject, progress: nil)
        do {
            try await beforeSwap()
        } catch {
            _ = try? await shell(serial, "rm -f " + q(names.staging), subject: subject)
            throw error
        }

        let copy = await makeCopy(of: database.path, to: names.sibling, for: database)
        // status=none: toybox's summary goes to stderr, and stderr is what a failure reports.
        var writes = delta.runs.map {
            "dd if=\(q(names.staging)) of=\(q(names.sibling)) bs=\(delta.pageSize) seek=\($0.firstPage) skip=\($0.patchOffset) count=\($0.count) conv=notrunc status=none"
        }
        if delta.shrinks { writes.append("truncate -s \(delta.targetSize) \(q(names.sibling))") }
        let building = copy + [writes.joined(separator: " && ") + " || exit \(Self.deltaFailedStatus)"]
        do {
            // The device copies and hashes the whole file: its time grows with the target's size.
            return try await swap(building: building, names: names, snapshotHash: snapshotHash, to: database,
                                  expecting: expecting, prefix: prefix, subject: subject, bytes: delta.targetSize,
                                  hashesSideBySide: uploaded.shellRunsJobs)
        } catch let error as FlippioError where error.code == .deltaUnsupported {
            Self.devicesWithoutDelta.withLock { _ = $0.insert(serial) }
            throw error
        }
    }
}
