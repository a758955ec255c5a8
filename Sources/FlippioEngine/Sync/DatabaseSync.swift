import Foundation
import Logging
import Synchronization

/// What pushes a database: ``PushPipeline`` in the agent, a recording fake in tests.
protocol DatabasePushing: Sendable {
    func push(_ database: URL, mode: PushPipeline.Mode) async -> PushPipeline.Outcome
}

extension PushPipeline: DatabasePushing {
    func push(_ database: URL, mode: Mode) async -> Outcome {
        await push(database, mode: mode, lockTimeout: .seconds(120))
    }
}

/// What brings a device change into a database: ``PushPipeline`` in the agent, a fake in tests.
protocol DeviceChangeImporting: Sendable {
    func bringIn(_ database: URL) async -> PushPipeline.BringInOutcome
}

extension PushPipeline: DeviceChangeImporting {
    func bringIn(_ database: URL) async -> BringInOutcome {
        await bringIn(database, lockTimeout: .seconds(120))
    }
}

/// One tracked database inside the agent: the single owner of everything about it.
///
/// Like syncthing's per-folder service loop, a `DatabaseSync` runs one loop (``run()``) over its
/// own inputs — file changed, sidecar changed by another process, device listed or gone, push
/// requested, and its own settle, overdue and retry timers on an injected clock — and nothing
/// about this database lives anywhere else: ``SyncEngine`` only routes inputs here.
///
/// Pushes run one at a time, in a child task whose outcome comes back through the same loop; a
/// change during a push queues one more. Pushes of different databases run concurrently.
///
/// The sidecar is the state shared with other processes. Every write to it happens under the
/// database's lock and starts from the file on disk (``SidecarStore/update(forDatabase:_:)``); a
/// sidecar that another process changed is adopted (``SidecarStore/diskState(forDatabase:)``),
/// never overwritten from memory.
actor DatabaseSync {
    /// Everything a `DatabaseSync` uses, injected so tests can drive it with fakes and a manual clock.
    struct Dependencies: Sendable {
        var pusher: any DatabasePushing
        var sidecars: SidecarStore
        var workspace: Workspace
        /// Whether another process holds a write transaction on the database now.
        var isWriterActive: @Sendable (URL) async -> Bool
        var clock: any Clock<Duration>
        /// The quiet period before a push. See ``FlippioConfiguration/settleWindow``.
        var settleWindow: Duration
        /// The longest a busy writer can delay a push. See ``FlippioConfiguration/settleMaxWait``.
        var settleMaxWait: Duration
        var retry: RetryPolicy
        var logger: Logger
        /// Called on every change of ``state`` (for `STATUS=`, metrics and the iOS device poll).
        var onStateChange: @Sendable (_ database: URL, _ from: SyncState, _ to: SyncState) async -> Void = { _, _, _ in }
        /// Called after every push attempt with its outcome (logs and metrics).
        var onOutcome: @Sendable (_ database: URL, _ outcome: PushPipeline.Outcome) async -> Void = { _, _ in }
        /// Called once when the database stops being tracked from the inside (its sidecar is gone).
        var onForgotten: @Sendable (_ database: URL) async -> Void = { _ in }
        /// Tells the desktop about conflicts and permanent failures (nil: no notifications).
        var notifier: DesktopNotifier?
        /// Brings the app's changes in (following). Nil: device changes are ignored.
        var importer: (any DeviceChangeImporting)? = nil
        /// The quiet period after a device-side event before the device is looked at (apps write
        /// in bursts: a transaction touches the `-journal` or `-wal` several times). The default is 300 ms.
        var deviceSettleWindow: Duration = .milliseconds(300)
        /// Called when another process's sidecar is adopted (the engine re-routes `follow`).
        var onSidecarAdopted: @Sendable (_ database: URL, _ sidecar: Sidecar) async -> Void = { _, _ in }
    }

    /// What reaches the loop.
    enum Input: Sendable {
        /// The database, its `-wal` or its `-journal` changed.
        case fileChanged
        /// Its sidecar changed on disk (maybe our own write: the loop tells by content).
        case sidecarChanged
        /// Check now and push what differs (start-up, `flippio push` through the agent, a rescan).
        case pushRequested
        /// ``pushRequested`` for ``check()``, whose caller waits (by `id`) until the check is over.
        case checkRequested(id: Int)
        /// The device tracker lists this database's device as ready, or not.
        case deviceListed(ready: Bool)
        case pushFinished(PushPipeline.Outcome)
        /// The app's copy changed on the device (its watcher's event, or a poll): looked at after
        /// the device settle window.
        case deviceChanged
        case bringInFinished(PushPipeline.BringInOutcome)
        case timerFired(Timer, generation: Int)
    }

    /// The loop's queue, counted: what ``send(_:)`` coalesces by.
    private struct InputQueue {
        /// Inputs queued, and taken by the loop, since it was made.
        var sent = 0
        var taken = 0
        var lastSentIsFileChange = false
        /// The last input queued is a ``Input/fileChanged`` still in the queue (the loop takes in
        /// order: what it has not taken is the tail, and that tail ends with the last input sent).
        var endsWithUntakenFileChange: Bool { lastSentIsFileChange && taken < sent }
    }

    enum Timer: Sendable, CaseIterable {
        /// The quiet period after the last change.
        case settle
        /// The upper bound of the settle wait since the first unpushed change.
        case overdue
        /// A transient failure's backoff, or a look at a device listed as ready.
        case retry
        /// The quiet period after the first device-side event of a burst.
        case deviceSettle
    }

    let database: URL
    let origin: Sidecar.Origin
    private let dependencies: Dependencies
    private let logger: Logger
    private var machine: StateMachine
    private let inputs: AsyncStream<Input>
    private let inputContinuation: AsyncStream<Input>.Continuation
    /// What is queued for the loop, as far as ``send(_:)`` needs to know to coalesce changes.
    private let queue = Mutex(InputQueue())
    private var timers: [Timer: Task<Void, Never>] = [:]
    private var generations: [Timer: Int] = [:]
    /// When the latest change (re)started the quiet period: an instant of the injected clock.
    /// A change does not re-arm a running settle timer (a burst of 10,000 commits is ~45,000
    /// events, and a cancelled sleep and a new task each cost more than the event's handling);
    /// the timer, when it fires, sleeps again for what is left of the quiet period.
    private var quietSince: Any?
    /// Set when the overdue timer fired: a busy writer no longer delays the push.
    private var overdue = false
    private var pushTask: Task<Void, Never>?
    private var bringInTask: Task<Void, Never>?
    private(set) var bringInsStarted = 0
    /// Sidecar writes, chained so they land in order without blocking the loop on the lock.
    private var persistTask: Task<Void, Never>?
    /// Sidecar writes queued and not finished (tests wait on it).
    private(set) var pendingSidecarWrites = 0
    private var stopped = false
    private(set) var pushesStarted = 0
    /// Inputs the loop has handled (tests wait on it before moving a manual clock).
    private(set) var inputsHandled = 0
    /// Callers of ``check()`` whose request the loop has not handled yet, by id.
    private var checksQueued: [Int: CheckedContinuation<Void, Never>] = [:]
    /// Callers of ``check()`` waiting for the push their check started (or found in flight).
    private var checksPushing: [CheckedContinuation<Void, Never>] = []
    private var lastCheckID = 0

    init(database: URL, sidecar: Sidecar, dependencies: Dependencies) {
        self.init(database: database, origin: sidecar.origin, state: sidecar.state, dependencies: dependencies)
    }

    /// - parameter state: the sidecar's state (the loop starts from ``StateMachine/resumable(_:)`` of it).
    init(database: URL, origin: Sidecar.Origin, state: SyncState, dependencies: Dependencies) {
        self.database = database
        self.origin = origin
        self.dependencies = dependencies
        self.logger = Logger.forDatabase(origin, file: database, base: dependencies.logger)
        self.machine = StateMachine(state: state)
        (inputs, inputContinuation) = AsyncStream.makeStream(of: Input.self, bufferingPolicy: .unbounded)
    }

    /// The current state, for `STATUS=`, the device poll and tests.
    var state: SyncState { machine.state }

    var isPushing: Bool { pushTask != nil }

    /// Hands an input to the loop. Never blocks, never reorders.
    ///
    /// A ``Input/fileChanged`` sent while the last input queued is a `.fileChanged` the loop has
    /// not taken yet is dropped: handling that one starts the quiet period no earlier than this
    /// change, so this one would add nothing. A burst of commits is tens of thousands of events,
    /// and each input queued resumes the loop's task (a thread wake-up) to do nothing new. Only an
    /// adjacent one is dropped, so a change after any other input (a push's end, a sidecar
    /// adopted from another process) is still handled after it.
    nonisolated func send(_ input: Input) {
        queue.withLock { queue in
            let isFileChange = if case .fileChanged = input { true } else { false }
            if isFileChange && queue.endsWithUntakenFileChange { return }
            queue.sent += 1
            queue.lastSentIsFileChange = isFileChange
            // Under the lock, so that the stream's order is the order counted here.
            inputContinuation.yield(input)
        }
    }

    /// Inputs queued since the loop was made (after coalescing), including the loop's own (timers,
    /// a push's end). Tests wait for ``inputsHandled`` to reach it.
    nonisolated var inputsSent: Int { queue.withLock { $0.sent } }

    /// Checks the database now, as ``Input/pushRequested`` does, and returns once the check is
    /// over: the push it started (or found in flight) ended, or it needed none (a conflict waits
    /// for the user; an edit settling pushes on its own timer).
    ///
    /// The engine's start-up check (``SyncEngine/checkAll(concurrency:)``) waits on it to run a
    /// few databases at a time. Returns at once when the loop has stopped, or when it stops meanwhile.
    func check() async {
        guard !stopped else { return }
        lastCheckID += 1
        let id = lastCheckID
        await withCheckedContinuation { continuation in
            checksQueued[id] = continuation
            send(.checkRequested(id: id))
        }
    }

    /// Ends the checks waiting for a push (none is in flight now), or every check when stopping.
    private func endChecks(all: Bool = false) {
        var ended = checksPushing
        checksPushing = []
        if all {
            ended += checksQueued.values
            checksQueued = [:]
        }
        for check in ended { check.resume() }
    }

    /// The loop: handles inputs one at a time until ``stop()``.
    func run() async {
        for await input in inputs {
            // Taken: a change from now on is queued behind it, and restarts the quiet period again.
            queue.withLock { $0.taken += 1 }
            guard !stopped else { break }
            await handle(input)
            inputsHandled += 1
        }
    }

    /// Stops taking work, and waits for an in-flight push and sidecar write to end (the caller
    /// bounds the wait).
    func stop() async {
        stopped = true
        cancelTimers(everything: true)
        inputContinuation.finish()
        endChecks(all: true)
        await pushTask?.value
        await bringInTask?.value
        await persistTask?.value
    }

    /// Cancels an in-flight push: its tool calls are killed with their process groups. The device
    /// keeps the old database or has the new one (the bridges rename, never write in place).
    func abandon() {
        stopped = true
        cancelTimers(everything: true)
        inputContinuation.finish()
        endChecks(all: true)
        pushTask?.cancel()
        bringInTask?.cancel()
    }

    // MARK: - Inputs

    private func handle(_ input: Input) async {
        switch input {
        case .fileChanged:
            await apply(.fileChanged)
        case .sidecarChanged:
            await sidecarChanged()
        case .pushRequested:
            await apply(.pushRequested)
        case .checkRequested(let id):
            await apply(.pushRequested)
            guard let check = checksQueued.removeValue(forKey: id) else { return }
            if pushTask == nil { check.resume() } else { checksPushing.append(check) }
        case .deviceListed(let ready):
            await apply(.deviceListed(ready: ready))
        case .pushFinished(let outcome):
            pushTask = nil
            report(outcome)
            await dependencies.onOutcome(database, outcome)
            await apply(.pushFinished(outcome))
            if pushTask == nil { endChecks() }  // else a change during the push queued one more
        case .deviceChanged:
            // The first event of a burst arms the window; later ones fall inside it. It is not
            // pushed back by each event: an app that writes all the time is still followed, one
            // look per window (a look that finds more to do runs again: see the state machine).
            guard dependencies.importer != nil, timers[.deviceSettle] == nil else { return }
            arm(.deviceSettle, after: dependencies.deviceSettleWindow)
        case .bringInFinished(let outcome):
            bringInTask = nil
            report(outcome)
            await apply(.bringInFinished(outcome))
        case .timerFired(let timer, let generation):
            guard generations[timer] == generation else { return }  // re-armed or cancelled since
            timers[timer] = nil
            switch timer {
            case .settle:
                // A change came while the timer ran: the quiet period ends a window after it.
                if let quiet = Self.elapsed(on: dependencies.clock, since: quietSince), quiet < dependencies.settleWindow {
                    arm(.settle, after: dependencies.settleWindow - quiet)
                    return
                }
                let writerActive = await dependencies.isWriterActive(database)
                await apply(.settled(writerActive: writerActive, overdue: overdue))
            case .overdue:
                overdue = true
                // A file that never goes quiet re-arms the settle timer forever (a tool that polls
                // a WAL database touches its -wal at every read): the upper bound pushes it anyway.
                if machine.state == .dirty {
                    let writerActive = await dependencies.isWriterActive(database)
                    await apply(.settled(writerActive: writerActive, overdue: true))
                }
            case .retry:
                await apply(.retryDue)
            case .deviceSettle:
                await apply(.deviceChanged)
            }
        }
    }

    private func sidecarChanged() async {
        switch dependencies.sidecars.diskState(forDatabase: database) {
        case .ownWrite:
            break
        case .removed:
            logger.info("no longer tracked (its sidecar is gone)")
            await forget()
        case .changed(let sidecar):
            logger.debug("adopting the sidecar another process wrote (state \(sidecar.state.rawValue))")
            await dependencies.onSidecarAdopted(database, sidecar)
            await apply(.sidecarAdopted(sidecar.state))
        case .unreadable(let error):
            logger.error("\(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
        }
    }

    private func apply(_ event: StateMachine.Event) async {
        let before = machine.state
        let actions = machine.handle(event)
        logger.trace("\(event): \(before.rawValue) → \(machine.state.rawValue), actions \(actions)")
        for action in actions {
            if stopped && action != .stop { continue }
            await perform(action)
        }
        // The settle upper bound counts from the first unpushed change, also one made during a push.
        if machine.state == .dirty && timers[.overdue] == nil && !overdue && !stopped {
            arm(.overdue, after: dependencies.settleMaxWait)
        }
        if machine.state != before {
            await dependencies.onStateChange(database, before, machine.state)
            await notify(machine.state, error: nil, willRetry: nil)
        }
    }

    // MARK: - Actions

    private func perform(_ action: StateMachine.Action) async {
        switch action {
        case .persist:
            persist(nil)
        case .settle:
            quietSince = Self.now(on: dependencies.clock)
            if timers[.settle] == nil { arm(.settle, after: dependencies.settleWindow) }
        case .cancelTimers:
            cancelTimers()
        case .startPush:
            cancelTimers()
            overdue = false
            pushesStarted += 1
            let pusher = dependencies.pusher
            let database = self.database
            pushTask = Task {
                let started = ContinuousClock.now
                let outcome = await pusher.push(database, mode: .normal)
                AgentMetrics.shared.pushEnded(outcome, after: .now - started)
                self.send(.pushFinished(outcome))
            }
        case .recordFailure(let error, let attempt):
            var retryAt: Date?
            if let attempt {
                let delay = backoff(attempt)
                retryAt = Date().addingTimeInterval(Double(delay.milliseconds) / 1000)
                arm(.retry, after: delay)
            }
            persist((error, retryAt))
            await notify(machine.state, error: error, willRetry: attempt != nil)
            if machine.state == .waitingForDevice {
                logger.warning("waiting for the device: \(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
            } else if let retryAt {
                logger.warning("push failed, retrying at \(retryAt): \(error.message)")
            } else {
                logger.error("push failed: \(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
            }
        case .recheckDevice(let attempt):
            let delay = max(backoff(attempt), .milliseconds(200))
            logger.info("\(origin.deviceID) is listed as ready; trying again in \(delay)")
            arm(.retry, after: delay)
        case .stop:
            await forget()
        case .startBringIn:
            guard let importer = dependencies.importer else {
                send(.bringInFinished(.unchanged))
                return
            }
            bringInsStarted += 1
            let database = self.database
            bringInTask = Task {
                let outcome = await importer.bringIn(database)
                self.send(.bringInFinished(outcome))
            }
        case .bringInFailed(let error, let attempt):
            if let attempt {
                let delay = backoff(attempt)
                logger.warning("the app's change could not be brought in yet, trying again in \(delay): \(error.message)")
                arm(.retry, after: delay)
            } else if StateMachine.meansDeviceUnavailable(error.code) {
                logger.info("the app's change will be looked at when the device is back: \(error.message)")
            } else {
                logger.error("the app's change was not brought in: \(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
            }
        }
    }

    private func notify(_ state: SyncState, error: FlippioError?, willRetry: Bool?) async {
        await dependencies.notifier?.stateChanged(database: database, device: origin.deviceID, app: origin.appID,
                                                  to: state, error: error, willRetry: willRetry)
    }

    /// The sidecar is gone: stop, and let the engine drop this database.
    private func forget() async {
        guard !stopped else { return }
        stopped = true
        cancelTimers(everything: true)
        inputContinuation.finish()
        endChecks(all: true)
        await dependencies.onForgotten(database)
    }

    private func backoff(_ attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return dependencies.retry.delay(forAttempt: attempt, using: &generator)
    }

    /// Writes the machine's state as of the moment the write runs (so a write that waited for
    /// the lock never puts back an older state), under the database's lock, from the file on disk.
    private func persist(_ failure: (FlippioError, Date?)?) {
        let previous = persistTask
        pendingSidecarWrites += 1
        persistTask = Task {
            await previous?.value
            await self.writeSidecar(failure)
            await self.sidecarWriteEnded()
        }
    }

    private func sidecarWriteEnded() { pendingSidecarWrites -= 1 }

    private func writeSidecar(_ failure: (FlippioError, Date?)?) async {
        // While pushing, the pipeline owns the sidecar (it holds the lock and records the outcome).
        // While bringing in, so does the bring-in; and `bringing-in` is never written.
        let state = machine.state
        guard state != .pushing, state != .bringingIn, !stopped else { return }
        do {
            let lock = try dependencies.workspace.lock(for: origin.remoteDatabase)
            // Another process (a pull, a resolve) holding the lock will write a newer sidecar that
            // the loop then adopts: no need to wait long for this one.
            try await lock.acquire(timeout: .seconds(5))
            defer { lock.release() }
            let current = machine.state
            guard current != .pushing, current != .bringingIn, !stopped else { return }
            try await dependencies.sidecars.update(forDatabase: database) { sidecar in
                sidecar.state = current
                if let (error, retryAt) = failure, current == .failed || current == .waitingForDevice {
                    sidecar.lastError = .init(error, at: Date())
                    sidecar.nextRetryAt = retryAt
                } else if current == .dirty {
                    sidecar.nextRetryAt = nil
                }
            }
        } catch FlippioError.notTracked {
            send(.sidecarChanged)  // forgotten meanwhile: the loop finds out and stops
        } catch {
            logger.debug("sidecar not updated: \(error)")
        }
    }

    // MARK: - Timers

    /// The injected clock's now, as an opaque mark for ``elapsed(on:since:)``.
    private static func now<C: Clock>(on clock: C) -> Any { clock.now }

    /// The time since `mark` on `clock`, or nil when `mark` is not one of its instants.
    private static func elapsed<C: Clock>(on clock: C, since mark: Any?) -> Duration? where C.Duration == Duration {
        guard let mark = mark as? C.Instant else { return nil }
        return mark.duration(to: clock.now)
    }

    private func arm(_ timer: Timer, after delay: Duration) {
        timers[timer]?.cancel()
        let generation = (generations[timer] ?? 0) + 1
        generations[timer] = generation
        let clock = dependencies.clock
        timers[timer] = Task { [weak self] in
            do { try await clock.sleep(for: delay) } catch { return }
            self?.send(.timerFired(timer, generation: generation))
        }
    }

    /// Cancels the timers; the device settle window survives unless `everything`: a push or an
    /// edit does not make the app's change go away (a push that finds nothing to send does not
    /// look at the device).
    private func cancelTimers(everything: Bool = false) {
        for (timer, task) in timers where everything || timer != .deviceSettle {
            task.cancel()
            generations[timer, default: 0] += 1
        }
        timers = timers.filter { !everything && $0.key == .deviceSettle }
    }

    /// Which timers are armed now (for tests).
    var armedTimers: Set<Timer> { Set(timers.keys) }

    // MARK: - Logs

    private func report(_ outcome: PushPipeline.BringInOutcome) {
        switch outcome {
        case .broughtIn(let rows):
            logger.info("brought in \(rows) row\(rows == 1 ? "" : "s") the app wrote")
        case .sameContent:
            logger.debug("the app's copy changed only in its header; nothing to bring in")
        case .unchanged:
            logger.trace("the device holds the version expected; nothing to bring in")
        case .localChanged:
            logger.debug("the app and the desktop both changed the database; pushing merges them")
        case .forgotten, .failed:
            break  // `.stop` / `.bringInFailed`
        }
    }

    private func report(_ outcome: PushPipeline.Outcome) {
        switch outcome {
        case .pushed(let record):
            let tables = record.changedTables.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            logger.info("pushed \(record.bytes) bytes in \(record.durationMilliseconds) ms\(tables.isEmpty ? "" : "; rows: \(tables)")")
        case .unchanged:
            logger.debug("content equals the device's; nothing pushed")
        case .conflict(let copy):
            logger.warning("conflict: the app changed its copy; the device's version is at \(copy.path)",
                           metadata: ["fix": "flippio resolve \(database.path) --keep-local|--keep-device"])
        case .invalid(let error):
            logger.error("not pushed: \(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
        case .forgotten:
            logger.info("forgotten during the push; stopping")
        case .failed:
            break  // logged with `.recordFailure`
        }
    }
}
