import FlippioEngine
import Foundation
import Testing
import TestSupport

/// `flippio agent` end to end: the real agent process, the real adb, edits by the real sqlite3.
@Suite("Agent pushes saves to the device", .serialized)
struct AgentPushTests {
    /// Waits until the device's copy has `titles`, then checks what a push must leave behind.
    func expectPushed(_ scenario: Scenario, titles: [String], agent: AgentProcess) async throws {
        try await waitUntil("device has \(titles)\n\(agent.log)", timeout: .seconds(45)) {
            (try? scenario.deviceTitles()) == titles
        }
        try await waitUntil("sidecar clean\n\(agent.log)") { (try? scenario.sidecar().state) == .clean }
        #expect(scenario.deviceSideFiles().isEmpty, "no -wal/-shm/-journal beside the pushed database")
        #expect(try scenario.deviceStrayFiles().isEmpty, "no temp file left in the app's folder")
        #expect(try scenario.deviceTmpFiles().isEmpty, "no upload left in /data/local/tmp")
        let sidecar = try scenario.sidecar()
        #expect(sidecar.fingerprintAtLastPush?.mainHash == (try scenario.hash(scenario.deviceDatabase)))
        #expect(sidecar.deviceContentHash == (try ContentHash.sha256(databaseAt: scenario.deviceDatabase)),
                "the recorded content identity is the device file's")
        #expect(try Shell.sqlite(scenario.deviceDatabase, "PRAGMA quick_check") == "ok\n")
    }

    @Test func inPlaceEditWithRollbackJournalIsPushed() async throws {
        let scenario = try Scenario.make(journalMode: "delete")
        let agent = try scenario.harness.startAgent()
        try await agent.waitForLog("ready")
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('four')")
        try await expectPushed(scenario, titles: ["one", "two", "three", "four"], agent: agent)
        #expect(try scenario.sidecar().pushHistory.count == 1)
    }

    @Test func saveByRenamingATempFileOverTheCopyIsPushed() async throws {
        let scenario = try Scenario.make()
        let agent = try scenario.harness.startAgent()
        try await agent.waitForLog("ready")
        // What editors that save atomically do: write a whole new file, rename it over the old one.
        let temp = scenario.localCopy.deletingLastPathComponent().appendingPathComponent(".notes.db.save-tmp")
        try FileManager.default.copyItem(at: scenario.localCopy, to: temp)
        try Shell.sqlite(temp, "UPDATE notes SET title = 'TWO' WHERE id = 2")
        #expect(rename(temp.path, scenario.localCopy.path) == 0)
        try await expectPushed(scenario, titles: ["one", "TWO", "three"], agent: agent)
    }

    @Test func walEditWhileAnotherConnectionKeepsTheDatabaseOpenIsPushed() async throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.localCopy, "PRAGMA journal_mode=WAL")
        let agent = try scenario.harness.startAgent()
        try await agent.waitForLog("ready")
        let viewer = try SQLiteSession(scenario.localCopy)  // like DB Browser keeping the file open
        defer { viewer.close() }
        try await viewer.execute("SELECT count(*) FROM notes;")
        let mainBefore = try scenario.hash(scenario.localCopy)
        try await viewer.execute("INSERT INTO notes(title) VALUES ('in the wal');")
        #expect(try scenario.hash(scenario.localCopy) == mainBefore, "the edit is only in -wal: the main file is untouched")
        try await expectPushed(scenario, titles: ["one", "two", "three", "in the wal"], agent: agent)
    }

    @Test func aBurstOfWritesGivesOnePushAndReadingOrTouchingGivesNone() async throws {
        let scenario = try Scenario.make()
        // A generous settle window, so a noisy machine's pause inside the burst is not "quiet".
        let agent = try scenario.harness.startAgent(["--settle-ms", "1500", "--settle-max-ms", "120000"])
        try await agent.waitForLog("ready")
        // The start-up check (a snapshot compared with the device's content) has run.
        try await agent.waitForLog("nothing pushed")
        let inserts = (1...1000).map { "INSERT INTO notes(title) VALUES ('burst \($0)');" }.joined(separator: "\n")
        // Like any GUI tool, wait briefly when the agent's snapshot holds a read lock.
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=5000; PRAGMA synchronous=OFF;\n" + inserts)
        try await waitUntil("1003 rows on the device\n\(agent.log)", timeout: .seconds(60)) {
            (try? Shell.sqlite(scenario.deviceDatabase, "SELECT count(*) FROM notes")) == "1003\n"
        }
        try await waitUntil("sidecar clean") { (try? scenario.sidecar().state) == .clean }
        #expect(try scenario.sidecar().pushHistory.count == 1, "1,000 commits in a burst are one push")

        // Reading, opening with a viewer, and touching change nothing worth pushing.
        let checksBefore = agent.occurrences(of: "nothing pushed")
        _ = try Shell.sqlite(scenario.localCopy, "SELECT count(*) FROM notes")
        let viewer = try SQLiteSession(scenario.localCopy)
        try await viewer.execute("SELECT * FROM notes LIMIT 1;")
        viewer.close()
        try Shell.run(URL(fileURLWithPath: "/usr/bin/touch"), [scenario.localCopy.path])
        // The agent sees the touch (IN_ATTRIB), settles, snapshots, and finds nothing new.
        try await waitUntil("agent checked the touched file\n\(agent.log)") {
            agent.occurrences(of: "nothing pushed") > checksBefore
        }
        #expect(try scenario.sidecar().pushHistory.count == 1, "no push for reads, viewers or touch")
    }
}
