import FlippioEngine
import Foundation
import Testing
import TestSupport

/// `flippio agent`, `push` and `resolve` for an iPhone made of the libimobiledevice stand-ins:
/// the same engine paths as Android (snapshot, fingerprint, conflict, atomic replace, verify),
/// with files moved by `afcclient`, and pushes that wait for an unplugged or locked iPhone.
@Suite("iOS: the agent pushes saves to the device", .serialized)
struct IOSAgentTests {
    /// Waits until the device's copy has `titles`, then checks what a push must leave behind.
    func expectPushed(_ scenario: IOSScenario, titles: [String], agent: AgentProcess) async throws {
        try await waitUntil("device has \(titles)\n\(agent.log)", timeout: .seconds(60)) {
            (try? scenario.deviceTitles()) == titles
        }
        try await waitUntil("sidecar clean\n\(agent.log)") { (try? sidecar(scenario).state) == .clean }
        try expectCleanDevice(scenario)
    }

    /// The device's database is whole, alone in its folder, and what the sidecar says was pushed.
    func expectCleanDevice(_ scenario: IOSScenario) throws {
        #expect(scenario.deviceSideFiles().isEmpty, "no -wal/-shm/-journal beside the pushed database")
        #expect(try scenario.deviceStrayFiles().isEmpty, "no temp file left in Documents")
        let sidecar = try sidecar(scenario)
        let deviceHash = try ContentHash.sha256(fileAt: scenario.deviceDatabase)
        #expect(sidecar.fingerprintAtLastPush?.mainHash == deviceHash, "verified by hash")
        #expect(sidecar.deviceContentHash == (try ContentHash.sha256(databaseAt: scenario.deviceDatabase)))
        #expect(sidecar.pendingPushHash == nil)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "PRAGMA quick_check") == "ok\n")
    }

    /// Edits the local copy as a GUI tool would: waiting briefly while the agent's snapshot reads it.
    func edit(_ scenario: IOSScenario, _ sql: String) throws {
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000;\n" + sql)
    }

    func sidecar(_ scenario: IOSScenario) throws -> Sidecar {
        try SidecarStore.load(forDatabase: scenario.localCopy)
    }

