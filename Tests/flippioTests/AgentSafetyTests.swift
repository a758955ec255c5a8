import FlippioEngine
import Foundation
import Testing
import TestSupport

/// What the agent must never do: overwrite the app's own writes, push a broken file, lose an
/// edit when killed, or leave a partial database on the device.
@Suite("Agent keeps the device's data safe", .serialized)
struct AgentSafetyTests {
    @Test func theAppWritingItsCopyAfterThePullIsAConflictAndResolveEndsIt() async throws {
        let scenario = try Scenario.make()
        // The app writes its own copy after the pull: the same row the desktop then changes.
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'written by the app' WHERE id = 2")
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)

        let agent = try scenario.harness.startAgent()
        try await agent.waitForLog("ready")
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'written locally' WHERE id = 2")
        try await waitUntil("conflict\n\(agent.log)", timeout: .seconds(45)) { (try? scenario.sidecar().state) == .conflict }

        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "the device file is byte-identical to before")
        let sidecar = try scenario.sidecar()
        let copy = try #require(sidecar.conflictCopy.map { URL(fileURLWithPath: $0) })
        #expect(copy.lastPathComponent.hasPrefix("notes.device-") && copy.pathExtension == "db")
        #expect(try Shell.sqlite(copy, "SELECT title FROM notes ORDER BY id").contains("written by the app"), "the device's version is kept")
        #expect(try scenario.localTitles().contains("written locally"), "the local version is kept")
        let status = try scenario.harness.flippio(["status"])
        #expect(status.out.contains("conflict"))
        #expect(status.out.contains("resolve"))

        // --keep-local pushes the local version over the device's.
        let resolved = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-local"])
        #expect(resolved.status == 0, "\(resolved.err)")
        #expect(try scenario.deviceTitles() == ["one", "written locally", "three"])
        #expect(try scenario.sidecar().state == .clean)
        #expect(scenario.deviceSideFiles().isEmpty)
    }

    @Test func resolveKeepDeviceTakesTheDevicesVersion() async throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'written by the app' WHERE id = 2")
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'written locally' WHERE id = 2")
        let push = try scenario.harness.flippio(["push", scenario.localCopy.path])
        #expect(push.status == 1, "a conflict is a failure of `push`")
        #expect(push.err.contains("resolve"))
        #expect(try scenario.sidecar().state == .conflict)

        let resolved = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-device"])
        #expect(resolved.status == 0, "\(resolved.err)")
        #expect(try scenario.localTitles() == ["one", "written by the app", "three"])
        #expect(try scenario.sidecar().state == .clean)
        let kept = try FileManager.default.contentsOfDirectory(atPath: scenario.localCopy.deletingLastPathComponent().path)
        #expect(kept.contains { $0.hasPrefix("notes.local-") }, "the replaced local version is kept")
    }

    @Test func aCorruptOrNonSQLiteFileIsNeverPushed() async throws {
        let scenario = try Scenario.make()
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        let agent = try scenario.harness.startAgent()
        try await agent.waitForLog("ready")

        try Data("this is not a database\n".utf8).write(to: scenario.localCopy)
        // The write truncates first: the agent may see the empty file, then the text. Its verdict
        // on the text is the one the user sees.
        try await waitUntil("invalid\n\(agent.log)", timeout: .seconds(30)) {
            let sidecar = try? scenario.sidecar()
            return sidecar?.state == .invalid && sidecar?.lastError?.message.contains("(0 bytes)") == false
        }
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes)
        let status = try scenario.harness.flippio(["status"])
        #expect(status.out.contains("invalid"))
        #expect(status.out.lowercased().contains("not a sqlite") || status.out.lowercased().contains("not an sqlite"), "\(status.out)")
        #expect(try scenario.uploadCount() == 0)

        // The user's next action: a real database saved over the broken file is pushed.
        try deviceBytes.write(to: scenario.localCopy)
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('saved after the repair')")
        try await waitUntil("the repaired copy pushed\n\(agent.log)", timeout: .seconds(30)) {
            (try? scenario.deviceTitles()) == ["one", "two", "three", "saved after the repair"]
        }
        try await waitUntil("clean again") { (try? scenario.sidecar().state) == .clean }
    }

    @Test func anEditSavedBeforeASigkillIsPushedAfterARestart() async throws {
        let scenario = try Scenario.make()
        // A settle window so long that the push cannot happen before the kill.
        let first = try scenario.harness.startAgent(["--settle-ms", "600000", "--settle-max-ms", "600000"])
        try await first.waitForLog("ready")
        // The start-up check pushes at once what differs; let it finish before the edit.
        try await first.waitForLog("nothing pushed")
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('saved before the crash')")
        try await waitUntil("dirty recorded\n\(first.log)") { (try? scenario.sidecar().state) == .dirty }
        first.signal(SIGKILL)
        #expect(try await first.waitForExit() == 128 + SIGKILL)
        #expect(try scenario.deviceTitles() == ["one", "two", "three"], "not pushed before the kill")

        let second = try scenario.harness.startAgent()
        try await waitUntil("pushed after restart\n\(second.log)", timeout: .seconds(45)) {
            (try? scenario.deviceTitles()) == ["one", "two", "three", "saved before the crash"]
        }
        try await waitUntil("sidecar clean") { (try? scenario.sidecar().state) == .clean }
        #expect(scenario.deviceSideFiles().isEmpty)
    }

    @Test func sigtermDuringAPushLeavesTheOldOrTheNewDatabaseNeverAPartialOne() async throws {
        let scenario = try Scenario.make()
        let oldHash = try scenario.hash(scenario.deviceDatabase)
        // Every device request takes a while, so SIGTERM lands in the middle of the push.
        try scenario.device.setFaults(["latencyMs": 400])
        let agent = try scenario.harness.startAgent()
        try await agent.waitForLog("ready")
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('new')")
        try await waitUntil("pushing\n\(agent.log)", timeout: .seconds(30)) { (try? scenario.sidecar().state) == .pushing }
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit(timeout: .seconds(40)) == 0, "graceful stop exits 0\n\(agent.log)")
        try scenario.device.setFaults([:])

        let deviceHash = try scenario.hash(scenario.deviceDatabase)
        let sidecar = try scenario.sidecar()
        #expect(try Shell.sqlite(scenario.deviceDatabase, "PRAGMA quick_check") == "ok\n", "never a partial file")
        if deviceHash == oldHash {
            #expect(try scenario.deviceTitles() == ["one", "two", "three"])
            #expect(sidecar.expectedDeviceFingerprint.mainHash == oldHash || sidecar.pendingPushHash != nil)
        } else {
            #expect(try scenario.deviceTitles() == ["one", "two", "three", "new"])
            #expect(sidecar.fingerprintAtLastPush?.mainHash == deviceHash || sidecar.pendingPushHash == deviceHash,
                    "the sidecar knows the device has the new database")
        }
        // Either way a restarted agent ends with the edit on the device.
        let again = try scenario.harness.startAgent()
        try await waitUntil("pushed after restart\n\(again.log)", timeout: .seconds(45)) {
            (try? scenario.deviceTitles()) == ["one", "two", "three", "new"]
        }
        try await waitUntil("sidecar clean\n\(again.log)") { (try? scenario.sidecar().state) == .clean }
    }
}
