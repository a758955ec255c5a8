import Foundation
import Logging

/// The agent's router: every tracked database's ``DatabaseSync``, and the events that reach them.
///
/// It owns no state about any one database. It keeps only what routing needs: which
/// ``DatabaseSync`` a local path belongs to (``DatabaseIndex``), which databases live on which
/// device, the folders it watches (and those it could not), and counts for `STATUS=`. A watch
/// event goes to its database; a device list goes to the databases on that device; the
/// database's own loop decides what to do.
///
/// Data flows one way: event → settle → snapshot → push → sidecar.
actor SyncEngine {
    /// Everything the engine is built from, injected so tests can use a fake watcher, a fake
    /// pusher and a manual clock. ``AgentParts`` builds the real ones from the configuration.
    struct Dependencies: Sendable {
        var workspace: Workspace
        var sidecars: SidecarStore
        var pool: ConnectionPool
        var watcher: any FileWatching
        var pusher: any DatabasePushing
        var clock: any Clock<Duration>
        var settleWindow: Duration
        var settleMaxWait: Duration
        var retry: RetryPolicy
        /// How often folders that could not be watched (inotify limits) are looked at. The default is 10 s.
        var unwatchedRescanInterval: Duration = .seconds(10)
        var logger: Logger
        /// Called whenever the `STATUS=` line changes.
        var onStatusChange: @Sendable (String) -> Void = { _ in }
        /// Desktop notifications of conflicts and permanent failures (nil: none).
        var notifier: DesktopNotifier?
        /// Following the device (device → desktop); nil: no database follows its device.
        var follow: Follow? = nil
    }

    /// How databases follow their device: see ``DeviceFollower``.
    struct Follow: Sendable {
        /// Whether a database whose sidecar does not say follows (config `follow`). The default is true.
        var byDefault: Bool = true
        /// Brings a device change in (the push pipeline in the agent).
        var importer: any DeviceChangeImporting
        var watch: @Sendable (_ app: DeviceFollower.App, _ folders: [String], _ onChange: @escaping @Sendable (String) -> Void) async throws -> Void
        var androidPollInterval: Duration = .seconds(5)
        var iosPollInterval: Duration = .seconds(5)
        var restartDelay: Duration = .milliseconds(500)
        var maximumRestartDelay: Duration = .seconds(30)
    }

    /// A device, by platform and id.
    struct DeviceKey: Hashable, Sendable {
        var platform: Platform
        var id: String
    }

    private let dependencies: Dependencies
    private var workspace: Workspace { dependencies.workspace }
    private var logger: Logger { dependencies.logger }
    private var index: DatabaseIndex
    private var syncs: [URL: DatabaseSync] = [:]
    private var loops: [URL: Task<Void, Never>] = [:]
    private var deviceOf: [URL: DeviceKey] = [:]
    private var watchedDirectories: Set<String> = []
    /// Folders inotify refused (watch limits), with the error; retried by ``rescanUnwatched()``.
    private var unwatched: [String: FlippioError] = [:]
    private var unwatchedSignatures: [URL: FileSignature] = [:]
    private var unwatchedRescan: Task<Void, Never>?
    /// Devices each platform's tracker last listed as ready (absent until it has reported).
    private var readyDevices: [Platform: Set<String>] = [:]
    /// How many databases are in each state, and how many wait for each device.
    private var stateCounts: [SyncState: Int] = [:]
    private var waitingOn: [DeviceKey: Int] = [:]
    /// How many databases each device has (the status line's device count, without a walk over all).
    private var databasesOn: [DeviceKey: Int] = [:]
    private var started = false
    private var lastStatus = ""
    /// A status publication is queued (``publishStatus()``): later changes join it.
    private var statusPending = false
    /// The device-side watchers of followed apps (routing only: events become ``DatabaseSync/Input/deviceChanged``).
    private let follower: DeviceFollower?
    private let deviceChanges: AsyncStream<FollowEvent>
    /// Apps followed by polling (no usable `inotifyd`), for `status`.
    private var pollingApps: Set<String> = []

    private enum FollowEvent: Sendable {
        case changed(URL)
        case polling(DeviceFollower.App)
    }
    private var deviceChangeRouting: Task<Void, Never>?
    /// Counts of pushes, for tests, logs and metrics.
    private(set) var pushCount = 0

    /// Yields when an iOS database starts waiting for its device, so the iOS poll runs only then.
    nonisolated let iosDeviceAwaited: AsyncStream<Void>
    private let iosDeviceAwaitedSignal: AsyncStream<Void>.Continuation

    init(_ dependencies: Dependencies) {
        self.dependencies = dependencies
        self.index = DatabaseIndex(stateDirectory: dependencies.workspace.stateDirectory)
        (iosDeviceAwaited, iosDeviceAwaitedSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let (changes, changed) = AsyncStream.makeStream(of: FollowEvent.self, bufferingPolicy: .unbounded)
        deviceChanges = changes
        follower = dependencies.follow.map { follow in
            DeviceFollower(.init(watch: follow.watch, clock: dependencies.clock, androidPollInterval: follow.androidPollInterval,
                                 iosPollInterval: follow.iosPollInterval, restartDelay: follow.restartDelay,
                                 maximumRestartDelay: follow.maximumRestartDelay, logger: dependencies.logger,
                                 deliver: { changed.yield(.changed($0)) }, onPollFallback: { changed.yield(.polling($0)) }))
        }
    }

    // MARK: - Start-up

    /// Removes what a killed agent left, loads every tracked database and arms the watches.
    ///
    /// Returns when the agent is ready (the moment for `READY=1`). Nothing slow happens before
    /// that: one walk of the workspace arms the watches and finds the sidecars, which are decoded
    /// in parallel off this actor, and each database gets its loop. No SQLite connection is
    /// opened and no database is looked at: the start-up check of every database (``checkAll(concurrency:)``)
    /// runs after READY, and the pool opens connections on demand. A folder inotify refuses is
    /// reported and rescanned, never fatal.
    func start() async throws {
        var steps = StepTimes()
        try FileManager.default.createDirectory(at: workspace.root, withIntermediateDirectories: true)
        // Each folder is watched before it is listed: a sidecar that appears meanwhile is either
        // listed here or reported by its watch.
        let scan = try workspace.scan { watch(directory: $0) }
        let removed = workspace.removeLeftovers(scan: scan)
        if removed > 0 { logger.info("removed \(removed) leftovers of an earlier run (snapshots, staging, temp files)") }
        steps.lap("scan and watches")
        let summaries = await SidecarStore.loadSummaries(forDatabases: scan.databases)
        steps.lap("sidecars")
        var followed: [(URL, Sidecar.Summary)] = []
        for (database, summary) in zip(scan.databases, summaries) {
            switch summary {
            case .success(let summary):
                // Its folder is one the scan just watched.
                if track(database, origin: summary.origin, state: summary.state, folderWatched: true) {
                    followed.append((database, summary))
                }
            case .failure(let error):
                // A corrupt or too-new sidecar is reported, never overwritten; the others go on.
                logger.error("not tracking \(database.path): \(error)")
            }
        }
        steps.lap("tracking")
        await route(follow: followed)
        started = true
        if follower != nil {
            let changes = deviceChanges
            deviceChangeRouting = Task { [weak self] in
                for await event in changes {
                    switch event {
                    case .changed(let database): await self?.deviceChanged(database)
                    case .polling(let app): await self?.polling(app)
                    }
                }
            }
        }
        logger.info("\(statusLine()) in \(workspace.root.path)")
        logger.debug("start-up: \(steps)")
        publishStatusNow()
    }

    /// Checks every database once, at most `concurrency` at a time, and returns when all are checked.
    ///
    /// A crash or stop loses no edit: a database whose content differs from its last push
    /// (an edit saved while the agent was down) is pushed now; an unchanged one costs a snapshot.
    /// The agent runs this right after READY. Bounded because each check opens a connection and
    /// snapshots the file: 1,000 at once took every core for seconds, kept 1,000 connections'
    /// page caches and scratch copies alive together, and left the allocator's arenas grown.
    ///
    /// A database tracked meanwhile (a new sidecar) is checked as it is tracked; one untracked
    /// meanwhile ends its check at once.
    nonisolated func checkAll(concurrency: Int = 4) async {
        let all = await self.syncsByPath()
        let width = max(1, concurrency)
        await withTaskGroup(of: Void.self) { group in
            var next = all.makeIterator()
            for _ in 0..<width {
                guard let sync = next.next() else { break }
                group.addTask { await sync.check() }
            }
            while await group.next() != nil {
                if let sync = next.next() { group.addTask { await sync.check() } }
            }
        }
    }

    private func syncsByPath() -> [DatabaseSync] {
        syncs.map { (path: $0.key.path, sync: $0.value) }.sorted { $0.path < $1.path }.map(\.sync)
    }

    /// Tracks a database found after start-up (a new sidecar, a rescan): its sidecar is read
    /// here, its follow routed, and it is checked at once.
    private func track(_ database: URL) async {
        guard syncs[database] == nil else { return }
        let sidecar: Sidecar
        do {
            sidecar = try SidecarStore.load(forDatabase: database)
        } catch {
            // A corrupt or too-new sidecar is reported, never overwritten; the others go on.
            logger.error("not tracking \(database.path): \(error)")
            return
        }
        guard track(database, origin: sidecar.origin, state: sidecar.state) else { return }
        await route(follow: sidecar, of: database)
        logger.info("now tracking \(database.path)")
        publishStatus()
    }

    /// Gives `database` its ``DatabaseSync`` and routing; returns false when it was tracked already.
    ///
    /// Synchronous, so that start-up tracks 1,000 databases without an actor hop each: the
    /// state counted is the one the loop starts in (``DatabaseSync/StateMachine/resumable(_:)``),
    /// and the loop's own changes come later through ``stateChanged(_:from:to:)``.
    ///
    /// - parameter folderWatched: whether a watch on its folder was just asked for (start-up's
    ///   scan); URL work per database was a fifth of the start-up.
    private func track(_ database: URL, origin: Sidecar.Origin, state: SyncState, folderWatched: Bool = false) -> Bool {
        guard syncs[database] == nil else { return false }
        // Tracked even when its folder cannot be watched: the unwatched rescan covers it, comparing
        // with what the files look like now (an edit before the first rescan still counts).
        if !folderWatched { watch(directory: database.deletingLastPathComponent()) }
        if !unwatched.isEmpty, unwatched[database.deletingLastPathComponent().standardizedFileURL.path] != nil {
            unwatchedSignatures[database] = FileSignature(database)
        }
        index.track(database)
        let sync = DatabaseSync(database: database, origin: origin, state: state, dependencies: syncDependencies())
        syncs[database] = sync
        // Detached: the loop needs none of the caller's task-local values, and inheriting them
        // copied them into every one of 1,000 loops (1 KB each).
        loops[database] = Task.detached { await sync.run() }
        let device = DeviceKey(platform: origin.platform, id: origin.deviceID)
        deviceOf[database] = device
        databasesOn[device, default: 0] += 1
        count(DatabaseSync.StateMachine.resumable(state), on: device, by: 1)
        if let ready = readyDevices[device.platform] { sync.send(.deviceListed(ready: ready.contains(device.id))) }
        return true
    }

    private func untrack(_ database: URL) async {
        guard let sync = syncs.removeValue(forKey: database) else { return }
        let device = deviceOf.removeValue(forKey: database)
        let state = await sync.state
        await sync.stop()
        loops.removeValue(forKey: database)?.cancel()
        if let device {
            count(state, on: device, by: -1)
            databasesOn[device, default: 0] -= 1
            if databasesOn[device] == 0 { databasesOn[device] = nil }
        }
        index.untrack(database)
        unwatchedSignatures[database] = nil
        await follower?.setFollowed(database, remote: nil)
        await dependencies.pool.close(database)
        logger.info("stopped tracking \(database.path)")
        publishStatus()
    }

    private func syncDependencies() -> DatabaseSync.Dependencies {
        let pool = dependencies.pool
        return DatabaseSync.Dependencies(
            pusher: dependencies.pusher, sidecars: dependencies.sidecars, workspace: workspace,
            isWriterActive: { database in (try? await pool.isWriterActive(database)) ?? false },
            clock: dependencies.clock, settleWindow: dependencies.settleWindow, settleMaxWait: dependencies.settleMaxWait,
            retry: dependencies.retry, logger: logger,
            onStateChange: { [weak self] database, from, to in await self?.stateChanged(database, from: from, to: to) },
            onOutcome: { [weak self] _, outcome in await self?.pushEnded(outcome) },
            onForgotten: { [weak self] database in await self?.forgotten(database) },
            notifier: dependencies.notifier,
            importer: dependencies.follow?.importer,
            deviceSettleWindow: dependencies.settleWindow,
            onSidecarAdopted: { [weak self] database, sidecar in await self?.route(follow: sidecar, of: database) })
    }

    // MARK: - Following

    /// Whether `database` follows its device, as its sidecar says (or the configured default).
    private func route(follow sidecar: Sidecar, of database: URL) async {
        guard let follower, let follow = dependencies.follow else { return }
        let follows = sidecar.follow ?? follow.byDefault
        await follower.setFollowed(database, remote: follows ? sidecar.origin.remoteDatabase : nil)
    }

    /// The start-up's databases, routed in one call: ``DeviceFollower/setFollowed(_:remote:)``
    /// looks through every followed database of every app, so one call per database made
    /// start-up quadratic.
    private func route(follow databases: [(URL, Sidecar.Summary)]) async {
        guard let follower, let follow = dependencies.follow else { return }
        let followed = databases.compactMap { database, summary in
            (summary.follow ?? follow.byDefault) ? (database, summary.origin.remoteDatabase) : nil
        }
        await follower.follow(followed)
    }

    /// The device reported a change to a followed database (or its poll is due).
    private func deviceChanged(_ database: URL) {
        syncs[database]?.send(.deviceChanged)
    }

    private func polling(_ app: DeviceFollower.App) {
        pollingApps.insert(app.description)
        lastStatus = ""  // write agent.json again, with the app in it
        publishStatus()
    }

    /// The follower (tests).
    var deviceFollower: DeviceFollower? { follower }

    // MARK: - Watches

    /// Watches `root` and every folder below it (each before it is listed), never following symlinks.
    private func watchTree(_ root: URL) {
        _ = try? workspace.scan(below: root) { watch(directory: $0) }
    }

    private func watch(directory: URL) {
        let path = directory.standardizedFileURL.path
        guard !watchedDirectories.contains(path) else { return }
        do {
            try dependencies.watcher.watch(directory: directory)
            watchedDirectories.insert(path)
            unwatched[path] = nil
        } catch let error as FlippioError where error.code == .watchLimitReached {
            if unwatched.updateValue(error, forKey: path) == nil {
                logger.warning("\(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
            }
            startUnwatchedRescan()
        } catch {
            logger.error("cannot watch \(path): \(error)")
        }
    }

    /// Folders that could not be watched, and what raises the limit.
    var unwatchedFolders: (count: Int, remedy: String?) {
        (unwatched.count, unwatched.values.first?.remedy)
    }

    private func startUnwatchedRescan() {
        guard unwatchedRescan == nil else { return }
        let clock = dependencies.clock
        let interval = dependencies.unwatchedRescanInterval
        unwatchedRescan = Task { [weak self] in
            while !Task.isCancelled {
                do { try await clock.sleep(for: interval) } catch { return }
                guard let self, await self.rescanUnwatched() else { return }
            }
        }
        publishStatus()
    }

    /// Tries to watch the refused folders again; for databases whose folder is still unwatched,
    /// compares the files' sizes, times and inodes with the last look, and reports changes as
    /// watch events would. Returns whether folders remain unwatched.
    func rescanUnwatched() async -> Bool {
        for path in unwatched.keys.sorted() {
            watch(directory: URL(fileURLWithPath: path, isDirectory: true))
        }
        for (database, sync) in syncs {
            let folder = database.deletingLastPathComponent().standardizedFileURL.path
            guard unwatched[folder] != nil else {
                unwatchedSignatures[database] = nil
                continue
            }
            let signature = FileSignature(database)
            logger.trace("rescan of unwatched \(database.lastPathComponent): \(signature)")
            if let previous = unwatchedSignatures.updateValue(signature, forKey: database), previous != signature {
                sync.send(.fileChanged)
                sync.send(.sidecarChanged)
            }
        }
        if unwatched.isEmpty {
            logger.notice("every workspace folder is watched again")
            unwatchedRescan = nil
            publishStatus()
            return false
        }
        await rescan()
        return true
    }

    // MARK: - Events

    /// Consumes the watcher's events until it closes, a whole read of the kernel queue per
    /// wake-up (a burst of commits is tens of thousands of events; see ``FileWatching/eventBatches``).
    func consumeWatchEvents() async {
        for await batch in dependencies.watcher.eventBatches {
            for event in batch { await handle(event) }
        }
    }

    func handle(_ event: WatchEvent) async {
        logger.trace("watch event: \(event)")
        switch event {
        case .changed(let directory, let name):
            switch index.classify(directory: directory, name: name) {
            case .database(let database):
                syncs[database]?.send(.fileChanged)
            case .sidecar(let database):
                if let sync = syncs[database] {
                    sync.send(.sidecarChanged)
                } else if FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: database).path) {
                    await track(database)
                    syncs[database]?.send(.pushRequested)
                }
            case .ignored:
                break
            }
        case .directoryCreated(let directory):
            // A new folder (a newly pulled app or device): watch it and pick up databases already in it.
            guard !Self.isInStateDirectory(directory, workspace: workspace) else { return }
            // `mkdir -p` makes the whole chain before our watch on the first folder exists, so
            // watch everything below it too, then look for sidecars already there.
            watchTree(directory)
            await rescan()
        case .directoryRemoved(let directory):
            watchedDirectories.remove(directory.standardizedFileURL.path)
            await rescan()
        case .overflow:
            logger.warning("the inotify queue overflowed; rescanning every tracked database")
            await rescan()
            for sync in syncs.values {
                sync.send(.sidecarChanged)
                sync.send(.pushRequested)
            }
        }
    }

    /// Finds databases added or removed while events were lost (new sidecars, forgotten ones).
    private func rescan() async {
        guard let databases = try? workspace.trackedDatabases() else { return }
        let current = Set(databases)
        for database in databases where syncs[database] == nil {
            await track(database)
            syncs[database]?.send(.pushRequested)
        }
        for database in syncs.keys where !current.contains(database) { await untrack(database) }
    }

    private func forgotten(_ database: URL) async {
        await untrack(database)
    }

    private func pushEnded(_ outcome: PushPipeline.Outcome) {
        if case .pushed = outcome { pushCount += 1 }
    }

    private func stateChanged(_ database: URL, from: SyncState, to: SyncState) {
        guard let device = deviceOf[database] else { return }
        count(from, on: device, by: -1)
        count(to, on: device, by: 1)
        if to == .waitingForDevice && device.platform == .ios { iosDeviceAwaitedSignal.yield() }
        publishStatus()
    }

    private func count(_ state: SyncState, on device: DeviceKey, by delta: Int) {
        stateCounts[state, default: 0] += delta
        if state == .waitingForDevice { waitingOn[device, default: 0] += delta }
        if waitingOn[device] == 0 { waitingOn[device] = nil }
    }

    // MARK: - Devices

    /// A platform's list of connected devices changed: each database on that platform hears
    /// whether its device is listed as ready (one waiting for it then pushes).
    ///
    /// - parameter platform: whose devices `devices` are (the others' last lists are kept).
    func devicesChanged(_ devices: [Device], platform: Platform) async {
        let ready = Set(devices.filter { $0.state == .ready && $0.platform == platform }.map(\.id))
        readyDevices[platform] = ready
        await follower?.devicesChanged(ready: ready, platform: platform)
        for (database, device) in deviceOf where device.platform == platform {
            syncs[database]?.send(.deviceListed(ready: ready.contains(device.id)))
        }
    }

    /// The devices of `platform` that some database is waiting for (for the iOS poll, which runs
    /// only while this is not empty).
    func devicesAwaited(on platform: Platform) -> Set<String> {
        Set(waitingOn.keys.filter { $0.platform == platform }.map(\.id))
    }

    // MARK: - Shutdown

    /// Stops taking work and lets in-flight pushes finish within `grace`; past it, abandons them
    /// (their tools are killed; the device keeps the old database or has the new one).
    func shutdown(grace: Duration) async {
        unwatchedRescan?.cancel()
        await follower?.stopAll()
        deviceChangeRouting?.cancel()
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
        for loop in loops.values { loop.cancel() }
        await dependencies.sidecars.flush()
        await dependencies.pool.closeAll()
        dependencies.watcher.close()
    }

    // MARK: - Status

    func statusLine() -> String {
        let devices = databasesOn.count
        var line = "watching \(syncs.count) database\(syncs.count == 1 ? "" : "s") on \(devices) device\(devices == 1 ? "" : "s")"
        let conflicts = stateCounts[.conflict, default: 0]
        let waiting = stateCounts[.waitingForDevice, default: 0]
        let failed = stateCounts[.failed, default: 0] + stateCounts[.invalid, default: 0]
        if conflicts > 0 { line += "; \(conflicts) conflict\(conflicts == 1 ? "" : "s")" }
        if waiting > 0 { line += "; \(waiting) waiting for a device" }
        if failed > 0 { line += "; \(failed) failed" }
        if !unwatched.isEmpty { line += "; \(unwatched.count) folder\(unwatched.count == 1 ? "" : "s") unwatched (inotify limit)" }
        if !pollingApps.isEmpty { line += "; \(pollingApps.count) app\(pollingApps.count == 1 ? "" : "s") followed by polling" }
        return line
    }

    var trackedCount: Int { syncs.count }

    /// The sync of a tracked database (tests).
    func sync(for database: URL) -> DatabaseSync? { syncs[database] }

    /// Publishes the status soon: every change calls this, and changes that come together (the
    /// start-up checks move 1,000 databases through `pushing` and back) make one publication.
    ///
    /// At most one publication is queued; it runs on this actor after the work in hand, and
    /// reads the counts as they are then. During start-up nothing is published: ``start()``
    /// publishes once at its end.
    private func publishStatus() {
        guard started, !statusPending else { return }
        statusPending = true
        Task { self.publishStatusNow() }
    }

    private func publishStatusNow() {
        statusPending = false
        AgentMetrics.shared.trackedDatabases(syncs.count)
        let line = statusLine()
        guard line != lastStatus else { return }
        lastStatus = line
        dependencies.onStatusChange(line)
        AgentStatusFile(pid: getpid(), status: line, unwatchedFolders: unwatched.count,
                        unwatchedRemedy: unwatched.values.first?.remedy, pollingApps: pollingApps.sorted()).write(in: workspace)
    }

    static func isInStateDirectory(_ url: URL, workspace: Workspace) -> Bool {
        url.standardizedFileURL.path.hasPrefix(workspace.stateDirectory.standardizedFileURL.path)
    }
}
