import Foundation

/// Exponential backoff with full jitter and a cap, for failures that may go away by themselves.
///
/// Only errors whose ``FlippioError/isRetryable`` is true are retried: a device that is still
/// connecting, a call that timed out, a reset connection. Errors the user must fix (an
/// unauthorized device, an app that is not debuggable, a missing file) are thrown after one try,
/// and so is every error that is not a ``FlippioError`` (the bridges classify tool output;
/// anything they could not classify is not known to be transient).
///
/// The delay before retry `n` (0-based) is drawn uniformly from
/// `[0, min(maxDelay, initialDelay · 2ⁿ)]` ("full jitter"), so that many databases backing off
/// from the same unplugged device do not retry in lock step. With the defaults
/// (`initialDelay` 250 ms, `maxDelay` 30 s) the upper bounds are:
///
/// | retry `n` | upper bound |
/// |-----------|-------------|
/// | 0         | 250 ms      |
/// | 1         | 500 ms      |
/// | 2         | 1 s         |
/// | 3         | 2 s         |
/// | 4         | 4 s         |
/// | 5         | 8 s         |
/// | 6         | 16 s        |
/// | 7 and up  | 30 s (cap)  |
///
/// For example:
///
/// ```swift
/// let policy = RetryPolicy(maxAttempts: 4)
/// let files = try await policy.run("list databases of \(package)") {
///     try await bridge.listDatabases(of: package)
/// }
/// ```
public struct RetryPolicy: Sendable, Equatable {
    /// How many times the operation is tried in all (the first try included). At least 1.
    /// The default is 5.
    public var maxAttempts: Int
    /// The upper bound of the first delay. The default is 250 ms.
    public var initialDelay: Duration
    /// The cap on every delay. The default is 30 s.
    public var maxDelay: Duration

    public init(maxAttempts: Int = 5, initialDelay: Duration = .milliseconds(250), maxDelay: Duration = .seconds(30)) {
        self.maxAttempts = maxAttempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// Tries once, never retries.
    public static let once = RetryPolicy(maxAttempts: 1)

    // MARK: - Delays

    /// The largest delay before retry `attempt` (0-based): `min(maxDelay, initialDelay · 2^attempt)`.
    public func ceiling(forAttempt attempt: Int) -> Duration {
        let cap = Self.nanoseconds(maxDelay)
        let base = Self.nanoseconds(initialDelay)
        guard base > 0, cap > 0 else { return .zero }
        // Past 2^62 the product overflows; long before that it is past any sensible cap.
        let exponent = min(max(attempt, 0), 62)
        let (product, overflow) = base.multipliedReportingOverflow(by: UInt64(1) << UInt64(exponent))
        return .nanoseconds(Int64(overflow ? cap : min(cap, product)))
    }

    /// The delay before retry `attempt` (0-based): uniform in `[0, ceiling(forAttempt: attempt)]`.
    ///
    /// A pure function of its inputs: tests pass a seeded generator.
    public func delay(forAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let ceiling = Self.nanoseconds(ceiling(forAttempt: attempt))
        guard ceiling > 0 else { return .zero }
        return .nanoseconds(Int64(UInt64.random(in: 0...ceiling, using: &generator)))
    }

    private static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return UInt64(Int64.max) }
        return min(UInt64(Int64.max), whole &+ UInt64(attoseconds / 1_000_000_000))
    }

    // MARK: - Running

    /// Runs `body`, retrying transient ``FlippioError``s with backoff.
    ///
    /// - parameters:
    ///   - operationName: What is being tried, added to the final error's context (`operation`).
    ///   - sleep: How to wait between tries. Tests pass a closure that records the delays.
    ///   - onRetry: Called before each wait with the number of the try that failed (1-based),
    ///     its error and the delay that follows; for logging.
    ///   - body: The operation.
    /// - throws: The first permanent error or non-``FlippioError`` at once; the last transient
    ///   error once `maxAttempts` tries have failed (with `operation` and `attempts` in its
    ///   context); `CancellationError` as soon as the calling task is cancelled, also during a wait.
    public func run<T: Sendable>(
        _ operationName: String,
        sleep: (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        onRetry: ((Int, FlippioError, Duration) -> Void)? = nil,
        _ body: () async throws -> T
    ) async throws -> T {
        var generator = SystemRandomNumberGenerator()
        return try await run(operationName, using: &generator, sleep: sleep, onRetry: onRetry, body)
    }

    /// ``run(_:sleep:onRetry:_:)`` with the source of jitter given explicitly.
    public func run<T: Sendable>(
        _ operationName: String,
        using generator: inout some RandomNumberGenerator,
        sleep: (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        onRetry: ((Int, FlippioError, Duration) -> Void)? = nil,
        _ body: () async throws -> T
    ) async throws -> T {
        let attempts = max(1, maxAttempts)
        var attempt = 1
        while true {
            try Task.checkCancellation()
            do {
                return try await body()
            } catch let error as FlippioError where error.isRetryable {
                // A cancelled caller must not be kept waiting for a backoff.
                try Task.checkCancellation()
                guard attempt < attempts else {
                    var context = error.context
                    context["operation"] = operationName
                    context["attempts"] = String(attempt)
                    throw FlippioError(error.code, error.message, remedy: error.remedy, context: context)
                }
                let delay = delay(forAttempt: attempt - 1, using: &generator)
                onRetry?(attempt, error, delay)
                try await sleep(delay)
                attempt += 1
            }
        }
    }
}
