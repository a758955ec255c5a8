import FlippioEngine
import Foundation
import Testing
import TestSupport

/// A machine without adb (an iOS-only user, or adb uninstalled after a pull): the agent keeps
/// running, and an edit of an Android database ends in a clear, permanent error, not a silent wait.
@Suite("Agent without adb")
struct AgentWithoutAdbTests {
    @Test func anEditOfAnAndroidDatabaseFailsWithTheFixWhenAdbIsMissing() async throws {
        let scenario = try Scenario.make(journalMode: "delete")
        let agent = try scenario.harness.startAgent([], environment: ["PATH": "/nonexistent"])
        try await agent.waitForLog("ready")
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('four')")
        try await waitUntil("failure recorded\n\(agent.log)") { (try? scenario.sidecar().state) == .failed }

        let sidecar = try scenario.sidecar()
        #expect(sidecar.lastError?.code == .toolNotFound)
        #expect(sidecar.lastError?.remedy?.contains("adb") == true, "the fix names the package")
        #expect(sidecar.nextRetryAt == nil, "a missing tool is not retried on a timer")
        #expect(try scenario.deviceTitles() == ["one", "two", "three"])
        let status = try scenario.harness.flippio(["status"])
        #expect(status.out.contains("failed") && status.out.contains("fix:"))
    }
}
