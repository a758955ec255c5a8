import Synchronization

/// Counts the changes to the agent's metrics and lets a writer *await* the next one.
///
/// swift-prometheus's `PrometheusCollectorRegistry` keeps values in atomics and renders them on
/// demand; it has no notion of "something changed since the last render". The metrics file wants
/// exactly that, so that an idle agent wakes up for nothing: ``AgentMetrics`` calls ``changed()``
/// from each hook, and ``MetricsFile`` waits in ``waitForChange(after:)`` (a suspended
/// continuation: no timer, no polling).
///
/// For example:
///
/// ```swift
/// let seen = metrics.changes.generation
/// let now = await metrics.changes.waitForChange(after: seen)  // returns after the next hook call
/// ```
public final class MetricsChanges: Sendable {
    struct State: Sendable {
        var generation: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<UInt64, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// The last value set per gauge name, so that setting the same value again is no change.
        var gauges: [String: Double] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// How many changes there were; grows with every ``changed()``.
    public var generation: UInt64 { state.withLock { $0.generation } }

    /// Records a change and wakes every waiter.
    public func changed() {
        let (generation, waiters) = state.withLock { state -> (UInt64, [CheckedContinuation<UInt64, Never>]) in
            state.generation &+= 1
            let waiters = Array(state.waiters.values)
            state.waiters = [:]
            return (state.generation, waiters)
        }
        // Resumed outside the lock: a resumed task may call back into this object at once.
        for waiter in waiters { waiter.resume(returning: generation) }
    }

    /// Records a change only if gauge `name` did not already have `value`.
    ///
    /// The sync engine reports the tracked count after every routing decision, mostly unchanged;
    /// counting each report as a change would rewrite the file for nothing.
    ///
    /// - returns: whether it was a change.
    @discardableResult
    public func gaugeSet(_ name: String, to value: Double) -> Bool {
        let changed = state.withLock { state -> Bool in
            guard state.gauges[name] != value else { return false }
            state.gauges[name] = value
            return true
        }
        if changed { self.changed() }
        return changed
    }

    /// Returns as soon as ``generation`` is past `seen` (at once if it already is), or when the
    /// calling task is cancelled.
    ///
    /// - returns: the generation at the time of return.
    public func waitForChange(after seen: UInt64) async -> UInt64 {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiter &+= 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<UInt64, Never>) in
                // Checked under the lock that `changed()` takes: a change between the caller reading
                // `generation` and this point is not missed.
                let immediate = state.withLock { state -> UInt64? in
                    if state.generation != seen || Task.isCancelled { return state.generation }
                    state.waiters[id] = continuation
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> (CheckedContinuation<UInt64, Never>, UInt64)? in
                state.waiters.removeValue(forKey: id).map { ($0, state.generation) }
            }
            if let (continuation, generation) = waiter { continuation.resume(returning: generation) }
        }
    }
}
