import DeviceSimulator
import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Issue #7, the machine and the app: the agent killed with SIGKILL at each stage of a push, and
/// the app writing its copy while a push runs.
///
/// Stages are found without hooks in the product: every device request is slowed down, on its
/// way in (`latencyMs`) and its answer on the way back (`replyLatencyMs`), and the test watches the
/// simulator's `requests.jsonl` and the device's files for what starts a stage, then kills the
/// agent inside the delay that follows.
@Suite("Fault: agent killed, app writing", .serialized)
struct FaultCrashTests {
    enum Stage: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// The sidecar records the push as pending; nothing has been uploaded.
        case beforeDevicePush = "before the device push"
        /// The snapshot is in /data/local/tmp; the database is not replaced yet.
        case afterUpload = "after the temp file is on the device"
        /// `mv` replaced the database; the result is not verified nor recorded.
        case afterMove = "after the mv"
        /// Verified on the device (by the swap's own script) and the upload removed (by the same
        /// call); its answer is on the way back and the sidecar still says pending.
        case beforeSidecarWrite = "before the sidecar write"

        var testDescription: String { rawValue }
    }

    static let latency = 700

    @Test("agent killed with SIGKILL at a stage of a push: after a restart the device holds the edit, nothing stale remains, the sidecar agrees",
          .tags(.editLost, .corruption), arguments: Stage.allCases)
    func sigkillAtAStageOfAPush(stage: Stage) async throws {
        let scenario = try Scenario.make(journalMode: "wal", pull: false)
        // The app crashed with rows in its -wal: a push must not leave that -wal (or -shm) stale.
        let app = try SQLiteSession(scenario.deviceDatabase)
        try await app.execute("PRAGMA wal_autocheckpoint=0; INSERT INTO notes(title) VALUES ('in the wal');")
        app.kill()
        #expect(scenario.deviceSideFiles().contains("-wal"))
        try scenario.pull()  // folds the -wal into the local copy; the fingerprint records it
        let oldHash = try scenario.hash(scenario.deviceDatabase)
        let sim = scenario.harness.sim
        let first = try await scenario.startAgent()
        try scenario.device.setFaults(["latencyMs": Self.latency, "replyLatencyMs": Self.latency])
        try sim.clearRequests()
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('edited before the crash')")

        func requests() -> [DevsimRequest] { (try? scenario.deviceRequests()) ?? [] }
        func index(of predicate: (DevsimRequest) -> Bool) -> Int? { requests().firstIndex(where: predicate) }
        let isUpload: (DevsimRequest) -> Bool = { $0.service == "sync" && $0.op == "SEND" }
        let isMove: (DevsimRequest) -> Bool = { $0.service == "shell" && ($0.command ?? "").contains("mv -f") }

        switch stage {
        case .beforeDevicePush:
            try await waitUntil("push recorded as pending\n\(first.log)", timeout: .seconds(30), poll: .milliseconds(5)) {
                (try? scenario.sidecar().pendingPushHash) != nil
            }
        case .afterUpload:
            // The upload ended when the next adb call (the copy-and-rename) asks for the device.
            try await waitUntil("upload done\n\(first.log)", timeout: .seconds(30), poll: .milliseconds(5)) {
                let all = requests()
                guard let upload = all.firstIndex(where: isUpload) else { return false }
                return all[(upload + 1)...].contains { $0.service.hasPrefix("host") }
            }
        case .afterMove:
            try await waitUntil("database replaced\n\(first.log)", timeout: .seconds(30), poll: .milliseconds(5)) {
                index(of: isMove) != nil && (try? scenario.hash(scenario.deviceDatabase)) != oldHash
            }
        case .beforeSidecarWrite:
            // The swap's call checked what it renamed and removed the upload; its answer waits out
            // the reply latency.
            try await waitUntil("verified on the device\n\(first.log)", timeout: .seconds(30), poll: .milliseconds(5)) {
                index(of: isMove) != nil && (try? scenario.hash(scenario.deviceDatabase)) != oldHash
                    && (try? scenario.deviceTmpFiles())?.isEmpty == true
            }
        }
        first.signal(SIGKILL)
        #expect(try await first.waitForExit() == 128 + SIGKILL)
        try scenario.device.clearFaults()

        // The stage was hit: the push had started and its result was not recorded.
        let killed = try scenario.sidecar()
        #expect(killed.pendingPushHash != nil && killed.state == .pushing, "killed inside the push (state \(killed.state))")
        switch stage {
        case .beforeDevicePush: #expect(try scenario.uploadCount() == 0)
        case .afterUpload: #expect(try scenario.deviceTmpFiles().count == 1, "the upload is on the device")
        case .afterMove, .beforeSidecarWrite: #expect(try scenario.hash(scenario.deviceDatabase) != oldHash)
        }
        #expect(try scenario.deviceQuickCheck() == "ok", "never a partial database on the device")

        let second = try scenario.harness.startAgent(["--no-stop-app"])
        try await scenario.expectPushed(titles: ["one", "two", "three", "in the wal", "edited before the crash"], agent: second)
        #expect(try scenario.sidecar().state == .clean)
        #expect(!second.log.contains("conflict"), "the agent's own unrecorded push is not a conflict")
    }

    @Test("the app writes its copy at the moment of a push: a conflict, never a silent overwrite",
          .tags(.silentOverwrite, .editLost))
    func appWritingDuringAPushIsAConflict() async throws {
        let scenario = try Scenario.make()
        // The app is stopped before the push (the default): the app writes just as it is.
        let agent = try await scenario.startAgent([])
        try scenario.device.setFaults(["latencyMs": 600])
        try scenario.harness.sim.clearRequests()
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; UPDATE notes SET title = 'written locally' WHERE id = 2")
        try await waitUntil("the push stops the app\n\(agent.log)", timeout: .seconds(30), poll: .milliseconds(5)) {
            (try? scenario.deviceRequests())?.contains { ($0.command ?? "").contains("am force-stop") } == true
        }
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'written by the app' WHERE id = 2")
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)

        try await waitUntil("conflict\n\(agent.log)", timeout: .seconds(45)) { (try? scenario.sidecar().state) == .conflict }
        try scenario.device.clearFaults()
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "the app's write is untouched")
        #expect(try scenario.uploadCount() == 0)
        let copy = try #require(try scenario.sidecar().conflictCopy.map { URL(fileURLWithPath: $0) })
        #expect(try Shell.sqlite(copy, "SELECT title FROM notes").contains("written by the app"), "the device's version is kept")
        #expect(try scenario.localTitles().contains("written locally"), "the local edit is kept")
        #expect(try scenario.statusText().contains("resolve"))
    }

    @Test("the app writes its copy after the push checked it, before the rename: a conflict, never a silent overwrite",
          .tags(.silentOverwrite, .editLost))
    func appWritingBetweenTheCheckAndTheRenameIsAConflict() async throws {
        let scenario = try Scenario.make()
        // The app keeps running (--no-stop-app), so it may write while the snapshot is uploaded.
        let agent = try await scenario.startAgent()
        try scenario.device.setFaults(["latencyMs": 600])
        try scenario.harness.sim.clearRequests()
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; UPDATE notes SET title = 'written locally' WHERE id = 2")
        try await waitUntil("the upload starts\n\(agent.log)", timeout: .seconds(30), poll: .milliseconds(5)) {
            (try? scenario.deviceRequests())?.contains { $0.service == "sync" && $0.op == "SEND" } == true
        }
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'written by the app' WHERE id = 2")

        try await waitUntil("the push ended\n\(agent.log)", timeout: .seconds(45)) {
            guard let state = try? scenario.sidecar().state else { return false }
            return state != .pushing && state != .dirty && state != .settling
        }
        try scenario.device.clearFaults()
        #expect(try scenario.deviceTitles().contains("written by the app"), "the app's row survives")
        #expect(try scenario.sidecar().state == .conflict)
    }
}
