@testable import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("Settler with the real clock")
struct SettlerRealClockTests {
    @Test func aNotedKeySettlesAfterTheWindow() async throws {
        let settler = Settler<String, ContinuousClock>(window: .milliseconds(50), maxWait: .seconds(5), clock: ContinuousClock())
        let received = Mutex<[String]>([])
        let consumer = Task { for await key in settler.settled { received.withLock { $0.append(key) } } }
        defer { consumer.cancel() }
        for round in 0..<20 {
            for _ in 0..<5 { await settler.note("db") }
            try await waitUntil("round \(round) settled", timeout: .seconds(5)) { received.withLock { $0.count } == round + 1 }
        }
    }
}
import Synchronization
