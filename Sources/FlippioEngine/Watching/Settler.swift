/// Turns bursts of events per key (database) into one "settled" signal per burst.
///
/// Call ``note(_:)`` for every event; a key appears on ``settled`` once it has been quiet for
/// the settle window, or at the latest the maximum wait after its first unsettled event. A burst
/// of 1,000 writes becomes one settle. Keys are independent. The timing rules live in the pure
/// ``SettleSchedule``; this actor sleeps on the injected clock until the earliest deadline.
///
/// "No writer holds the database" is the caller's check after a key settles; if a writer still
/// holds it, ``note(_:)`` the key again to wait another window.
///
/// For example:
///
/// ```swift
/// let settler = Settler<URL, ContinuousClock>(clock: ContinuousClock())
/// Task { for await db in settler.settled { await sync(db) } }
/// await settler.note(db)
/// ```
public actor Settler<Key: Hashable & Sendable, C: Clock> where C.Duration == Duration {
    /// Each key once per settled burst, in settle order. Ends after ``finish()``.
    public nonisolated let settled: AsyncStream<Key>
    /// The default settle window: 300 ms.
    public static var defaultWindow: Duration { .milliseconds(300) }
    /// The default upper bound: 10 s.
    public static var defaultMaxWait: Duration { .seconds(10) }

    private let continuation: AsyncStream<Key>.Continuation
    private let clock: C
    private var schedule: SettleSchedule<Key, C.Instant>
    private var timer: Task<Void, Never>?
    private var timerDeadline: C.Instant?
    private var timerGeneration = 0
    private var finished = false

    /// - parameters:
    ///   - window: how long a key must be quiet. The default is 300 ms.
    ///   - maxWait: the longest a key waits from its first unsettled event. The default is 10 s.
    ///   - clock: the clock to sleep on (a manual clock in tests).
    public init(window: Duration = .milliseconds(300), maxWait: Duration = .seconds(10), clock: C) {
        self.clock = clock
        self.schedule = SettleSchedule(window: window, maxWait: maxWait)
        (settled, continuation) = AsyncStream.makeStream(of: Key.self, bufferingPolicy: .unbounded)
    }

    /// An event for `key` happened now.
    public func note(_ key: Key) {
        guard !finished else { return }
        let isNew = schedule.deadline(for: key) == nil
        schedule.note(key, at: clock.now)
        // A later event only moves a key's deadline later, so only a new key can need an
        // earlier wake-up; otherwise the armed timer wakes, finds nothing due, and re-arms.
        if isNew, let deadline = schedule.deadline(for: key) { arm(deadline) }
    }

    /// Drops `key`'s pending events (its database was untracked).
    public func cancel(_ key: Key) {
        schedule.cancel(key)
    }

    /// The keys waiting to settle.
    public var pendingKeys: Set<Key> { schedule.pendingKeys }

    /// When `key` will settle if nothing else happens, or nil when it is not pending.
    public func deadline(for key: Key) -> C.Instant? { schedule.deadline(for: key) }

    /// Stops: pending keys are dropped and ``settled`` ends.
    public func finish() {
        finished = true
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        continuation.finish()
    }

    private func arm(_ deadline: C.Instant) {
        if let armed = timerDeadline, armed <= deadline { return }
        timer?.cancel()
        timerGeneration += 1
        let generation = timerGeneration
        timerDeadline = deadline
        let clock = self.clock
        timer = Task {
            do {
                try await clock.sleep(until: deadline, tolerance: nil)
            } catch {
                return  // cancelled: an earlier deadline was armed, or finish()
            }
            self.fire(generation: generation)
        }
    }

    private func fire(generation: Int) {
        guard generation == timerGeneration, !finished else { return }
        timer = nil
        timerDeadline = nil
        for key in schedule.takeDue(at: clock.now) {
            continuation.yield(key)
        }
        if let next = schedule.nextDeadline { arm(next) }
    }
}

extension Settler where C == ContinuousClock {
    /// A settler on the continuous clock.
    public init(window: Duration = .milliseconds(300), maxWait: Duration = .seconds(10)) {
        self.init(window: window, maxWait: maxWait, clock: ContinuousClock())
    }
}
