import Foundation
import Logging
import ServiceLifecycle

/// `flippio agent`: the long-running service, for systemd or a terminal.
///
/// It loads the workspace and arms the watches, and only then tells systemd `READY=1`; every
/// database's start-up check (an edit saved while the agent was down is pushed) runs after
/// that, a few at a time (``Options/startupCheckConcurrency``). While it runs it keeps `STATUS=`
/// current and sends `WATCHDOG=1` from the loop that does the work (a stuck agent stops pinging
/// and systemd restarts it). On graceful shutdown (SIGTERM/SIGINT through ``ServiceGroup``) it
/// stops taking work, lets an in-flight push finish within ``Options/shutdownGrace`` or abandons
/// it safely, flushes sidecars, and returns.
public struct Agent: Service {
    public struct Options: Sendable {
        /// How long an in-flight push may take to finish on shutdown. The default is 10 s
        /// (below the unit's `TimeoutStopSec=20`).
        public var shutdownGrace: Duration = .seconds(10)
        /// How often the agent asks `idevice_id -l` for iOS devices while some iOS database waits
        /// for its device (it does not ask otherwise). The default is 2 s.
        public var iosDevicePollInterval: Duration = .seconds(2)
        /// How many databases the start-up check looks at together. The default is 4: enough to
        /// overlap one database's I/O with another's hashing on a small machine, few enough that
        /// 1,000 databases do not hold 1,000 connections, page caches and snapshots at once.
        public var startupCheckConcurrency = 4
        public init() {}
    }

    private let configuration: FlippioConfiguration
    private let bridges: BridgeProvider
    private let options: Options
    private let logger: Logger
    private let notifier: SystemdNotifier
    private let watchdog: WatchdogSchedule?

    /// - parameter systemdEnvironment: where `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` are
    ///   read from (the agent's own environment; children get a copy without them).
    public init(configuration: FlippioConfiguration, bridges: BridgeProvider, options: Options = .init(), logger: Logger,
                systemdEnvironment: [String: String]) {
        self.configuration = configuration
        self.bridges = bridges
        self.options = options
        self.logger = logger
        self.notifier = SystemdNotifier(environment: systemdEnvironment)
        self.watchdog = WatchdogSchedule(environment: systemdEnvironment)
    }

    public func run() async throws {
        let notifier = self.notifier
        let parts = SyncParts(configuration: configuration, bridges: bridges, logger: logger)
        // One agent per workspace: a second one exits here, naming the first one's PID.
        let instance = try AgentInstanceLock.acquire(in: parts.workspace)
        defer { withExtendedLifetime(instance) {} }
        // ifuse mounts a killed agent left (only once this is the workspace's one agent): dead (their
        // daemon died with the session) or not ours to keep.
        for point in await bridges.removeStaleMounts() { logger.notice("removed a stale iOS mount: \(point.path)") }
        let engine = SyncEngine(.init(
            workspace: parts.workspace, sidecars: parts.sidecars, pool: parts.pool, watcher: try InotifyWatcher(),
            pusher: parts.pipeline, clock: ContinuousClock(), settleWindow: configuration.settleWindow,
            settleMaxWait: configuration.settleMaxWait, retry: configuration.retry,
            unwatchedRescanInterval: configuration.unwatchedRescanInterval, logger: logger,
            onStatusChange: { line in try? notifier.status(line) },
            notifier: DesktopNotifier(environment: configuration.environment, enabled: configuration.desktopNotifications,
                                      runner: ProcessRunner(), logger: logger),

            follow: await follow(parts)))
        try await engine.start()
        try? notifier.ready(status: await engine.statusLine())
        logger.info("ready")

        await withDiscardingTaskGroup { group in
            group.addTask { await engine.consumeWatchEvents() }
            group.addTask { await self.checkAll(engine) }
            group.addTask { await self.trackDevices(engine) }
            group.addTask { await self.pollIOSDevices(engine) }
            if let url = MetricsFile.defaultURL(environment: configuration.environment) {
                group.addTask { await MetricsFile(url: url).run(.shared) { self.logger.warning("metrics not written: \($0.message)") } }
            }
            if let interval = watchdog?.interval {
                group.addTask {
                    // Pinged through the engine actor: if the actor is stuck, the pings stop.
                    while !Task.isCancelled {
                        _ = await engine.trackedCount
                        try? notifier.watchdog()
                        try? await Task.sleep(for: interval)
                    }
                }
            }
            try? await gracefulShutdown()
            logger.info("stopping")
            try? notifier.stopping()
            await engine.shutdown(grace: options.shutdownGrace)
            await bridges.releaseDeviceFiles()  // unmount the apps' ifuse mounts
            group.cancelAll()
        }
        // The device watchers' tasks may not have stopped their `adb` yet: nothing outlives us.
        StreamingProcess.terminateAll()
        logger.info("stopped")
    }

