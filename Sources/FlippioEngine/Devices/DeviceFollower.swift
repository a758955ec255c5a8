import Foundation
import Logging

/// Which apps' databases the agent follows, and the one device-side watcher (or poll) per app
/// that tells it when the app wrote: routing infrastructure the ``SyncEngine`` owns.
///
/// It keeps no state about any one database beyond where its change events go (remote path →
/// local database); what a change means is decided by that database's ``DatabaseSync``.
///
/// Per app whose databases are followed, while its device is connected:
///
/// - **Android:** one long-running `adb shell run-as PKG inotifyd - DIR:MASK...` (``AppChangeStream``)
///   over the followed databases' folders. Nothing runs on the desktop between events: no timer,
///   no poll. When the stream ends (app reinstalled, device unplugged, adb server restarted) it is
///   started again after a backoff (doubling from ``Dependencies/restartDelay`` up to
///   ``Dependencies/maximumRestartDelay``), and every followed database of the app gets one look
///   (what changed while nothing watched). While the device is not listed, nothing runs.
///   Where `inotifyd` is missing or refused (``FlippioError/Code/deviceWatchUnavailable``), the
///   app falls back to a fingerprint poll every ``Dependencies/androidPollInterval``, said once in
///   the log and in `status` (``pollFallbacks``).
/// - **iOS:** the libimobiledevice tools report no file changes: a fingerprint poll every
///   ``Dependencies/iosPollInterval`` (zero: iOS databases are not followed).
///
/// A "look" is a ``DatabaseSync/Input/deviceChanged`` for the database: it settles, then
/// fingerprints the device (one `sha256sum`) and pulls only when the content changed.
actor DeviceFollower {
    /// An app on a device: one watcher each.
    struct App: Hashable, Sendable, CustomStringConvertible {
        var platform: Platform
        var deviceID: String
        var appID: String
        var description: String { "\(appID) on \(deviceID)" }
    }

    struct Dependencies: Sendable {
        /// Runs one device-side watch of `folders` for `app` until it ends, calling the closure
        /// with each changed device path (``AppChangeStream/run(onStarted:onChange:)`` in the agent).
        var watch: @Sendable (_ app: App, _ folders: [String], _ onChange: @escaping @Sendable (String) -> Void) async throws -> Void
        var clock: any Clock<Duration>
        /// The fingerprint poll where `inotifyd` is unavailable. The default is 5 s.
        var androidPollInterval: Duration = .seconds(5)
        /// The iOS fingerprint poll; zero turns following off for iOS. The default is 5 s.
        var iosPollInterval: Duration = .seconds(5)
        /// The first wait before a stream that ended is started again. The default is 500 ms.
        var restartDelay: Duration = .milliseconds(500)
        /// The longest wait between restarts. The default is 30 s.
        var maximumRestartDelay: Duration = .seconds(30)
        var logger: Logger
        /// Where a change goes: the database's loop (through the engine).
        var deliver: @Sendable (_ database: URL) -> Void
        /// Called once when an app falls back to polling (the engine shows it in `status`).
        var onPollFallback: @Sendable (_ app: App) -> Void = { _ in }
    }

    private let dependencies: Dependencies
    private var logger: Logger { dependencies.logger }
    /// Followed databases per app: device path → local database.
    private var followed: [App: [String: URL]] = [:]
    /// Devices each platform's tracker last listed as ready (absent until it has reported).
    private var ready: [Platform: Set<String>] = [:]
    private var watchers: [App: (paths: [String: URL], task: Task<Void, Never>)] = [:]
    /// Apps followed by polling because their device cannot report changes, with the reason.
    private(set) var pollFallbacks: [App: String] = [:]
    /// How many watcher runs started, per app (tests, logs).
    private(set) var starts: [App: Int] = [:]

    init(_ dependencies: Dependencies) {
        self.dependencies = dependencies
    }

    // MARK: - Routing

    /// Follows `database` (its device path `remote`), or stops following it (`remote` nil).
    ///
    /// Idempotent: the engine calls it each time it reads the database's sidecar, and following
    /// what is already followed must not restart the app's watcher (a restart is a gap in which
    /// the app's writes are found only by the look that follows it).
    func setFollowed(_ database: URL, remote: RemoteDatabase?) {
        var target: (app: App, path: String)?
        if let remote, !(remote.platform == .ios && dependencies.iosPollInterval == .zero) {
            target = (App(platform: remote.platform, deviceID: remote.deviceID, appID: remote.appID), remote.path)
        }
        for (app, paths) in followed {
            let kept = paths.filter { path, followedDatabase in
                followedDatabase != database || (app == target?.app && path == target?.path)
            }
            guard kept.count != paths.count else { continue }
            followed[app] = kept.isEmpty ? nil : kept
            reconcile(app)
        }
        guard let target, followed[target.app]?[target.path] != database else { return }
        followed[target.app, default: [:]][target.path] = database
        reconcile(target.app)
    }

    /// Follows databases not followed yet, all at once (the agent's start-up): each app's watcher
    /// is reconciled once, not once per database, and no other app is searched for them.
    func follow(_ databases: [(database: URL, remote: RemoteDatabase)]) {
        var apps: Set<App> = []
        for (database, remote) in databases {
            if remote.platform == .ios && dependencies.iosPollInterval == .zero { continue }
            let app = App(platform: remote.platform, deviceID: remote.deviceID, appID: remote.appID)
            followed[app, default: [:]][remote.path] = database
            apps.insert(app)
        }
        for app in apps { reconcile(app) }
    }

    /// A platform's device list: watchers run only for devices listed as ready.
    func devicesChanged(ready devices: Set<String>, platform: Platform) {
        ready[platform] = devices
        for app in Set(followed.keys).union(watchers.keys) where app.platform == platform { reconcile(app) }
    }

    /// Whether `app`'s device is connected: Android's tracker must have listed it; iOS devices
    /// are listed only while a push waits for one, so only a list without it says it is gone.
    private func isConnected(_ app: App) -> Bool {
        switch app.platform {
        case .android: ready[.android]?.contains(app.deviceID) == true
        case .ios: ready[.ios].map { $0.contains(app.deviceID) } ?? true
        }
    }

    /// Starts, restarts (when the followed set changed) or stops `app`'s watcher.
    private func reconcile(_ app: App) {
        let paths = followed[app] ?? [:]
        let wanted = !paths.isEmpty && isConnected(app)
        if let running = watchers[app], !wanted || running.paths != paths {
            logger.debug("stopping the device-side watcher of \(app): \(wanted ? "the followed databases changed" : "nothing to follow while the device is away")")
            running.task.cancel()
            watchers[app] = nil
        }
        guard wanted, watchers[app] == nil else { return }
        starts[app, default: 0] += 1
        let task = Task<Void, Never> { [weak self] in await self?.supervise(app, paths: paths) }
        watchers[app] = (paths, task)
    }

    /// The apps with a watcher or poll running (tests, status).
    var runningApps: Set<App> { Set(watchers.keys) }

    func stopAll() {
        for (_, watcher) in watchers { watcher.task.cancel() }
        watchers = [:]
    }

    // MARK: - One app

    private func supervise(_ app: App, paths: [String: URL]) async {
        if app.platform == .ios || pollFallbacks[app] != nil {
            await poll(app, paths: paths, every: app.platform == .ios ? dependencies.iosPollInterval : dependencies.androidPollInterval)
            return
        }
        let folders = Array(Set(paths.keys.map { ($0 as NSString).deletingLastPathComponent })).sorted()
        let deliver = dependencies.deliver
        let clock = dependencies.clock
        var delay = dependencies.restartDelay
        while !Task.isCancelled {
            // What changed while nothing watched (first start, device back, stream restarted).
            for database in paths.values { deliver(database) }
            let started = ContinuousClock.now
            do {
                try await dependencies.watch(app, folders) { path in
                    if let database = Self.database(for: path, in: paths) { deliver(database) }
                }
                if Task.isCancelled { return }
                logger.debug("the device-side watcher of \(app) ended; starting it again in \(delay)")
            } catch let error as FlippioError where error.code == .deviceWatchUnavailable {
                pollFallbacks[app] = error.message
                dependencies.onPollFallback(app)
                logger.warning("\(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
                await poll(app, paths: paths, every: dependencies.androidPollInterval)
                return
            } catch {
                if Task.isCancelled { return }
                logger.debug("the device-side watcher of \(app) failed: \(error); starting it again in \(delay)")
            }
            // A stream that ran a while was healthy: the next one starts after the first delay.
            if ContinuousClock.now - started > dependencies.maximumRestartDelay { delay = dependencies.restartDelay }
            do { try await clock.sleep(for: delay) } catch { return }
            delay = min(delay * 2, dependencies.maximumRestartDelay)
        }
    }

    /// Looks at every followed database of `app` every `interval`, while it is connected.
    private func poll(_ app: App, paths: [String: URL], every interval: Duration) async {
        let deliver = dependencies.deliver
        while !Task.isCancelled {
            for database in paths.values { deliver(database) }
            do { try await dependencies.clock.sleep(for: max(interval, .milliseconds(100))) } catch { return }
        }
    }

    /// The followed database a changed device path belongs to: the database itself, its `-wal`
    /// or its `-journal` (`-shm` is shared memory SQLite maps, not data; other files are not ours).
    static func database(for path: String, in paths: [String: URL]) -> URL? {
        if let database = paths[path] { return database }
        for suffix in ["-wal", "-journal"] where path.hasSuffix(suffix) {
            if let database = paths[String(path.dropLast(suffix.count))] { return database }
        }
        return nil
    }
}
