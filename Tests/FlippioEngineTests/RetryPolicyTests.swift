import Foundation
import Testing
import TestSupport
@testable import FlippioEngine


@Suite("RetryPolicy")
struct RetryPolicyTests {
    static let transient = FlippioError(.deviceOffline, "emulator-5554 is offline.")
    static let permanent = FlippioError(.deviceUnauthorized, "emulator-5554 is unauthorized.")

    // MARK: - Delays

    @Test func ceilingsDoubleFromTheInitialDelayUpToTheCap() {
        let policy = RetryPolicy()
        let expected: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4),
                                    .seconds(8), .seconds(16), .seconds(30), .seconds(30)]
        #expect((0..<expected.count).map { policy.ceiling(forAttempt: $0) } == expected)
        #expect(policy.ceiling(forAttempt: 1000) == .seconds(30))
        #expect(policy.ceiling(forAttempt: Int.max) == .seconds(30))
    }

    @Test(arguments: [UInt64(1), 42, 0xDEAD_BEEF])
    func delaysStayWithinFullJitterBounds(seed: UInt64) {
        let policy = RetryPolicy(initialDelay: .milliseconds(100), maxDelay: .seconds(5))
        var generator = SplitMix64(seed: seed)
        for attempt in 0..<40 {
            for _ in 0..<50 {
                let delay = policy.delay(forAttempt: attempt, using: &generator)
                #expect(delay >= .zero)
                #expect(delay <= policy.ceiling(forAttempt: attempt))
                #expect(delay <= .seconds(5))
            }
        }
    }

    @Test func jitterSpansTheWholeRange() {
        let policy = RetryPolicy(initialDelay: .seconds(1), maxDelay: .seconds(10))
        var generator = SplitMix64(seed: 7)
        let delays = (0..<200).map { _ in policy.delay(forAttempt: 2, using: &generator) }
        // Full jitter: both halves of [0, 4 s] are used, not just "around" the ceiling.
        #expect(delays.contains { $0 < .seconds(2) })
        #expect(delays.contains { $0 > .seconds(2) })
    }

    @Test func sameSeedSameDelays() {
        let policy = RetryPolicy()
        var a = SplitMix64(seed: 99), b = SplitMix64(seed: 99)
        let first = (0..<10).map { policy.delay(forAttempt: $0, using: &a) }
        let second = (0..<10).map { policy.delay(forAttempt: $0, using: &b) }
        #expect(first == second)
    }

    @Test func zeroInitialDelayMeansNoWait() {
        var generator = SplitMix64(seed: 1)
        #expect(RetryPolicy(initialDelay: .zero).delay(forAttempt: 5, using: &generator) == .zero)
    }

    // MARK: - Running

    @Test func transientFailuresAreRetriedUntilSuccess() async throws {
        let policy = RetryPolicy(maxAttempts: 5)
        var generator = SplitMix64(seed: 3)
        var calls = 0
        var slept: [Duration] = []
        var retries: [(Int, FlippioError.Code, Duration)] = []
        let value = try await policy.run("pull", using: &generator, sleep: { slept.append($0) },
                                         onRetry: { retries.append(($0, $1.code, $2)) }) {
            calls += 1
            if calls < 3 { throw Self.transient }
            return "ok"
        }
        #expect(value == "ok")
        #expect(calls == 3)
        #expect(slept.count == 2)
        #expect(retries.map(\.0) == [1, 2])
        #expect(retries.map(\.1) == [.deviceOffline, .deviceOffline])
        #expect(retries.map(\.2) == slept)
        #expect(slept[0] <= .milliseconds(250))
        #expect(slept[1] <= .milliseconds(500))
    }

    @Test func delaysDuringRunFollowTheTable() async throws {
        let policy = RetryPolicy(maxAttempts: 10)
        var generator = SplitMix64(seed: 11)
        var slept: [Duration] = []
        await #expect(throws: FlippioError.self) {
            try await policy.run("push", using: &generator, sleep: { slept.append($0) }) { () async throws -> Int in
                throw Self.transient
            }
        }
        #expect(slept.count == 9)
        for (n, delay) in slept.enumerated() {
            #expect(delay <= policy.ceiling(forAttempt: n))
            #expect(delay <= .seconds(30))
        }
        #expect(slept.last! <= .seconds(30))
    }

    @Test(arguments: [FlippioError.Code.deviceUnauthorized, .appNotDebuggable, .unknownPackage, .noSuchFile,
                      .permissionDenied])
    func permanentFailuresAreTriedOnce(code: FlippioError.Code) async throws {
        var calls = 0
        var slept: [Duration] = []
        do {
            _ = try await RetryPolicy(maxAttempts: 5).run("pull", sleep: { slept.append($0) }) { () async throws -> Int in
                calls += 1
                throw FlippioError(code, "nope")
            }
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == code)
        }
        #expect(calls == 1)
        #expect(slept.isEmpty)
    }

    @Test(arguments: [FlippioError.Code.timedOut, .deviceOffline, .deviceConnecting, .connectionReset, .protocolFault])
    func transientCodesAreRetryable(code: FlippioError.Code) async throws {
        var calls = 0
        let value = try await RetryPolicy(maxAttempts: 2).run("pull", sleep: { _ in }) {
            calls += 1
            if calls == 1 { throw FlippioError(code, "flaky") }
            return calls
        }
        #expect(value == 2)
    }

    @Test func nonFlippioErrorsAreNotRetried() async throws {
        struct Other: Error {}
        var calls = 0
        await #expect(throws: Other.self) {
            try await RetryPolicy().run("pull", sleep: { _ in }) { () async throws -> Int in
                calls += 1
                throw Other()
            }
        }
        #expect(calls == 1)
    }

    @Test func attemptsAreBoundedAndTheLastErrorSaysSo() async throws {
        var calls = 0
        var slept: [Duration] = []
        do {
            _ = try await RetryPolicy(maxAttempts: 4).run("list databases", sleep: { slept.append($0) }) { () async throws -> Int in
                calls += 1
                throw FlippioError(.timedOut, "adb timed out (\(calls))")
            }
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .timedOut)
            #expect(error.message == "adb timed out (4)")
            #expect(error.context["operation"] == "list databases")
            #expect(error.context["attempts"] == "4")
        }
        #expect(calls == 4)
        #expect(slept.count == 3)
    }

    @Test func zeroMaxAttemptsStillTriesOnce() async throws {
        var calls = 0
        let value = try await RetryPolicy(maxAttempts: 0).run("x", sleep: { _ in }) { calls += 1; return 1 }
        #expect(value == 1)
        #expect(calls == 1)
    }

    @Test func cancellationDuringTheWaitStopsImmediately() async throws {
        var calls = 0
        await #expect(throws: CancellationError.self) {
            try await RetryPolicy(maxAttempts: 10).run("pull", sleep: { _ in throw CancellationError() }) { () async throws -> Int in
                calls += 1
                throw Self.transient
            }
        }
        #expect(calls == 1)
    }

    @Test func aCancelledCallerIsNotRetried() async throws {
        let task = Task { () async throws -> Int in
            var calls = 0
            withUnsafeCurrentTask { $0?.cancel() }
            _ = try? await RetryPolicy(maxAttempts: 10).run("pull", sleep: { _ in }) { () async throws -> Int in
                calls += 1
                throw Self.transient
            }
            return calls
        }
        // checkCancellation runs before the first try, so the body never runs.
        #expect(try await task.value == 0)
    }

    @Test func cancellationReportedByTheBodyIsNotRetried() async throws {
        var calls = 0
        await #expect(throws: CancellationError.self) {
            try await RetryPolicy(maxAttempts: 10).run("pull", sleep: { _ in }) { () async throws -> Int in
                calls += 1
                throw CancellationError()
            }
        }
        #expect(calls == 1)
    }
}