    /// A pulled scenario whose flippio finds `backend`; the ifuse case is cancelled (skipped) with
    /// the reason where the stand-in cannot mount.
    func make(_ backend: IOSStandInBackend) throws -> IOSScenario {
        if let reason = backend.unavailableReason { try Test.cancel(Comment(rawValue: reason)) }
        return try IOSScenario.make(backend: backend)
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func anEditIsPushedReplacingTheDatabaseAndItsStaleSideFiles(_ backend: IOSStandInBackend) async throws {
        let scenario = try make(backend)
        // A -shm the app left beside its database: stale once the file is replaced.
        try Data(count: 32768).write(to: URL(fileURLWithPath: scenario.deviceDatabase.path + "-shm"))
        #expect(scenario.ios.activeMounts().isEmpty, "the pull let go of its mount")
        let mountsBefore = try scenario.ios.requests().filter { $0.tool == "ifuse" }.count
        let agent = try scenario.startAgent()
        try await agent.waitForLog("ready")
        try edit(scenario, "INSERT INTO notes(title) VALUES ('four')")
        try await expectPushed(scenario, titles: ["one", "two", "three", "four"], agent: agent)
        #expect(try sidecar(scenario).pushHistory.count == 1)
        if backend == .ifuse {
            // One mount for the fingerprint, upload, rename and check: kept while the agent runs,
            // gone when it stops.
            #expect(scenario.ios.activeMounts().count == 1)
            #expect(try scenario.ios.requests().filter { $0.tool == "ifuse" }.count == mountsBefore + 1)
            agent.signal(SIGTERM)
            #expect(try await agent.waitForExit() == 0)
            #expect(scenario.ios.activeMounts().isEmpty, "the agent unmounts on stop\n\(agent.log)")
            return
        }
        #expect(try scenario.uploadCount() == 1)
        // Uploaded to a temp name, then renamed over the database.
        let afc = try scenario.ios.requests().filter { $0.tool == "afcclient" }.map(\.args)
        let temp = try #require(afc.first { $0.contains("put") }?.last)
        #expect(temp.hasPrefix("/Documents/notes.db.flippio-tmp-"), "a temp name of this attempt's own: \(temp)")
        #expect(afc.contains { $0.contains("mv") && $0.suffix(2) == [temp, "/Documents/notes.db"] })
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func flippioPushWithoutTheAgentPushesAndVerifies(_ backend: IOSStandInBackend) throws {
        let scenario = try make(backend)
        try edit(scenario, "UPDATE notes SET title = 'TWO' WHERE id = 2")
        let push = try scenario.flippio(["push", scenario.localCopy.path])
        #expect(push.status == 0, "\(push.err)")
        #expect(try scenario.deviceTitles() == ["one", "TWO", "three"])
        try expectCleanDevice(scenario)
        #expect(try sidecar(scenario).state == .clean)
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func theAppWritingItsCopyAfterThePullIsAConflictAndResolveKeepLocalEndsIt(_ backend: IOSStandInBackend) async throws {
        let scenario = try make(backend)
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'written by the app' WHERE id = 2")
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)

        let agent = try scenario.startAgent()
        try await agent.waitForLog("ready")
        try edit(scenario, "UPDATE notes SET title = 'written locally' WHERE id = 2")
        try await waitUntil("conflict\n\(agent.log)", timeout: .seconds(45)) { (try? sidecar(scenario).state) == .conflict }

        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "the device file is byte-identical to before")
        #expect(try scenario.uploadCount() == 0)
        let copy = try #require(try sidecar(scenario).conflictCopy.map { URL(fileURLWithPath: $0) })
        #expect(copy.lastPathComponent.hasPrefix("notes.device-") && copy.pathExtension == "db")
        #expect(try Shell.sqlite(copy, "SELECT title FROM notes ORDER BY id").contains("written by the app"), "the device's version is kept")
        #expect(try scenario.localTitles().contains("written locally"), "the local version is kept")
        let status = try scenario.flippio(["status"])
        #expect(status.out.contains("conflict") && status.out.contains("resolve"), "\(status.out)")

        let resolved = try scenario.flippio(["resolve", scenario.localCopy.path, "--keep-local"])
        #expect(resolved.status == 0, "\(resolved.err)")
        #expect(try scenario.deviceTitles() == ["one", "written locally", "three"])
        #expect(try sidecar(scenario).state == .clean)
        try expectCleanDevice(scenario)
    }

    @Test func resolveKeepDeviceTakesTheDevicesVersion() throws {
        let scenario = try IOSScenario.make()
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'written by the app' WHERE id = 2")
        try edit(scenario, "UPDATE notes SET title = 'written locally' WHERE id = 2")
        let push = try scenario.flippio(["push", scenario.localCopy.path])
        #expect(push.status == 1, "a conflict is a failure of `push`")
        #expect(push.err.contains("resolve"))
        #expect(try sidecar(scenario).state == .conflict)

        let resolved = try scenario.flippio(["resolve", scenario.localCopy.path, "--keep-device"])
        #expect(resolved.status == 0, "\(resolved.err)")
        #expect(try scenario.localTitles() == ["one", "written by the app", "three"])
        #expect(try sidecar(scenario).state == .clean)
        #expect(try scenario.uploadCount() == 0, "nothing was written to the device")
    }

    @Test func aCorruptLocalCopyIsNeverPushed() async throws {
        let scenario = try IOSScenario.make()
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        let agent = try scenario.startAgent()
        try await agent.waitForLog("ready")
        try Data("this is not a database\n".utf8).write(to: scenario.localCopy)
        try await waitUntil("invalid\n\(agent.log)", timeout: .seconds(30)) { (try? sidecar(scenario).state) == .invalid }
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes)
        #expect(try scenario.uploadCount() == 0)
    }

    // MARK: - Devices that go away

