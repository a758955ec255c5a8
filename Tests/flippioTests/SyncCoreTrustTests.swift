import FlippioEngine
import Foundation
import Testing
import TestSupport

/// The review of the sync core (issue #11): each test is a sequence a user runs with the agent
/// up, ending with the user's next action, through the real `adb` and the emulated device.
@Suite("Sync core: the user's next action still works", .serialized)
struct SyncCoreTrustTests {
    func edit(_ scenario: Scenario, _ title: String) throws {
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('\(title)')")
    }

    /// Changes row 2 of the local copy, as the user's editor would.
    func editRowTwo(_ scenario: Scenario, _ title: String) throws {
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; UPDATE notes SET title = '\(title)' WHERE id = 2")
    }

    /// Makes a conflict with the agent running: the app changes row 2, then the desktop does too.
    func conflict(_ scenario: Scenario, agent: AgentProcess) async throws {
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'by the app' WHERE id = 2")
        try editRowTwo(scenario, "local edit")
        try await waitUntil("conflict\n\(agent.log)", timeout: .seconds(45)) { (try? scenario.sidecar().state) == .conflict }
    }

    /// Waits until the device holds `titles` and the sidecar is clean.
    func expectDevice(_ scenario: Scenario, _ titles: [String], agent: AgentProcess) async throws {
        try await waitUntil("device has \(titles)\n\(agent.log)", timeout: .seconds(45)) { (try? scenario.deviceTitles()) == titles }
        try await waitUntil("clean\n\(agent.log)") { (try? scenario.sidecar().state) == .clean }
    }

    // MARK: - 1. resolve while the agent runs

    @Test("resolve --keep-local while the agent runs: the next edit is pushed")
    func keepLocalThenEditIsPushed() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        try await conflict(scenario, agent: agent)
        let resolved = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-local"])
        #expect(resolved.status == 0, "\(resolved.err)")
        try await expectDevice(scenario, ["one", "local edit", "three"], agent: agent)

