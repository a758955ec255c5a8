import Foundation
import Synchronization
import Testing
import TestSupport
@testable import FlippioEngine

@Suite("SettleSchedule")
struct SettleScheduleTests {
    typealias Instant = ManualClock.Instant
    func t(_ ms: Int) -> Instant { Instant(offset: .milliseconds(ms)) }

    @Test func burstOfAThousandEvents_settlesOnce_aWindowAfterTheLast() {
        var schedule = SettleSchedule<String, Instant>(window: .milliseconds(300), maxWait: .seconds(10))
        for i in 0..<1000 {
            schedule.note("db", at: t(i))  // one event a millisecond for a second
            #expect(schedule.takeDue(at: t(i)).isEmpty)
        }
        #expect(schedule.deadline(for: "db") == t(999 + 300))
        #expect(schedule.takeDue(at: t(1298)).isEmpty)
        #expect(schedule.takeDue(at: t(1299)) == ["db"])
        #expect(schedule.isEmpty)
        #expect(schedule.takeDue(at: t(100_000)).isEmpty, "one settle per burst")
    }

    @Test func steadyEvents_areForcedOutAtMaxWait() {
        var schedule = SettleSchedule<String, Instant>(window: .milliseconds(300), maxWait: .seconds(10))
        var settledAt: [Int] = []
        for ms in stride(from: 0, through: 25_000, by: 100) {  // never quiet for 300 ms
            settledAt += schedule.takeDue(at: t(ms)).map { _ in ms }
            schedule.note("db", at: t(ms))
        }
        #expect(settledAt == [10_000, 20_000], "forced 10 s after each first unsettled event")
    }

    @Test func keysAreIndependent() {
        var schedule = SettleSchedule<String, Instant>(window: .milliseconds(300), maxWait: .seconds(10))
        schedule.note("a", at: t(0))
        schedule.note("b", at: t(200))
        #expect(schedule.nextDeadline == t(300))
        schedule.note("b", at: t(250))
        #expect(schedule.takeDue(at: t(300)) == ["a"])
        #expect(schedule.pendingKeys == ["b"])
        #expect(schedule.takeDue(at: t(550)) == ["b"])
        schedule.note("c", at: t(600))
        schedule.cancel("c")
        #expect(schedule.nextDeadline == nil)
    }

    @Test func dueKeys_comeEarliestFirst() {
        var schedule = SettleSchedule<String, Instant>(window: .milliseconds(300), maxWait: .seconds(10))
        schedule.note("late", at: t(50))
        schedule.note("early", at: t(0))
        #expect(schedule.takeDue(at: t(1000)) == ["early", "late"])
    }
}

/// Collects what a settler emits.
final class SettledLog: Sendable {
    private let keys = Mutex<[String]>([])
    init(_ settler: Settler<String, ManualClock>) {
        let stream = settler.settled
        Task { for await key in stream { self.keys.withLock { $0.append(key) } } }
    }
    var all: [String] { keys.withLock { $0 } }
}

@Suite("Settler")
struct SettlerTests {
    /// Waits until the settler has processed the clock's latest advance: it is asleep again
    /// until a future deadline, or has nothing pending.
    func quiescent(_ settler: Settler<String, ManualClock>, _ clock: ManualClock) async throws {
        try await waitUntil("the settler processed the advance") {
            let pending = await settler.pendingKeys
            let now = clock.now
            return pending.isEmpty || clock.sleepingDeadlines.contains { $0 > now }
        }
    }

    @Test func burstOfAThousandNotes_settlesOnce() async throws {
        let clock = ManualClock()
        let settler = Settler<String, ManualClock>(window: .milliseconds(300), maxWait: .seconds(10), clock: clock)
        let log = SettledLog(settler)
        for i in 0..<1000 {
            await settler.note("db")
            if i % 10 == 9 { clock.advance(by: .milliseconds(1)) }
        }
        // The last notes came at t+99ms (the loop ended at t+100ms): due at t+399ms.
        clock.advance(by: .milliseconds(298))
        try await quiescent(settler, clock)
        #expect(log.all.isEmpty)
        #expect(await settler.pendingKeys == ["db"])
        clock.advance(by: .milliseconds(1))
        try await waitUntil("db settled") { log.all == ["db"] }
        try await quiescent(settler, clock)
        clock.advance(by: .seconds(60))
        try await quiescent(settler, clock)
        #expect(log.all == ["db"], "one settle for the whole burst")
    }

    @Test func steadyNotes_areForcedAtMaxWait() async throws {
        let clock = ManualClock()
        let settler = Settler<String, ManualClock>(window: .milliseconds(300), maxWait: .seconds(10), clock: clock)
        let log = SettledLog(settler)
        var elapsed = Duration.zero
        while elapsed < .seconds(10) {
            await settler.note("db")
            clock.advance(by: .milliseconds(100))
            elapsed += .milliseconds(100)
            if elapsed < .seconds(10) {
                try await quiescent(settler, clock)
                #expect(log.all.isEmpty, "nothing before the maximum wait (at \(elapsed))")
            }
        }
        try await waitUntil("forced out at 10 s") { log.all == ["db"] }
    }

    @Test func twoKeys_settleIndependently() async throws {
        let clock = ManualClock()
        let settler = Settler<String, ManualClock>(window: .milliseconds(300), maxWait: .seconds(10), clock: clock)
        let log = SettledLog(settler)
        await settler.note("a")
        clock.advance(by: .milliseconds(200))
        await settler.note("b")
        clock.advance(by: .milliseconds(100))  // a quiet 300 ms, b 100 ms
        try await waitUntil("a settled") { log.all == ["a"] }
        await settler.note("b")  // b keeps going
        clock.advance(by: .milliseconds(299))
        try await quiescent(settler, clock)
        #expect(log.all == ["a"])
        clock.advance(by: .milliseconds(1))
        try await waitUntil("b settled") { log.all == ["a", "b"] }
    }

    @Test func aNewKeyWithAnEarlierDeadline_wakesTheTimerEarlier() async throws {
        let clock = ManualClock()
        let settler = Settler<String, ManualClock>(window: .milliseconds(300), maxWait: .seconds(10), clock: clock)
        let log = SettledLog(settler)
        await settler.note("slow")
        for _ in 0..<5 {  // keep "slow" busy so its deadline moves later
            clock.advance(by: .milliseconds(250))
            try await quiescent(settler, clock)
            await settler.note("slow")
        }
        await settler.note("fast")
        clock.advance(by: .milliseconds(300))
        try await waitUntil("both settled") { Set(log.all) == ["slow", "fast"] }
    }

    @Test func cancelAndFinish() async throws {
        let clock = ManualClock()
        let settler = Settler<String, ManualClock>(window: .milliseconds(300), maxWait: .seconds(10), clock: clock)
        await settler.note("gone")
        await settler.cancel("gone")
        #expect(await settler.pendingKeys.isEmpty)
        await settler.note("x")
        await settler.finish()
        var received: [String] = []
        for await key in settler.settled { received.append(key) }
        #expect(received.isEmpty, "finish ends the stream and drops pending keys")
    }
}
