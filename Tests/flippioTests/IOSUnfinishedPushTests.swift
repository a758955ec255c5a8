import FlippioEngine
import Foundation
import Testing
import TestSupport

/// iOS pushes take separate AFC calls (put, check, remove the stale -wal/-shm, rename): a push
/// cut between the removal and the rename must be finished by the next attempt, not mistaken for
/// the app having rewritten its database (whose "version" would then lack the rows of its -wal).
@Suite("iOS: an interrupted swap is finished, not a conflict", .serialized)
struct IOSUnfinishedPushTests {
    @Test(.tags(.editLost, .silentOverwrite))
    func journalsRemovedBeforeTheRename_nextPushFinishesIt() throws {
        let scenario = try IOSScenario.make(pull: false)
        // The app's database in WAL mode with its newest row only in the -wal (copied aside while
        // sqlite3 still has it open, before its closing checkpoint).
        let work = try TemporaryDirectory("ios-wal")
        let made = work.child("notes.db")
        let sqlite3 = try #require(Products.systemTool("sqlite3"))
        let result = try Shell.run(sqlite3, [made.path], input: Data("""
            PRAGMA journal_mode=WAL;
            PRAGMA wal_autocheckpoint=0;
            CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
            INSERT INTO notes(title) VALUES ('one'), ('two'), ('only in the wal');
            .shell cp \(made.path) \(made.path)-wal \(scenario.deviceDatabase.deletingLastPathComponent().path)/

            """.utf8))
        #expect(result.status == 0, "\(result.err)")
        try scenario.pull()
        #expect(try scenario.localTitles() == ["one", "two", "only in the wal"])

        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'edited' WHERE id = 1")
        // What a push cut after its `rm` of the journals leaves: a push recorded as pending, the
        // main file as it was, the -wal and -shm gone.
        let sidecarURL = Sidecar.url(forDatabase: scenario.localCopy)
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: sidecarURL)) as? [String: Any])
        json["pendingPushHash"] = String(repeating: "0", count: 64)
        json["state"] = "pushing"
        try JSONSerialization.data(withJSONObject: json).write(to: sidecarURL, options: .atomic)
        for side in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: scenario.deviceDatabase.path + side) }

        let push = try scenario.flippio(["push", scenario.localCopy.path])
        #expect(push.status == 0, "\(push.out)\n\(push.err)")
        #expect(try scenario.deviceTitles() == ["edited", "two", "only in the wal"])
        let sidecar = try SidecarStore.load(forDatabase: scenario.localCopy)
        #expect(sidecar.state == .clean)
        #expect(sidecar.conflictCopy == nil)
        #expect(sidecar.pendingPushHash == nil)
    }
}
