import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Page-delta pushes end to end: the real `flippio push` and `adb` against the emulated device,
/// counting what crosses the wire in the simulator's request log.
@Suite("Delta push", .serialized)
struct DeltaPushTests {
    /// A device database of `rows` rows of ~4 KB each (one page per row), made by sqlite3 in one
    /// statement, pulled by the real `flippio pull`.
    static func scenario(rows: Int) throws -> Scenario {
        let harness = try FlippioHarness()
        let device = try harness.sim.addDevice(Scenario.serial, packages: [Scenario.package: true])
        let scenario = Scenario(harness: harness, device: device)
        try FileManager.default.createDirectory(at: scenario.deviceDatabase.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Shell.sqlite(scenario.deviceDatabase, """
            CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body BLOB);
            WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < \(rows))
            INSERT INTO notes SELECT x, 'note ' || x, randomblob(4000) FROM n;
            """)
        try scenario.pull()
        return scenario
    }

    /// Runs `flippio push` on the local copy; returns what it sent to the device and its record.
    @discardableResult
    static func push(_ scenario: Scenario, environment: [String: String] = [:]) throws -> (bytes: Int, record: Sidecar.PushRecord, log: String) {
        try scenario.harness.sim.clearRequests()
        let result = try scenario.harness.flippio(["push", scenario.localCopy.path], environment: environment)
        #expect(result.status == 0, "\(result.out)\n\(result.err)")
        let record = try #require(try scenario.sidecar().pushHistory.last)
        return (try scenario.harness.sim.requests().bytesSentToDevice, record, result.out + result.err)
    }

    /// The base (what the device must now hold, byte for byte) of the scenario's database.
    static func base(_ scenario: Scenario) -> URL {
        BaseStore(workspace: Workspace(root: scenario.harness.workspace)).url(for: RemoteDatabase(
            platform: .android, deviceID: Scenario.serial, appID: Scenario.package, path: Scenario.remotePath, access: .runAs))
    }

    static func expectDeviceHoldsThePush(_ scenario: Scenario) throws {
        #expect(try Data(contentsOf: scenario.deviceDatabase) == Data(contentsOf: base(scenario)))
        #expect(try scenario.sidecar().fingerprintAtLastPush?.mainHash == scenario.hash(scenario.deviceDatabase))
        #expect(try scenario.deviceQuickCheck() == "ok")
        #expect(try scenario.deviceLeftovers().isEmpty)
    }

    @Test(.tags(.editLost, .corruption))
    func oneRowEditOf50MB_sendsUnderAFiftiethOfTheFile_andTheNextEditToo() throws {
        let scenario = try Self.scenario(rows: 12_500)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: scenario.deviceDatabase.path)[.size] as? Int)
        #expect(size > 50_000_000)

        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'edited' WHERE id = 6000")
        let first = try Self.push(scenario)
        #expect(first.record.viaDelta == true)
        #expect(first.bytes <= size / 50, "sent \(first.bytes) bytes of a \(size)-byte file")
        #expect(first.record.bytesSent.map { $0 < Int64(size / 50) } == true)
        try Self.expectDeviceHoldsThePush(scenario)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT title FROM notes WHERE id = 6000") == "edited\n")

        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'again' WHERE id = 12000")
        let second = try Self.push(scenario)
        #expect(second.record.viaDelta == true)
        #expect(second.bytes <= size / 50)
        try Self.expectDeviceHoldsThePush(scenario)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT title FROM notes WHERE id IN (6000, 12000) ORDER BY id") == "edited\nagain\n")
    }

    /// A one-row edit costs the device one copy and two hashes, whatever the file's size: no
    /// fingerprint before the delta (its script compares the same hashes before the rename) and no
    /// hash of the target after it (the same script hashed the copy it renames).
    @Test(.tags(.silentOverwrite, .corruption))
    func oneRowEdit_deviceHashesOnlyInsideTheDeltaScript() throws {
        let scenario = try Self.scenario(rows: 250)
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'edited' WHERE id = 120")
        let pushed = try Self.push(scenario)
        #expect(pushed.record.viaDelta == true)
        let commands = try scenario.harness.sim.requests().compactMap(\.command)
        let hashing = commands.filter { $0.contains("sha256sum") }
        #expect(hashing.count == 1, "\(hashing)")
        let script = try #require(hashing.first)
        #expect(script.contains("dd if="))
        // Both whole-file hashes sit before the rename: the copy's, then the target's (the app's writes).
        #expect(script.components(separatedBy: "sha256sum ").count - 1 == 2)
        let rename = try #require(script.range(of: "mv -f "))
        #expect(script[rename.upperBound...].contains("sha256sum") == false)
        try Self.expectDeviceHoldsThePush(scenario)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT title FROM notes WHERE id = 120") == "edited\n")
    }

    @Test(.tags(.silentOverwrite))
    func deviceChangedSinceTheBase_takesTheMergePath_notTheDelta() throws {
        let scenario = try Self.scenario(rows: 250)
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'by the app' WHERE id = 3")
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'by the user' WHERE id = 200")
        let pushed = try Self.push(scenario)
        #expect(pushed.record.merged != nil)
        #expect(pushed.record.viaDelta == false)
        // The delta goes without a look first (the sidecar says the device holds the base); the
        // device's script compares its copy with the expected fingerprint before the rename and
        // refuses (exit 3, nothing replaced). Only then is the device looked at, pulled and merged:
        // the app's row survives, so the delta was never applied over the app's copy.
        let commands = try scenario.harness.sim.requests().compactMap(\.command)
        let delta = try #require(commands.firstIndex { $0.contains("dd if=") })
        #expect(commands[delta...].filter { $0.contains("dd if=") }.count == 1, "one delta, refused, not retried")
        #expect(commands[(delta + 1)...].contains { $0.contains("sha256sum") && !$0.contains("sh -c") }, "the look after the refusal")
        #expect(commands[(delta + 1)...].contains { $0.contains("cat ") }, "the device's copy pulled for the merge")
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT title FROM notes WHERE id IN (3, 200) ORDER BY id") == "by the app\nby the user\n")
        try Self.expectDeviceHoldsThePush(scenario)
    }

    @Test(.tags(.corruption, .editLost))
    func ddFailsHalfWay_fallsBackToAFullPush_andSaysSo() throws {
        let scenario = try Self.scenario(rows: 250)
        try scenario.device.setFaults(["failDdAfterRuns": 0])
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'edited' WHERE id = 100")
        let pushed = try Self.push(scenario, environment: ["FLIPPIO_LOG_LEVEL": "notice"])
        #expect(pushed.log.contains("the page delta push failed; pushing the whole file instead"))
        #expect(pushed.log.contains("No space left on device"))
        #expect(pushed.record.viaDelta == false)
        #expect(pushed.record.bytesSent == pushed.record.bytes)
        #expect(try scenario.harness.sim.requests().contains { ($0.command ?? "").contains("dd if=") })
        try Self.expectDeviceHoldsThePush(scenario)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT title FROM notes WHERE id = 100") == "edited\n")
    }

    @Test(.tags(.editLost))
    func vacuumedLocalCopy_goesWhole_thenTheNextEditIsADelta() throws {
        let scenario = try Self.scenario(rows: 250)
        try Shell.sqlite(scenario.localCopy, "DELETE FROM notes WHERE id <= 20; VACUUM;")
        let vacuumed = try Self.push(scenario)
        #expect(vacuumed.record.viaDelta == false)
        #expect(try !scenario.harness.sim.requests().contains { ($0.command ?? "").contains("dd if=") })
        try Self.expectDeviceHoldsThePush(scenario)

        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'after vacuum' WHERE id = 150")
        let next = try Self.push(scenario)
        #expect(next.record.viaDelta == true)
        try Self.expectDeviceHoldsThePush(scenario)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT count(*), max(title) FROM notes WHERE id = 150 OR id <= 20") == "1|after vacuum\n")
    }

    /// The base is adopted without an fsync: after a crash it may be empty (ext4 had not written it
    /// yet) or hold wrong pages. Neither may reach the device: an empty base means no delta (the
    /// whole file goes), a base with a wrong page gives a delta that carries that page too, and the
    /// device's copy is the snapshot byte for byte either way; the edit after is a delta again.
    @Test(.tags(.corruption, .editLost))
    func aBaseACrashLeftEmptyOrWrong_neverReachesTheDevice_andTheNextEditIsADeltaAgain() throws {
        let scenario = try Self.scenario(rows: 250)
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'first' WHERE id = 100")
        #expect(try Self.push(scenario).record.viaDelta == true)

        try Data().write(to: Self.base(scenario))  // as after a crash before the write-back
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'second' WHERE id = 120")
        let afterEmpty = try Self.push(scenario)
        #expect(afterEmpty.record.viaDelta == false)
        try Self.expectDeviceHoldsThePush(scenario)

        // A page the next edit does not touch, wrong in the base.
        let handle = try FileHandle(forWritingTo: Self.base(scenario))
        try handle.seek(toOffset: 50 * 4096)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: 4096))
        try handle.close()
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'third' WHERE id = 200")
        let afterWrongPage = try Self.push(scenario)
        #expect(afterWrongPage.record.viaDelta == true)
        try Self.expectDeviceHoldsThePush(scenario)

        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'fourth' WHERE id = 10")
        let next = try Self.push(scenario)
        #expect(next.record.viaDelta == true)
        #expect(next.bytes < afterWrongPage.bytes, "the repaired base: only the edit's pages")
        try Self.expectDeviceHoldsThePush(scenario)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT group_concat(title) FROM (SELECT title FROM notes WHERE id IN (10, 100, 120, 200) ORDER BY id)")
                == "fourth,first,second,third\n")
    }

    /// The agent, not `flippio push`: each save goes by page delta and the base takes it in place;
    /// after the agent is stopped and started again, the next save is a page delta again.
    @Test(.tags(.editLost, .corruption))
    func withTheAgentRunning_eachSaveIsADelta_andAfterARestartTheNextOneToo() async throws {
        let scenario = try Self.scenario(rows: 1_000)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: scenario.deviceDatabase.path)[.size] as? Int)
        var agent = try scenario.harness.startAgent()
        try await agent.waitForLog("ready")
        let edits = [(id: 100, title: "agent one"), (id: 900, title: "agent two"), (id: 500, title: "after restart")]
        for (index, edit) in edits.enumerated() {
            if index == 2 {
                agent.signal(SIGTERM)
                #expect(try await agent.waitForExit() == 0)
                agent = try scenario.harness.startAgent()
                try await agent.waitForLog("ready")
            }
            try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = '\(edit.title)' WHERE id = \(edit.id)")
            try await waitUntil("push \(index + 1) recorded\n\(agent.log)", timeout: .seconds(45)) {
                let sidecar = try? scenario.sidecar()
                return sidecar?.pushHistory.count == index + 1 && sidecar?.state == .clean
            }
            let record = try #require(try scenario.sidecar().pushHistory.last)
            #expect(record.viaDelta == true, "\(agent.log)")
            #expect(record.bytesSent.map { $0 < Int64(size / 50) } == true)
            try Self.expectDeviceHoldsThePush(scenario)
            #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT title FROM notes WHERE id = \(edit.id)") == "\(edit.title)\n")
        }
        // The user's next action: a commit that changes no row. The content hashes the deltas
        // recorded (computed while the device worked) say it is what the device holds: no push.
        let unchangedBefore = agent.occurrences(of: "content equals the device's; nothing pushed")
        try scenario.harness.sim.clearRequests()
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = title WHERE id = 7")
        try await waitUntil("the no-op commit looked at\n\(agent.log)", timeout: .seconds(45)) {
            agent.occurrences(of: "content equals the device's; nothing pushed") > unchangedBefore
        }
        #expect(try scenario.sidecar().pushHistory.count == edits.count)
        #expect(try scenario.harness.sim.requests().bytesSentToDevice == 0)
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit() == 0)
    }

    /// A delta push records its content hash after the device has the copy (it is computed
    /// meanwhile): what it records must be what the device holds, so that the next push of the
    /// same content sends nothing, a commit that changes no row neither, and a real edit goes by
    /// delta again.
    @Test(.tags(.editLost))
    func afterADelta_theSameContentIsNotPushedAgain_andTheNextEditIsADelta() throws {
        let scenario = try Self.scenario(rows: 250)
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'edited' WHERE id = 200")
        #expect(try Self.push(scenario).record.viaDelta == true)
        let device = try ContentHash.sha256(databaseAt: scenario.deviceDatabase)
        let sidecar = try scenario.sidecar()
        #expect(sidecar.deviceContentHash == device)
        #expect(sidecar.baseHash == device)
        #expect(sidecar.localContentHash == device)
        #expect(sidecar.pushHistory.last?.contentHash == device)
        let pushes = sidecar.pushHistory.count

        for noChange in ["SELECT 1", "UPDATE notes SET title = title WHERE id = 3"] {
            try Shell.sqlite(scenario.localCopy, noChange)
            let again = try Self.push(scenario)
            #expect(try scenario.sidecar().pushHistory.count == pushes, "\(noChange): nothing new to push")
            #expect(again.bytes == 0, "\(noChange): nothing sent")
        }

        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'again' WHERE id = 20")
        #expect(try Self.push(scenario).record.viaDelta == true)
        try Self.expectDeviceHoldsThePush(scenario)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "SELECT title FROM notes WHERE id IN (20, 200) ORDER BY id") == "again\nedited\n")
    }

    /// The app is stopped beside the patch's upload, and the device-side script waits for the
    /// stop. A stop that fails fails the push as it did when the stop came first: the device's
    /// database untouched, no temp file left, no push pending; the next push is a delta.
    @Test(.tags(.silentOverwrite))
    func theAppIsStoppedBeforeTheDeltasScript_andAStopThatFailsFailsThePush() throws {
        let scenario = try Self.scenario(rows: 100)
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'edited' WHERE id = 50")
        let before = try Data(contentsOf: scenario.deviceDatabase)
        try scenario.harness.sim.clearRequests()
        try scenario.device.setFaults(["hangSeconds": 60, "hangMatching": "am force-stop"])
        let failed = try scenario.harness.flippio(["push", scenario.localCopy.path],
                                                  environment: ["FLIPPIO_COMMAND_TIMEOUT_MS": "1000", "FLIPPIO_RETRY_ATTEMPTS": "1"])
        try scenario.device.clearFaults()
        #expect(failed.status != 0, "\(failed.out)\n\(failed.err)")
        #expect(failed.err.contains("am force-stop"), "the error names the stop: \(failed.err)")
        #expect(try Data(contentsOf: scenario.deviceDatabase) == before)
        #expect(try !scenario.harness.sim.requests().contains { ($0.command ?? "").contains("mv -f") }, "no swap ran")
        #expect(try scenario.deviceLeftovers().isEmpty)
        #expect(try scenario.sidecar().pendingPushHash == nil)

        let pushed = try Self.push(scenario)
        #expect(pushed.record.viaDelta == true)
        let commands = try scenario.harness.sim.requests().compactMap(\.command)
        let stop = try #require(commands.firstIndex { $0.contains("am force-stop") })
        let swap = try #require(commands.firstIndex { $0.contains("mv -f") })
        #expect(stop < swap, "\(commands)")
        try Self.expectDeviceHoldsThePush(scenario)
    }

    @Test func thresholdZero_alwaysPushesTheWholeFile() throws {
        let scenario = try Self.scenario(rows: 100)
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'x' WHERE id = 50")
        let pushed = try Self.push(scenario, environment: ["FLIPPIO_DELTA_THRESHOLD": "0"])
        #expect(pushed.record.viaDelta == false)
        try Self.expectDeviceHoldsThePush(scenario)
    }
}
