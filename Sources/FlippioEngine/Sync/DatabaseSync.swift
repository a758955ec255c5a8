import Foundation
import Logging

/// One tracked database inside the agent: its state machine, and the I/O the machine asks for.
///
/// Pushes of one database are serialised here (one at a time, a change during a push queues one
/// more); pushes of different databases run concurrently, each in its own `DatabaseSync`. The
/// sidecar is the persistent half of the state: every transition is written to it.
actor DatabaseSync {
    let database: URL
    private var machine: StateMachine
    private let pipeline: PushPipeline
    private let sidecars: SidecarStore
    private let retry: RetryPolicy
    private let logger: Logger
    /// Asks the settler to (re)start this database's quiet-period timer.
    private let requestSettle: @Sendable (URL) async -> Void
    /// Called after every push attempt with its outcome (for logs, metrics and `STATUS=`).
    private let onOutcome: @Sendable (URL, PushPipeline.Outcome) async -> Void
    private var pushTask: Task<Void, Never>?
    private var retryTask: Task<Void, Never>?
    private var stopped = false

    init(database: URL, resumingFrom state: Sidecar.SyncState, pipeline: PushPipeline, sidecars: SidecarStore,
         retry: RetryPolicy, logger: Logger,
         requestSettle: @escaping @Sendable (URL) async -> Void,
         onOutcome: @escaping @Sendable (URL, PushPipeline.Outcome) async -> Void) {
        self.database = database
        self.machine = StateMachine(resumingFrom: state)
        self.pipeline = pipeline
        self.sidecars = sidecars
        self.retry = retry
        var logger = logger
        logger[metadataKey: "db"] = "\(database.lastPathComponent)"
        self.logger = logger
        self.requestSettle = requestSettle
        self.onOutcome = onOutcome
    }

    /// The current state, for tests and `STATUS=`.
    var state: StateMachine.State { machine.state }

    func send(_ event: StateMachine.Event) async {
        guard !stopped else { return }
        let before = machine.state
        let actions = machine.handle(event)
        logger.trace("\(event): \(before) → \(machine.state), actions \(actions)")
        for action in actions { await perform(action) }
    }

    /// Stops taking new work; waits for an in-flight push to end (the caller bounds the wait).
    func stop() async {
        stopped = true
        retryTask?.cancel()
        await pushTask?.value
    }

    /// Cancels an in-flight push: its tool calls are killed with their process groups. The device
    /// keeps the old database or has the new one (the bridges rename, never write in place).
    func abandon() {
        stopped = true
        retryTask?.cancel()
        pushTask?.cancel()
    }

    var isPushing: Bool { pushTask != nil }

    private func perform(_ action: StateMachine.Action) async {
        switch action {
        case .persist(let state):
            await updateSidecar { sidecar in
                sidecar.state = state
            }
        case .settle:
            await requestSettle(database)
        case .startPush:
            retryTask?.cancel()
            retryTask = nil
            let pipeline = self.pipeline
            let database = self.database
            pushTask = Task {
                let started = ContinuousClock.now
                let outcome = await pipeline.push(database)
                AgentMetrics.shared.pushEnded(outcome, after: .now - started)
                await self.pushEnded(outcome)
            }
        case .recordFailure(let error, let waiting, let attempt):
            var retryAt: Date?
            if let attempt, !stopped {
                var rng = SystemRandomNumberGenerator()
                let delay = retry.delay(forAttempt: attempt, using: &rng)
                retryAt = Date().addingTimeInterval(Double(delay.milliseconds) / 1000)
                retryTask = Task { [weak self] in
                    try? await Task.sleep(for: delay)
                    guard !Task.isCancelled else { return }
                    await self?.send(.retryDue)
                }
            }
            await updateSidecar { sidecar in
                sidecar.state = waiting ? .waitingForDevice : .failed
                sidecar.lastError = .init(error, at: Date())
                sidecar.nextRetryAt = retryAt
            }
            if waiting {
                logger.warning("waiting for the device: \(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
            } else if let retryAt {
                logger.warning("push failed, retrying at \(retryAt): \(error.message)")
            } else {
                logger.error("push failed: \(error.message)", metadata: error.remedy.map { ["fix": "\($0)"] } ?? [:])
            }
        }
    }

    private func pushEnded(_ outcome: PushPipeline.Outcome) async {
        pushTask = nil
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
        case .failed:
            break  // logged by .recordFailure
        }
        await onOutcome(database, outcome)
        logger.trace("push finished: \(outcome), state \(machine.state)")
        for action in machine.handle(.pushFinished(outcome)) {
            // Once stopping, the outcome is still recorded, but no new work starts.
            if stopped, action == .startPush || action == .settle { continue }
            await perform(action)
        }
    }

    private func updateSidecar(_ change: (inout Sidecar) -> Void) async {
        do {
            var sidecar = try await sidecars.read(forDatabase: database)
            change(&sidecar)
            sidecar.updatedAt = Date()
            try await sidecars.write(sidecar, forDatabase: database)
        } catch {
            logger.error("could not update the sidecar: \(error)")
        }
    }
}