    /// The start-up check of every database, after READY; then the heap the checks used goes
    /// back to the kernel.
    private func checkAll(_ engine: SyncEngine) async {
        let started = ContinuousClock.now
        await engine.checkAll(concurrency: options.startupCheckConcurrency)
        let count = await engine.trackedCount
        logger.info("start-up check of \(count) databases done in \((ContinuousClock.now - started).milliseconds) ms")
        Self.releaseFreeHeap()
    }

    /// Gives the heap's free memory back to the kernel: glibc's `malloc_trim(0)`.
    ///
    /// glibc keeps freed memory in its arenas for reuse; after the burst of start-up checks
    /// (snapshots, hashes, page caches) most of it is not needed again, yet it stays resident.
    /// Looked up at run time: `<malloc.h>` is not part of Swift's Glibc module, and other C
    /// libraries (musl, in a fully static build) have no such call; there it does nothing.
    static func releaseFreeHeap() {
        typealias Trim = @convention(c) (Int) -> Int32
        guard let trim = dlsym(nil, "malloc_trim") else { return }  // nil: RTLD_DEFAULT
        _ = unsafeBitCast(trim, to: Trim.self)(0)
    }

    /// How databases follow their device: Android through `run-as PKG inotifyd` (``AppChangeStream``),
    /// iOS by a fingerprint poll; the engine routes what they report.
    private func follow(_ parts: SyncParts) async -> SyncEngine.Follow {
        let android = try? await bridges.bridge(for: .android) as? AndroidBridge
        let logger = self.logger
        return SyncEngine.Follow(
            byDefault: configuration.follow, importer: parts.pipeline,
            watch: { app, folders, onChange in
                guard let android else {
                    throw FlippioError.deviceWatchUnavailable(serial: app.deviceID, appID: app.appID, detail: "adb not found")
                }
                let stream = AppChangeStream(adbPath: android.adbPath, environment: android.environment,
                                             serial: app.deviceID, appID: app.appID, folders: folders)
                logger.debug("watching \(app) on the device: \(stream.command)")
                try await stream.run(onChange: onChange)
            },
            androidPollInterval: configuration.followPollInterval, iosPollInterval: configuration.iosFollowInterval)
    }

    /// Follows device plug/unplug (`adb track-devices`) and resumes pushes waiting for a device.
    private func trackDevices(_ engine: SyncEngine) async {
        guard let android = try? await bridges.bridge(for: .android) as? AndroidBridge else { return }
        // The tracker restarts `adb track-devices` itself (with backoff) when the server goes away.
        let tracker = DeviceTracker(adbPath: android.adbPath, environment: android.environment)
        for await devices in tracker.updates() {
            await engine.devicesChanged(devices, platform: .android)
        }
    }

    /// Resumes pushes waiting for an iOS device that is back. usbmuxd has no plug events the
    /// tools can follow, so while some iOS database waits, the agent lists the devices it waits
    /// for every ``Options/iosDevicePollInterval`` (`idevice_id -l`, then `ideviceinfo` for those
    /// present, to tell a locked device from a ready one). Nothing runs, not even a timer, while no
    /// database waits: the loop sleeps until the engine signals a new wait.
    private func pollIOSDevices(_ engine: SyncEngine) async {
        for await _ in engine.iosDeviceAwaited {
            while !Task.isCancelled {
                do { try await Task.sleep(for: options.iosDevicePollInterval) } catch { return }
                let awaited = await engine.devicesAwaited(on: .ios)
                if awaited.isEmpty { break }  // back to sleeping until the next wait
                guard let ios = try? await bridges.bridge(for: .ios) as? IOSBridge else { continue }
                do {
                    let devices = try await ios.devices(only: awaited)
                    await engine.devicesChanged(devices, platform: .ios)
                } catch {
                    // usbmuxd down, a tool timing out: the device is not back; ask again next time.
                    logger.debug("iOS device poll: \(error)")
                }
            }
        }
    }
}
