/// When each key's burst of events is over: the pure part of ``Settler``.
///
/// A key settles when no event came for ``window``, or at the latest ``maxWait`` after the first
/// event that is not settled yet (for files that never go quiet), like syncthing's aggregator
/// pairs a quiet period with a maximum wait. Times are passed in, so tests need no clock.
///
/// For example:
///
/// ```swift
/// var schedule = SettleSchedule<URL, ContinuousClock.Instant>(window: .milliseconds(300), maxWait: .seconds(10))
/// schedule.note(db, at: now)
/// let due = schedule.takeDue(at: now + .milliseconds(300))   // [db]
/// ```
public struct SettleSchedule<Key: Hashable & Sendable, Instant: InstantProtocol & Sendable>: Sendable
where Instant.Duration == Duration {
    /// How long a key must be quiet.
    public let window: Duration
    /// The longest a key waits from its first unsettled event.
    public let maxWait: Duration

    private struct Entry: Sendable {
        var first: Instant
        var last: Instant
    }

    private var entries: [Key: Entry] = [:]

    public init(window: Duration, maxWait: Duration) {
        self.window = window
        self.maxWait = max(maxWait, window)
    }

    /// Records an event for `key` at `time`.
    public mutating func note(_ key: Key, at time: Instant) {
        if var entry = entries[key] {
            entry.last = max(entry.last, time)
            entries[key] = entry
        } else {
            entries[key] = Entry(first: time, last: time)
        }
    }

    /// Forgets `key` (e.g. its database was untracked).
    public mutating func cancel(_ key: Key) {
        entries[key] = nil
    }

    /// When `key` settles, or nil when it has no pending events.
    public func deadline(for key: Key) -> Instant? {
        entries[key].map(deadline)
    }

    /// The earliest deadline of all keys, or nil when nothing is pending.
    public var nextDeadline: Instant? {
        entries.values.lazy.map(deadline).min()
    }

    /// The keys with pending events.
    public var pendingKeys: Set<Key> { Set(entries.keys) }

    public var isEmpty: Bool { entries.isEmpty }

    /// Removes and returns the keys whose deadline is at or before `now`, earliest first.
    public mutating func takeDue(at now: Instant) -> [Key] {
        let due = entries.filter { deadline($0.value) <= now }.sorted { deadline($0.value) < deadline($1.value) }
        for (key, _) in due { entries[key] = nil }
        return due.map(\.key)
    }

    private func deadline(_ entry: Entry) -> Instant {
        min(entry.last.advanced(by: window), entry.first.advanced(by: maxWait))
    }
}