        try edit(scenario, "after resolve")
        try await expectDevice(scenario, ["one", "local edit", "three", "after resolve"], agent: agent)
        let status = try scenario.harness.flippio(["status", "--json"])
        #expect(status.out.contains("\"localChanges\" : false"), "\(status.out)")
    }

    @Test("resolve --keep-device while the agent runs: the next edit is pushed on top of the app's rows")
    func keepDeviceThenEditIsPushed() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        try await conflict(scenario, agent: agent)
        let resolved = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-device"])
        #expect(resolved.status == 0, "\(resolved.err)")
        #expect(try scenario.localTitles() == ["one", "by the app", "three"])

        try edit(scenario, "after resolve")
        try await expectDevice(scenario, ["one", "by the app", "three", "after resolve"], agent: agent)
    }

    // MARK: - 2. resolve keeps its promises

    @Test("resolve on a database that is not in conflict: exit 1, nothing pushed, the app's row intact")
    func resolveWithoutAConflictChangesNothing() async throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.deviceDatabase, "INSERT INTO notes(title) VALUES ('by the app')")
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        try scenario.harness.sim.clearRequests()
        for flag in ["--keep-local", "--keep-device"] {
            let result = try scenario.harness.flippio(["resolve", scenario.localCopy.path, flag])
            #expect(result.status == 1)
            #expect(result.err.contains("not in conflict"), "\(result.err)")
        }
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "the app's row is intact")
        #expect(try scenario.uploadCount() == 0)
        #expect(try scenario.localTitles() == ["one", "two", "three"], "nothing pulled either")
    }

    @Test("resolve --keep-local after the app wrote again: a new conflict with a new copy, nothing overwritten")
    func keepLocalReplacesOnlyTheSavedDeviceVersion() async throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'by the app' WHERE id = 2")
        try editRowTwo(scenario, "local edit")
        #expect(try scenario.harness.flippio(["push", scenario.localCopy.path]).status == 1)
        let firstCopy = try #require(try scenario.sidecar().conflictCopy)

        try Shell.sqlite(scenario.deviceDatabase, "INSERT INTO notes(title) VALUES ('by the app, again')")
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        let result = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-local"])
        #expect(result.status == 1)
        #expect(result.err.contains("again"), "\(result.err)")
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "the app's newest write is not overwritten")
        let sidecar = try scenario.sidecar()
        #expect(sidecar.state == .conflict)
        let newCopy = try #require(sidecar.conflictCopy)
        #expect(newCopy != firstCopy || FileManager.default.fileExists(atPath: firstCopy))
        #expect(try Shell.sqlite(URL(fileURLWithPath: newCopy), "SELECT title FROM notes").contains("by the app, again"))

        // The user looked at it and still wants theirs: now the saved version is what the device holds.
        let again = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-local"])
        #expect(again.status == 0, "\(again.err)")
        #expect(try scenario.deviceTitles() == ["one", "local edit", "three"])
    }

    // MARK: - 3. --keep-device keeps the local version first

    @Test("resolve --keep-device keeps the local copy with the rows only its -wal held")
    func keepDeviceKeepsTheLocalWALRows() async throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.localCopy, "PRAGMA journal_mode=WAL")
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'by the app' WHERE id = 2")
        // A reader keeps the WAL from being checkpointed away: the new row lives only in the -wal.
        let reader = try SQLiteSession(scenario.localCopy)
        try await reader.execute("BEGIN; SELECT count(*) FROM notes;")
        try editRowTwo(scenario, "only in the wal")
        #expect(FileManager.default.fileExists(atPath: scenario.localCopy.path + "-wal"))
        #expect(try scenario.harness.flippio(["push", scenario.localCopy.path]).status == 1)
        try await reader.execute("COMMIT;")
        reader.close()

        let result = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-device"])
        #expect(result.status == 0, "\(result.err)")
        let folder = scenario.localCopy.deletingLastPathComponent()
        let kept = try #require(try FileManager.default.contentsOfDirectory(atPath: folder.path).first { $0.hasPrefix("notes.local-") })
        let keptURL = folder.appendingPathComponent(kept)
        #expect(try Shell.sqlite(keptURL, "SELECT title FROM notes ORDER BY id") == "one\nonly in the wal\nthree\n")
        #expect(!FileManager.default.fileExists(atPath: keptURL.path + "-wal"), "folded into one file")
        #expect(try scenario.localTitles() == ["one", "by the app", "three"])
    }

    // MARK: - 4. re-pull never loses an edit

    @Test("pull racing an edit: the edit saved during the transfer is kept, the pull refuses")
    func pullRacingAnEditKeepsTheEdit() async throws {
        let scenario = try Scenario.make()
        let sidecarBefore = try Data(contentsOf: Sidecar.url(forDatabase: scenario.localCopy))
        try scenario.harness.sim.clearRequests()
        try scenario.device.setFaults(["hangSeconds": 30, "hangMatching": " cat "])
        let pull = try scenario.harness.startCommand(["pull", Scenario.serial, Scenario.package, "databases/notes.db"])
        // The transfer has started: the device answers it only when the fault is cleared.
        try await waitUntil("the transfer started") {
            (try? scenario.harness.sim.requests())?.contains { $0.service == "exec" && ($0.command ?? "").contains("cat") } == true
        }
        try edit(scenario, "saved during the pull")
        try scenario.device.clearFaults()
        let status = try await pull.waitForExit(timeout: .seconds(60))
        #expect(status == 1, "\(pull.log)")
        #expect(pull.log.contains("flippio push") && pull.log.contains("--overwrite"), "\(pull.log)")
        #expect(try scenario.localTitles() == ["one", "two", "three", "saved during the pull"])
        #expect(try Data(contentsOf: Sidecar.url(forDatabase: scenario.localCopy)) == sidecarBefore, "the sidecar is untouched")
        // The next action: push it.
        let push = try scenario.harness.flippio(["push", scenario.localCopy.path])
        #expect(push.status == 0, "\(push.err)")
        #expect(try scenario.deviceTitles() == ["one", "two", "three", "saved during the pull"])
    }

    @Test("re-pull writes into the live file: same inode, a connection open throughout sees the new rows")
    func rePullWritesIntoTheLiveFile() async throws {
        let scenario = try Scenario.make()
        let inode = try FileManager.default.attributesOfItem(atPath: scenario.localCopy.path)[.systemFileNumber] as? Int
        let editor = try SQLiteSession(scenario.localCopy)
        #expect(try await editor.execute("SELECT count(*) FROM notes;") == "3\n")
        try Shell.sqlite(scenario.deviceDatabase, "INSERT INTO notes(title) VALUES ('by the app')")
        try scenario.pull()
        #expect(try FileManager.default.attributesOfItem(atPath: scenario.localCopy.path)[.systemFileNumber] as? Int == inode)
        #expect(try await editor.execute("SELECT title FROM notes ORDER BY id DESC LIMIT 1;") == "by the app\n", "the open editor sees the new row")
        try await editor.execute("INSERT INTO notes(title) VALUES ('written by the open editor');")
        editor.close()
        #expect(try scenario.localTitles().last == "written by the open editor", "its write went to the live file")
        let push = try scenario.harness.flippio(["push", scenario.localCopy.path])
        #expect(push.status == 0, "\(push.err)")
        #expect(try scenario.deviceTitles() == ["one", "two", "three", "by the app", "written by the open editor"])
    }

    @Test("pull --overwrite keeps the old copy first, then takes the device's")
    func pullOverwriteKeepsTheOldCopy() async throws {
        let scenario = try Scenario.make()
        try edit(scenario, "unpushed")
        let refused = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package, "databases/notes.db"])
        #expect(refused.status == 1)
        let result = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package, "databases/notes.db", "--overwrite"])
        #expect(result.status == 0, "\(result.err)")
        #expect(try scenario.localTitles() == ["one", "two", "three"])
        let folder = scenario.localCopy.deletingLastPathComponent()
        let kept = try #require(try FileManager.default.contentsOfDirectory(atPath: folder.path).first { $0.hasPrefix("notes.local-") })
        #expect(try Shell.sqlite(folder.appendingPathComponent(kept), "SELECT title FROM notes ORDER BY id DESC LIMIT 1") == "unpushed\n")
    }

    // MARK: - 5. forget during a push

    @Test("forget during a push: the push ends, the database stays forgotten, later edits stay local")
    func forgetDuringAPushStaysForgotten() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        try scenario.harness.sim.clearRequests()
        try scenario.device.setFaults(["hangSeconds": 30])
        try edit(scenario, "pushed while forgotten")
        try await waitUntil("the push reached the device\n\(agent.log)") {
            ((try? scenario.harness.sim.requests()) ?? []).contains { $0.service == "shell" }
        }
        let forget = try scenario.harness.startCommand(["forget", scenario.localCopy.path])
        try await Task.sleep(for: .milliseconds(300))  // give `forget` time to block on the lock (it must wait)
        #expect(FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: scenario.localCopy).path), "forget waits for the push")
        try scenario.device.clearFaults()
        #expect(try await forget.waitForExit(timeout: .seconds(60)) == 0, "\(forget.log)")
        try await agent.waitForLog("stopped tracking")
        try edit(scenario, "after forget")
        try await Task.sleep(for: .seconds(1))
        #expect(!FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: scenario.localCopy).path), "the push did not write it back")
        #expect(try scenario.deviceTitles().contains("after forget") == false)
    }

    // MARK: - 6. one lock per database, one agent per workspace

    @Test("flippio push through a symlinked path waits for the agent's push of the same database")
    func pushThroughASymlinkWaitsForTheAgent() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        let link = scenario.harness.home.url.appendingPathComponent("link")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: scenario.harness.workspace)
        let linked = link.appendingPathComponent(String(scenario.localCopy.path.dropFirst(scenario.harness.workspace.path.count + 1)))
        try scenario.harness.sim.clearRequests()
        try scenario.device.setFaults(["hangSeconds": 30])
        try edit(scenario, "one edit")
        // A device command of the push (not the agent's device tracking, which asks the server too).
        try await waitUntil("the agent's push started\n\(agent.log)") {
            ((try? scenario.harness.sim.requests()) ?? []).contains { $0.service == "shell" }
        }
        let push = try scenario.harness.startCommand(["push", linked.path])
        try await Task.sleep(for: .milliseconds(300))
        try scenario.device.clearFaults()
        #expect(try await push.waitForExit(timeout: .seconds(60)) == 0, "\(push.log)")
        try await expectDevice(scenario, ["one", "two", "three", "one edit"], agent: agent)
        #expect(push.log.contains("unchanged"), "the second push found the first one's result: \(push.log)")
        #expect(try scenario.uploadCount() == 1, "one upload, not two racing ones")
    }

    @Test("a second agent on the same workspace exits 1 and names the running one's PID")
    func aSecondAgentExits() async throws {
        let scenario = try Scenario.make()
        let first = try await scenario.startAgent()
        let second = try scenario.harness.startAgent()
        #expect(try await second.waitForExit(timeout: .seconds(30)) == 1)
        #expect(second.log.contains("PID \(first.pid)"), "\(second.log)")
        // The first one still works.
        try edit(scenario, "still pushed")
        try await expectDevice(scenario, ["one", "two", "three", "still pushed"], agent: first)
    }

    // MARK: - 8, 9. leftovers, content identity

    @Test("start-up removes what a killed agent left: snapshots and staging of dead processes")
    func startUpRemovesLeftovers() async throws {
        let scenario = try Scenario.make()
        let scratch = scenario.harness.workspace.appendingPathComponent(".flippio/scratch")
        // A process that is gone (pid_max is far below this) left a snapshot and a pull staging folder.
        let dead = scratch.appendingPathComponent("4194000")
        try FileManager.default.createDirectory(at: dead.appendingPathComponent("pull-abc"), withIntermediateDirectories: true)
        try Data("snapshot".utf8).write(to: dead.appendingPathComponent("snapshot-1.db"))
        // A live process's scratch (this test's) stays.
        let live = scratch.appendingPathComponent(String(getpid()))
        try FileManager.default.createDirectory(at: live, withIntermediateDirectories: true)
        let legacy = scenario.harness.workspace.appendingPathComponent(".flippio/snapshots")
        try FileManager.default.createDirectory(at: legacy, withIntermediateDirectories: true)
        _ = try await scenario.startAgent()
        #expect(!FileManager.default.fileExists(atPath: dead.path))
        #expect(!FileManager.default.fileExists(atPath: legacy.path))
        #expect(FileManager.default.fileExists(atPath: live.path))
    }

    @Test("a database whose recorded hash was made by another SQLite version is not pushed")
    func theSQLiteVersionInTheHeaderIsNotAChange() async throws {
        let scenario = try Scenario.make()
        // What the pull would have recorded with another libsqlite3: the same pages, another version number.
        let copy = scenario.harness.home.url.appendingPathComponent("other-version.db")
        try FileManager.default.copyItem(at: scenario.localCopy, to: copy)
        let handle = try FileHandle(forUpdating: copy)
        try handle.seek(toOffset: 96)
        try handle.write(contentsOf: Data([0x00, 0x2D, 0xC6, 0xC0]))  // 3.000.000
        try handle.close()
        var sidecar = try scenario.sidecar()
        sidecar.deviceContentHash = try ContentHash.sha256(databaseAt: copy)
        sidecar.localContentHash = sidecar.deviceContentHash
        try SidecarStore.encode(sidecar).write(to: Sidecar.url(forDatabase: scenario.localCopy))
        try scenario.harness.sim.clearRequests()

        let agent = try await scenario.startAgent()
        #expect(agent.log.contains("nothing pushed"))
        #expect(try scenario.uploadCount() == 0, "no push for a header that only names another library")
        try edit(scenario, "a real edit")
        try await expectDevice(scenario, ["one", "two", "three", "a real edit"], agent: agent)
    }

    @Test("a sidecar of an earlier version (plain file hashes) migrates without a push")
    func anEarlierSidecarMigratesWithoutAPush() async throws {
        let scenario = try Scenario.make()
        var sidecar = try scenario.sidecar()
        // Earlier versions recorded the plain SHA-256 of their snapshot: the same bytes a snapshot gives now.
        let probe = scenario.harness.home.url.appendingPathComponent("probe")
        try FileManager.default.createDirectory(at: probe, withIntermediateDirectories: true)
        let connection = try await ConnectionPool(capacity: 1).connection(for: scenario.localCopy)
        let snapshot = try Snapshotter(directory: probe).snapshot(of: connection, named: "s.db")
        sidecar.deviceContentHash = snapshot.fileHash
        sidecar.contentHashScheme = nil
        try SidecarStore.encode(sidecar).write(to: Sidecar.url(forDatabase: scenario.localCopy))
        try scenario.harness.sim.clearRequests()
        _ = try await scenario.startAgent()
        #expect(try scenario.uploadCount() == 0)
        try await waitUntil("migrated") { (try? scenario.sidecar().contentHashScheme) == Sidecar.currentContentHashScheme }
        #expect(try scenario.sidecar().deviceContentHash == snapshot.contentHash)
    }
}
