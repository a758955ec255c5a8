import Foundation
import Logging

/// The agent's core: every tracked database's ``DatabaseSync``, fed by the watcher, the settler
/// and the device tracker. Data flows one way: event → settle → snapshot → push → sidecar.
actor SyncEngine {
    private let configuration: FlippioConfiguration
    private let workspace: Workspace
    private let sidecars: SidecarStore
    private let pool: ConnectionPool
    private let bridges: BridgeProvider
    private let pipeline: PushPipeline
    private let watcher: InotifyWatcher
    private let settler: Settler<URL, ContinuousClock>
    private let logger: Logger
    private var index: DatabaseIndex
    private var syncs: [URL: DatabaseSync] = [:]
    /// The device each tracked database lives on (from its sidecar's origin).
    private var deviceOf: [URL: String] = [:]
    /// The platform of that device.
    private var platformOf: [URL: Platform] = [:]
    /// When each database's current unpushed change was first seen (for the settle upper bound).
    private var firstChange: [URL: ContinuousClock.Instant] = [:]
    private var watchedDirectories: Set<String> = []
    /// Called whenever the set of databases or their states change (for `STATUS=`).
    private let onStatusChange: @Sendable (String) -> Void
    /// Yields when an iOS database starts waiting for its device, so the iOS poll runs only then.
    nonisolated let iosDeviceAwaited: AsyncStream<Void>
    private let iosDeviceAwaitedSignal: AsyncStream<Void>.Continuation
    /// False while ``start()`` loads the workspace.
    private var started = false
    /// Counts of push outcomes, for tests, logs and metrics.
    private(set) var pushCount = 0
    /// Devices each platform's tracker last listed as ready (absent until it has reported).
    private var readyDevices: [Platform: Set<String>] = [:]
    /// Consecutive "device unavailable" failures per database while its device looked ready,
    /// and the pending look at it again.
    private var unexpectedDeviceFailures: [URL: Int] = [:]
    private var recheckTasks: [URL: Task<Void, Never>] = [:]

    init(configuration: FlippioConfiguration, bridges: BridgeProvider, logger: Logger,
         onStatusChange: @escaping @Sendable (String) -> Void) throws {
        self.configuration = configuration
        self.workspace = Workspace(root: configuration.workspace)
        self.sidecars = SidecarStore()
        self.pool = ConnectionPool(capacity: configuration.poolCapacity)
        self.bridges = bridges
        self.logger = logger
        self.pipeline = PushPipeline(workspace: workspace, sidecars: sidecars, pool: pool, bridges: bridges,
                                     stopAppBeforePush: configuration.stopAppBeforePush,
                                     retry: configuration.retry, logger: logger)
        self.watcher = try InotifyWatcher()
        self.settler = Settler<URL, ContinuousClock>(window: configuration.settleWindow, maxWait: configuration.settleMaxWait,
                                    clock: ContinuousClock())
        self.onStatusChange = onStatusChange
        self.index = DatabaseIndex(stateDirectory: workspace.stateDirectory)
        (iosDeviceAwaited, iosDeviceAwaitedSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: - Start-up

    /// Loads every tracked database, arms the watches and warms the pool. Returns when the agent
    /// is ready (the moment for `READY=1`).
    func start() async throws {
        try FileManager.default.createDirectory(at: workspace.root, withIntermediateDirectories: true)
        try watchTree(workspace.root)
        let removed = workspace.removeStaleTemporaryFiles()
        if removed > 0 { logger.debug("removed \(removed) stale temporary files") }
        let databases = try workspace.trackedDatabases()
        for database in databases {
            await track(database)
        }
        for (database, error) in await pool.warm(Array(syncs.keys)) {
            logger.error("cannot open \(database.path): \(error.message)")
        }
        started = true
        let status = await statusLine()
        logger.info("\(status) in \(workspace.root.path)")
        publishStatus()
    }

    /// Sends every database a push request: a crash or stop loses no edit, because any database
    /// whose content differs from its last push is pushed now (unchanged ones cost one snapshot).
    func resumeAll() async {
        for sync in syncs.values {
            await sync.send(.pushRequested)
        }
    }

    private func track(_ database: URL) async {
        guard syncs[database] == nil else { return }
        let sidecar: Sidecar
        do {
            sidecar = try await sidecars.read(forDatabase: database)
        } catch {
            // A corrupt or too-new sidecar is reported, never overwritten; the others go on.
            logger.error("not tracking \(database.path): \(error)")
            return
        }
        do {
            try watch(directory: database.deletingLastPathComponent())
        } catch {
            logger.error("cannot watch \(database.deletingLastPathComponent().path): \(error)")
            return
        }
        index.track(database)
        let settler = self.settler
        let sync = DatabaseSync(
            database: database, resumingFrom: sidecar.state, pipeline: pipeline, sidecars: sidecars,
            retry: configuration.retry, logger: logger,
            requestSettle: { url in await settler.note(url) },
            onOutcome: { [weak self] url, outcome in await self?.pushEnded(url, outcome) })
        syncs[database] = sync
        deviceOf[database] = sidecar.origin.deviceID
        platformOf[database] = sidecar.origin.platform
        publishStatus()
    }

    private func untrack(_ database: URL) async {
        guard let sync = syncs.removeValue(forKey: database) else { return }
        deviceOf[database] = nil
        platformOf[database] = nil
        await sync.stop()
        index.untrack(database)
        await pool.close(database)
        logger.info("stopped tracking \(database.path)")
        publishStatus()
    }

    /// Watches `root` and every folder below it, except the agent's own state folder.
    private func watchTree(_ root: URL) throws {
        try watch(directory: root)
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isDirectoryKey, .isSymbolicLinkKey],
                                                          options: [.skipsHiddenFiles]) else { return }
        for case let url as URL in walker {
            let values = try? url.resourceValues(forKeys: [.isDirectoryKey, .isSymbolicLinkKey])
            guard values?.isDirectory == true, values?.isSymbolicLink != true else { continue }
            try watch(directory: url)
        }
    }

    private func watch(directory: URL) throws {
        let path = directory.standardizedFileURL.path
        guard !watchedDirectories.contains(path) else { return }
        try watcher.watch(directory: directory)
        watchedDirectories.insert(path)
    }

    // MARK: - Events

    /// Consumes the watcher's events until cancelled.
    func consumeWatchEvents() async {
        for await event in watcher.events {
            await handle(event)
        }
    }

    func handle(_ event: WatchEvent) async {
        logger.trace("watch event: \(event)")
        switch event {
        case .changed(let directory, let name):
            switch index.classify(directory: directory, name: name) {
            case .database(let database):
                await changed(database)
            case .sidecar(let database):
                await sidecarChanged(database)
            case .ignored:
                break
            }
        case .directoryCreated(let directory):
            // A new folder (a newly pulled app or device): watch it and pick up databases already in it.
            guard !Self.isInStateDirectory(directory, workspace: workspace) else { return }
            // `mkdir -p` makes the whole chain before our watch on the first folder exists, so
            // watch everything below it too, then look for sidecars already there.
            do { try watchTree(directory) } catch { logger.error("cannot watch \(directory.path): \(error)") }
            await rescan()
        case .directoryRemoved(let directory):
            watchedDirectories.remove(directory.standardizedFileURL.path)
            await rescan()
        case .overflow:
            logger.warning("the inotify queue overflowed; rescanning every tracked database")
            await rescan()
            for database in syncs.keys { await changed(database) }
        }
    }

    private func changed(_ database: URL) async {
        guard let sync = syncs[database] else { return }
        if firstChange[database] == nil { firstChange[database] = .now }
        await sync.send(.changed)
    }

    private func sidecarChanged(_ database: URL) async {
        let exists = FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: database).path)
        if exists, syncs[database] == nil {
            logger.info("now tracking \(database.path)")
            await track(database)
            _ = await pool.warm([database])
        } else if !exists, syncs[database] != nil {
            await untrack(database)
        }
    }

    /// Finds databases added or removed while the agent ran (new sidecars, forgotten ones).
    private func rescan() async {
        guard let databases = try? workspace.trackedDatabases() else { return }
        let current = Set(databases)
        for database in databases where syncs[database] == nil { await track(database) }
        for database in syncs.keys where !current.contains(database) { await untrack(database) }
    }

    /// Consumes the settler's output until cancelled.
    func consumeSettled() async {
        for await database in settler.settled {
            await settled(database)
        }
    }

    private func settled(_ database: URL) async {
        logger.trace("settled: \(database.lastPathComponent)")
        guard let sync = syncs[database] else { return }
        let writerActive = (try? await pool.isWriterActive(database)) ?? false
        let overdue = firstChange[database].map { ContinuousClock.now - $0 >= configuration.settleMaxWait } ?? true
        if !writerActive || overdue { firstChange[database] = nil }
        await sync.send(.settled(writerActive: writerActive, overdue: overdue))
    }

    private func pushEnded(_ database: URL, _ outcome: PushPipeline.Outcome) {
        switch outcome {
        case .pushed:
            pushCount += 1
            unexpectedDeviceFailures[database] = nil
        case .failed(let error) where DatabaseSync.StateMachine.meansDeviceUnavailable(error.code):
            retryIfDeviceLooksReady(database)
            if platformOf[database] == .ios { iosDeviceAwaitedSignal.yield() }
        case .failed:
            break
        case .unchanged, .conflict, .invalid:
            unexpectedDeviceFailures[database] = nil
        }
        publishStatus()
    }

    // MARK: - Devices

    /// A push failed because the device was unavailable, but adb lists it as ready, so no plug
    /// event will wake this database: the failure was a passing one (a dropped connection, a
    /// device that just reconnected). Try again after a growing delay instead.
    private func retryIfDeviceLooksReady(_ database: URL) {
        guard deviceLooksReady(database) else { return }
        let failures = (unexpectedDeviceFailures[database] ?? 0) + 1
        unexpectedDeviceFailures[database] = failures
        var generator = SystemRandomNumberGenerator()
        let delay = max(configuration.retry.delay(forAttempt: failures, using: &generator), .milliseconds(200))
        recheckTasks[database]?.cancel()
        recheckTasks[database] = Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard !Task.isCancelled else { return }
            await self?.recheck(database)
        }
    }

    private func recheck(_ database: URL) async {
        recheckTasks[database] = nil
        guard deviceLooksReady(database), let sync = syncs[database] else { return }
        logger.info("\(deviceOf[database] ?? "the device") is listed as ready; trying \(database.lastPathComponent) again")
        await sync.send(.deviceReady)
    }

    /// Whether the platform's tracker lists the database's device as ready.
    private func deviceLooksReady(_ database: URL) -> Bool {
        guard let device = deviceOf[database], let platform = platformOf[database] else { return false }
        return readyDevices[platform]?.contains(device) == true
    }

    /// A platform's list of connected devices changed: resume databases waiting for a device that is back.
    ///
    /// - parameter platform: whose devices `devices` are (the others' last lists are kept).
    func devicesChanged(_ devices: [Device], platform: Platform) async {
        let ready = Set(devices.filter { $0.state == .ready && $0.platform == platform }.map(\.id))
        readyDevices[platform] = ready
        for (database, sync) in syncs where platformOf[database] == platform && ready.contains(deviceOf[database] ?? "") {
            await sync.send(.deviceReady)
        }
    }

    /// The devices of `platform` that some database is waiting for (for the iOS poll, which runs
    /// only while this is not empty).
    func devicesAwaited(on platform: Platform) async -> Set<String> {
        var awaited: Set<String> = []
        for (database, sync) in syncs where platformOf[database] == platform {
            guard let device = deviceOf[database], !awaited.contains(device) else { continue }
            if case .waitingForDevice = await sync.state { awaited.insert(device) }
        }
        return awaited
    }

    // MARK: - Shutdown

    /// Stops taking work and lets in-flight pushes finish within `grace`; past it, abandons them
    /// (their tools are killed; the device keeps the old database or has the new one).
    func shutdown(grace: Duration) async {
        for task in recheckTasks.values { task.cancel() }
        recheckTasks = [:]
        let all = Array(syncs.values)
        let finished = await withTaskGroup(of: Bool.self) { group -> Bool in
            group.addTask {
                await withTaskGroup(of: Void.self) { inner in
                    for sync in all { inner.addTask { await sync.stop() } }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: grace)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !finished {
            logger.warning("abandoning in-flight pushes after \(grace); the device keeps its old database")
            for sync in all { await sync.abandon() }
        }
        await sidecars.flush()
        await pool.closeAll()
        watcher.close()
    }

    // MARK: - Status

    func statusLine() async -> String {
        let devices = Set(deviceOf.values)
        var conflicts = 0
        var waiting = 0
        var failed = 0
        for sync in syncs.values {
            switch await sync.state {
            case .conflict: conflicts += 1
            case .waitingForDevice: waiting += 1
            case .failed, .invalid: failed += 1
            default: break
            }
        }
        var line = "watching \(syncs.count) database\(syncs.count == 1 ? "" : "s") on \(devices.count) device\(devices.count == 1 ? "" : "s")"
        if conflicts > 0 { line += "; \(conflicts) conflict\(conflicts == 1 ? "" : "s")" }
        if waiting > 0 { line += "; \(waiting) waiting for a device" }
        if failed > 0 { line += "; \(failed) failed" }
        return line
    }

    var trackedCount: Int { syncs.count }

    private func publishStatus() {
        AgentMetrics.shared.trackedDatabases(syncs.count)
        // During start-up every database is tracked one by one; one status at the end will do
        // (publishing each time asks every database for its state: quadratic in their number).
        guard started else { return }
        Task { [weak self] in
            guard let self else { return }
            let line = await self.statusLine()
            self.onStatusChange(line)
        }
    }

    static func isInStateDirectory(_ url: URL, workspace: Workspace) -> Bool {
        url.standardizedFileURL.path.hasPrefix(workspace.stateDirectory.standardizedFileURL.path)
    }
}
