import Foundation

/// Thrown by ``waitUntil(_:timeout:poll:_:)`` when the condition never held.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let what: String
    public let timeout: Duration
    public var description: String { "\(what) did not happen within \(timeout)" }
    public init(what: String, timeout: Duration) {
        self.what = what
        self.timeout = timeout
    }
}

/// Awaits a condition with a deadline, checking it every `poll`.
///
/// Tests wait for a state, never for a fixed time: the deadline is generous (machines are shared
/// and slow), and the wait ends as soon as the condition holds.
public func waitUntil(
    _ what: String,
    timeout: Duration = .seconds(20),
    poll: Duration = .milliseconds(25),
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
        if try await condition() { return }
        if clock.now >= deadline { throw DeadlineExceeded(what: what, timeout: timeout) }
        try await Task.sleep(for: poll)
    }
}
