import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Issue #11, point 7: the kernel's inotify watch limit used up. The agent runs in a user
/// namespace of its own whose watch limit (`/proc/sys/user/max_inotify_watches` is per user
/// namespace) is 0, so nothing else on the machine is affected.
@Suite("Sync core: inotify watch limit", .serialized)
struct WatchLimitTests {
    static let canUseUserNamespaces: Bool = {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/nsenter"),
              let result = try? Shell.run(URL(fileURLWithPath: "/usr/bin/unshare"),
                                          ["--user", "--map-root-user", "/bin/sh", "-c", "echo 0 > /proc/sys/user/max_inotify_watches"])
        else { return false }
        return result.status == 0
    }()

    @Test("agent started with its inotify watch limit used up: keeps running, says how to fix it, rescans, pushes",
          .enabled(if: canUseUserNamespaces, "needs user namespaces with their own inotify limits"))
    func exhaustedWatchLimitDegrades() async throws {
        let scenario = try Scenario.make()
        let agent = try scenario.harness.startAgentWithInotifyWatchLimit(0, ["--no-stop-app"],
                                                                          environment: ["FLIPPIO_UNWATCHED_RESCAN_MS": "300"])
        try await agent.waitForLog("ready")
        try await waitUntil("start-up check\n\(agent.log)") { agent.log.contains("nothing pushed") }
        #expect(agent.log.contains("watch limit"), "\(agent.log)")
        let status = try scenario.harness.flippio(["status"])
        #expect(status.out.contains("cannot watch"), "\(status.out)")
        #expect(status.out.contains("sysctl fs.inotify.max_user_watches"), "\(status.out)")
        let doctor = try scenario.harness.flippio(["doctor"])
        #expect(doctor.out.contains("rescans") || doctor.err.contains("rescans"), "\(doctor.out)\(doctor.err)")

        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('found by a rescan')")
        try await waitUntil("pushed without a watch\n\(agent.log)", timeout: .seconds(45)) {
            (try? scenario.deviceTitles()) == ["one", "two", "three", "found by a rescan"]
        }

        try agent.setInotifyWatchLimit(100_000)
        try await agent.waitForLog("every workspace folder is watched again")
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('found by inotify')")
        try await waitUntil("pushed\n\(agent.log)", timeout: .seconds(45)) {
            (try? scenario.deviceTitles()) == ["one", "two", "three", "found by a rescan", "found by inotify"]
        }
        #expect(!(try scenario.harness.flippio(["status"]).out.contains("cannot watch")))
    }
}
