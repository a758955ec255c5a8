import FlippioEngine
import Foundation
import Testing
import TestSupport

/// The agent as systemd sees it: notifications over `$NOTIFY_SOCKET`, and a clean stop.
@Suite("Agent under systemd", .serialized)
struct AgentServiceTests {
    @Test func notifiesReadyWatchdogStatusAndStopping() async throws {
        let scenario = try Scenario.make()
        let listener = try NotifySocketListener(directory: scenario.harness.home.url)
        let agent = try scenario.harness.startAgent([], environment: [
            "NOTIFY_SOCKET": listener.path,
            "WATCHDOG_USEC": "2000000",  // 2 s: pings expected every second
        ])
        try await waitUntil("READY=1\n\(agent.log)") { listener.texts.contains("READY=1") }
        // READY=1 comes only after the watches are armed: an edit right after it is seen.
        let readyIndex = try #require(listener.texts.firstIndex(of: "READY=1"))
        #expect(listener.texts[..<readyIndex].allSatisfy { !$0.hasPrefix("WATCHDOG") })
        #expect(listener.texts.contains { $0.hasPrefix("STATUS=watching 1 database on 1 device") })

        try await waitUntil("three watchdog pings") { listener.texts.filter { $0 == "WATCHDOG=1" }.count >= 3 }
        let pings = listener.messages.filter { $0.text == "WATCHDOG=1" }.map(\.at)
        let gaps = zip(pings.dropFirst(), pings).map { $0.timeIntervalSince($1) }
        // Half of WATCHDOG_USEC is 1 s; the machine may delay a ping, never send them early in bulk.
        #expect(gaps.allSatisfy { $0 > 0.5 }, "pings every ~1 s, not a flood: \(gaps)")

        // A newly pulled database changes STATUS=.
        let second = Scenario(harness: scenario.harness, device: scenario.device)
        try Shell.sqlite(second.device.appData(Scenario.package).appendingPathComponent("databases/other.db"),
                         "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        let pulled = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package, "other.db"])
        #expect(pulled.status == 0, "\(pulled.err)")
        try await waitUntil("STATUS= shows 2 databases\n\(agent.log)") {
            listener.texts.contains { $0.hasPrefix("STATUS=watching 2 databases") }
        }

        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit() == 0)
        #expect(listener.texts.last == "STOPPING=1" || listener.texts.contains("STOPPING=1"))
    }
}
