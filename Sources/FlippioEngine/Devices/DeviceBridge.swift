import Foundation

/// The one protocol both platforms implement: everything the engine does to a device.
///
/// Implementations parse the real tools' real output, treat everything a device says as
/// untrusted, run every call through ``ProcessRunning`` with a timeout, and throw ``FlippioError``
/// with a code the retry policy can classify. They do not retry themselves: callers wrap calls
/// in ``RetryPolicy``.
public protocol DeviceBridge: Sendable {
    var platform: Platform { get }

    /// Every device the tool sees, including offline and unauthorized ones (with a remedy).
    func devices() async throws -> [Device]

    /// Installed apps: third-party only unless `includeSystem`.
    func apps(deviceID: String, includeSystem: Bool) async throws -> [AppInfo]

    /// SQLite databases of an app (`.db .sqlite .sqlite3 .db3 .sqlitedb`), never their
    /// `-wal`/`-shm`/`-journal`; bounded in count and depth.
    func databases(deviceID: String, appID: String) async throws -> [RemoteDatabase]

    /// Copies the database and its `-wal`/`-journal` (when present) into `directory`, naming the
    /// local files after the remote file. Checks the SQLite header. Does not fold the WAL: the
    /// caller does that through SQLite.
    func pull(_ database: RemoteDatabase, into directory: URL, progress: TransferProgress?) async throws -> PulledFiles

    /// Hashes of the device's `x.db` and `x.db-wal` right now.
    func fingerprint(_ database: RemoteDatabase) async throws -> DeviceFingerprint

    /// Stops the app so no open connection writes to the old file during a push.
    func stopApp(deviceID: String, appID: String) async throws

    /// Starts the app again (its launcher activity, as the home screen would), so the user sees a
    /// pushed edit at once (`--restart-app`).
    ///
    /// Returns false, doing nothing, where the platform's tools cannot start an app: the
    /// libimobiledevice tools need developer services (a mounted developer disk image) for that,
    /// which the default implementation does not assume.
    ///
    /// - throws: ``FlippioError`` with code `app-not-launchable` when the app has no launcher
    ///   activity, or the bridge's usual device and tool errors.
    func startApp(deviceID: String, appID: String) async throws -> Bool

    /// Replaces the device's database with `snapshot`, atomically: uploads to a temp name, renames
    /// it over the target, removes stale `-wal`/`-shm`/`-journal`, verifies that the device file's
    /// SHA-256 equals `snapshotHash`, removes temp files. Returns the new fingerprint.
    ///
    /// At every moment the device holds either the old database or the new one, never a partial file.
    ///
    /// A compare-and-swap: `expecting` is the fingerprint the caller checked before the push. If the
    /// device's copy no longer matches it at the moment of the rename (the app wrote meanwhile),
    /// nothing is replaced or removed and it throws `FlippioError(.conflict, …)`.
    func push(snapshot: URL, snapshotHash: String, to database: RemoteDatabase, expecting: DeviceFingerprint,
              progress: TransferProgress?) async throws -> DeviceFingerprint

    /// Replaces the device's database with the snapshot whose SHA-256 is `snapshotHash` by sending
    /// only `delta`'s changed pages (`patch`, written by ``PageDelta/writePatch(from:to:)``) and
    /// writing them into a copy of the device's file, with the same guarantees as
    /// ``push(snapshot:snapshotHash:to:expecting:progress:)``: compare-and-swap against `expecting`,
    /// the copy's hash checked before the rename, stale journals removed, the result verified.
    ///
    /// The device must hold exactly the delta's base (the caller checks `expecting` against it);
    /// the hash check makes a wrong assumption a failed push, never a wrong file.
    ///
    /// `beforeSwap` runs after the upload and before anything on the device that the app could
    /// see (the copy, the checks, the rename): the caller stops the app meanwhile and waits for it
    /// there. Its error is thrown as it is.
    ///
    /// - throws: ``FlippioError/Code/deltaUnsupported`` when the platform or device cannot (the
    ///   default: iOS's AFC has no partial writes); ``FlippioError/Code/conflict`` as a full push does;
    ///   any other error when a step failed, with the device's database untouched. Callers fall
    ///   back to a full push on every error but a conflict.
    func pushDelta(_ delta: PageDelta, patch: URL, snapshotHash: String, to database: RemoteDatabase,
                   expecting: DeviceFingerprint, beforeSwap: @Sendable () async throws -> Void) async throws -> DeviceFingerprint
}

extension DeviceBridge {
    public func pushDelta(_ delta: PageDelta, patch: URL, snapshotHash: String, to database: RemoteDatabase,
                          expecting: DeviceFingerprint, beforeSwap: @Sendable () async throws -> Void) async throws -> DeviceFingerprint {
        throw FlippioError.deltaUnsupported("\(platform) devices take whole files only.")
    }

    /// ``pushDelta(_:patch:snapshotHash:to:expecting:beforeSwap:)`` with nothing to wait for.
    public func pushDelta(_ delta: PageDelta, patch: URL, snapshotHash: String, to database: RemoteDatabase,
                          expecting: DeviceFingerprint) async throws -> DeviceFingerprint {
        try await pushDelta(delta, patch: patch, snapshotHash: snapshotHash, to: database, expecting: expecting, beforeSwap: {})
    }
}

extension DeviceBridge {
    /// Starting apps is not available: returns false. (iOS: `idevicedebug run BUNDLE` can, but only
    /// with a developer disk image mounted; a bridge that checks for it may override this.)
    public func startApp(deviceID: String, appID: String) async throws -> Bool { false }
}