    /// With another iPhone plugged in, `afcclient -u UDID` would wait for the missing one until its
    /// timeout: the bridge asks usbmuxd first, so the push waits for the device at once either way.
    @Test(arguments: [false, true])
    func aPushWaitingForAnUnpluggedIPhoneResumesWhenItIsBack(anotherIPhonePlugged: Bool) async throws {
        let scenario = try IOSScenario.make()
        if anotherIPhonePlugged { try scenario.ios.addDevice(udid: "00008101-000A1B2C3D4E5F60", name: "Other") }
        try scenario.device.unplug()
        // Control calls time out after 60 s: a wait that ends sooner did not come from a timeout.
        let agent = try scenario.startAgent(environment: ["FLIPPIO_COMMAND_TIMEOUT_MS": "60000"])
        try await agent.waitForLog("ready")
        try edit(scenario, "INSERT INTO notes(title) VALUES ('saved while unplugged')")
        try await waitUntil("waiting for the device\n\(agent.log)", timeout: .seconds(50)) {
            (try? sidecar(scenario).state) == .waitingForDevice
        }
        #expect(try sidecar(scenario).lastError?.code == .deviceNotFound)
        #expect(!agent.log.contains("did not finish in time"), "\(agent.log)")
        #expect(try scenario.deviceTitles() == ["one", "two", "three"])
        let status = try scenario.flippio(["status"])
        #expect(status.out.contains("waiting-for-device"), "\(status.out)")

        // Plugged back in: no file event happens, the agent's poll of `idevice_id -l` finds it.
        scenario.device.plug()
        try await expectPushed(scenario, titles: ["one", "two", "three", "saved while unplugged"], agent: agent)
        #expect(try scenario.uploadCount() == 1)
    }

    /// The phone goes while the agent holds its ifuse mount: the mount dies (ENOTCONN). The agent
    /// does not hang on it, unmounts it, reports the device gone, and pushes once it is back.
    @Test func unpluggingWhileTheAgentHoldsTheIfuseMountDoesNotHangAndCleansUp() async throws {
        let scenario = try make(.ifuse)
        let agent = try scenario.startAgent(environment: ["FLIPPIO_COMMAND_TIMEOUT_MS": "60000"])
        try await agent.waitForLog("ready")
        try edit(scenario, "INSERT INTO notes(title) VALUES ('four')")
        try await expectPushed(scenario, titles: ["one", "two", "three", "four"], agent: agent)
        #expect(scenario.ios.activeMounts().count == 1)

        try scenario.device.unplug()
        try edit(scenario, "INSERT INTO notes(title) VALUES ('saved while unplugged')")
        try await waitUntil("waiting for the device\n\(agent.log)", timeout: .seconds(50)) {
            (try? sidecar(scenario).state) == .waitingForDevice
        }
        #expect(try sidecar(scenario).lastError?.code == .deviceNotFound)
        try await waitUntil("the dead mount is gone\n\(agent.log)") { scenario.ios.activeMounts().isEmpty }
        #expect(!agent.log.contains("did not finish in time"), "\(agent.log)")

        scenario.device.plug()
        try await expectPushed(scenario, titles: ["one", "two", "three", "four", "saved while unplugged"], agent: agent)
        #expect(scenario.ios.activeMounts().count == 1, "mounted afresh")
    }

    @Test func aPushWaitingForALockedIPhoneResumesWhenItIsUnlocked() async throws {
        let scenario = try IOSScenario.make()
        try scenario.device.setState(.locked)
        let agent = try scenario.startAgent()
        try await agent.waitForLog("ready")
        try edit(scenario, "INSERT INTO notes(title) VALUES ('saved while locked')")
        try await waitUntil("waiting for the device\n\(agent.log)", timeout: .seconds(60)) {
            (try? sidecar(scenario).state) == .waitingForDevice
        }
        let error = try #require(try sidecar(scenario).lastError)
        #expect(error.code == .iosDeviceLocked)
        #expect(error.remedy?.contains("Unlock") == true)
        #expect(try scenario.uploadCount() == 0)
        // The poll sees the device still locked: the push waits (no upload) until it is unlocked.
        let polls = try scenario.ios.requests().filter { $0.tool == "idevice_id" }.count
        try await waitUntil("the agent polled again\n\(agent.log)", timeout: .seconds(30)) {
            try scenario.ios.requests().filter { $0.tool == "idevice_id" }.count > polls
        }
        #expect(try scenario.uploadCount() == 0)

        try scenario.device.setState(.ready)
        try await expectPushed(scenario, titles: ["one", "two", "three", "saved while locked"], agent: agent)
    }
}
