import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Issue #12 end to end: the app and the desktop both write, the agent merges row by row, and
/// asks only when the same row changed on both sides. The real agent, `adb` and emulated device.
@Suite("Row-level sync: the app and the desktop both write", .serialized)
struct RowLevelSyncTests {
    func edit(_ scenario: Scenario, _ sql: String) throws {
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; " + sql)
    }

    func appWrites(_ scenario: Scenario, _ sql: String) throws {
        try Shell.sqlite(scenario.deviceDatabase, sql)
    }

    func conflictCopies(_ scenario: Scenario) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: scenario.localCopy.deletingLastPathComponent().path)
            .filter { $0.hasPrefix("notes.device-") }
    }

    @Test("the app only reopens its database in WAL mode: the next edit is pushed, in WAL mode, no conflict")
    func walReopenIsNotAChange() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        try edit(scenario, "INSERT INTO notes(title) VALUES ('first edit')")
        try await waitUntil("first edit pushed\n\(agent.log)", timeout: .seconds(45)) {
            (try? scenario.deviceTitles())?.last == "first edit" && (try? scenario.sidecar().state) == .clean
        }
        // The app opens its database (Room does it in WAL mode) and only reads.
        try appWrites(scenario, "PRAGMA journal_mode=WAL; SELECT count(*) FROM notes;")
        try edit(scenario, "INSERT INTO notes(title) VALUES ('second edit')")
        try await waitUntil("second edit pushed\n\(agent.log)", timeout: .seconds(45)) {
            (try? scenario.deviceTitles()) == ["one", "two", "three", "first edit", "second edit"]
                && (try? scenario.sidecar().state) == .clean
        }
        #expect(try conflictCopies(scenario).isEmpty)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "PRAGMA journal_mode") == "wal\n", "the app's journal mode is kept")
        #expect(scenario.deviceSideFiles().isEmpty)
    }

    @Test("both sides change different rows: merged on the device and in the local copy, an open reader sees the app's rows")
    func disjointChangesAreMerged() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        let reader = try SQLiteSession(scenario.localCopy)
        #expect(try await reader.execute("SELECT count(*) FROM notes;") == "3\n")

        try appWrites(scenario, "INSERT INTO notes(title) VALUES ('app row'); UPDATE notes SET title = 'one (app)' WHERE id = 1;")
        try edit(scenario, "UPDATE notes SET title = 'three (desktop)' WHERE id = 3; INSERT INTO notes(title) VALUES ('desktop row');")
        let expected = Set(["one (app)", "two", "three (desktop)", "app row", "desktop row"])
        try await waitUntil("merged on the device\n\(agent.log)", timeout: .seconds(45)) {
            Set((try? scenario.deviceTitles()) ?? []) == expected && (try? scenario.sidecar().state) == .clean
        }
        try await waitUntil("the app's rows in the local copy\n\(agent.log)") { Set((try? scenario.localTitles()) ?? []) == expected }
        #expect(try await reader.execute("SELECT count(*) FROM notes WHERE title IN ('app row', 'one (app)');") == "2\n",
                "a connection open the whole time sees the app's rows")
        reader.close()
        #expect(try Shell.sqlite(scenario.deviceDatabase, "PRAGMA quick_check") == "ok\n")
        #expect(try Shell.sqlite(scenario.localCopy, "PRAGMA quick_check") == "ok\n")
        #expect(try conflictCopies(scenario).isEmpty)
        let record = try #require(try scenario.sidecar().pushHistory.last)
        #expect(record.merged?.rowsFromDevice == 2)
        #expect(record.merged?.rowsFromDesktop == 2)

        // The rows written into the copy are not an edit: nothing more is pushed. The next edit is.
        let uploads = try scenario.uploadCount()
        try await Task.sleep(for: .seconds(1))
        #expect(try scenario.uploadCount() == uploads, "no echo")
        try edit(scenario, "INSERT INTO notes(title) VALUES ('next edit')")
        try await waitUntil("next edit pushed\n\(agent.log)", timeout: .seconds(45)) {
            Set((try? scenario.deviceTitles()) ?? []) == expected.union(["next edit"])
        }
    }

    @Test("both sides change the same row: conflict, `conflicts` shows the three values, --merge-prefer local ends it")
    func sameRowIsAConflictUntilMergePrefer() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        try appWrites(scenario, "UPDATE notes SET title = 'two (app)' WHERE id = 2; INSERT INTO notes(title) VALUES ('app row');")
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        try edit(scenario, "UPDATE notes SET title = 'two (desktop)' WHERE id = 2; UPDATE notes SET title = 'one (desktop)' WHERE id = 1;")
        try await waitUntil("conflict\n\(agent.log)", timeout: .seconds(45)) { (try? scenario.sidecar().state) == .conflict }
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "nothing on the device changed")
        #expect(try scenario.sidecar().conflictFingerprint == DeviceFingerprint(mainHash: scenario.hash(scenario.deviceDatabase)),
                "the version saved with the conflict is the device's")

        let shown = try scenario.harness.flippio(["conflicts", scenario.localCopy.path])
        #expect(shown.status == 0, "\(shown.err)")
        #expect(shown.out.contains("notes [id=2]"), "\(shown.out)")
        #expect(shown.out.contains("'two'") && shown.out.contains("'two (desktop)'") && shown.out.contains("'two (app)'"), "\(shown.out)")
        let json = try scenario.harness.flippio(["conflicts", scenario.localCopy.path, "--json"])
        #expect(json.out.contains("\"table\" : \"notes\""), "\(json.out)")

        let resolved = try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--merge-prefer", "local"])
        #expect(resolved.status == 0, "\(resolved.err)")
        let expected = Set(["one (desktop)", "two (desktop)", "three", "app row"])
        #expect(Set(try scenario.deviceTitles()) == expected)
        try await waitUntil("the local copy has the app's other row") { Set((try? scenario.localTitles()) ?? []) == expected }
        try await waitUntil("clean") { (try? scenario.sidecar().state) == .clean }
        // The user's next edit flows again.
        try edit(scenario, "INSERT INTO notes(title) VALUES ('after the merge')")
        try await waitUntil("next edit pushed\n\(agent.log)", timeout: .seconds(45)) {
            Set((try? scenario.deviceTitles()) ?? []) == expected.union(["after the merge"])
        }
    }

    @Test("the app migrated its schema while the desktop edited: a conflict that says so")
    func aSchemaChangeOnTheDeviceIsAConflict() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        try appWrites(scenario, "ALTER TABLE notes ADD COLUMN done INTEGER NOT NULL DEFAULT 0;")
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        try edit(scenario, "INSERT INTO notes(title) VALUES ('desktop row')")
        try await waitUntil("conflict\n\(agent.log)", timeout: .seconds(45)) { (try? scenario.sidecar().state) == .conflict }
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes)
        let shown = try scenario.harness.flippio(["conflicts", scenario.localCopy.path])
        #expect(shown.out.lowercased().contains("schema"), "\(shown.out)")
        let status = try scenario.harness.flippio(["status"])
        #expect(status.out.lowercased().contains("schema"), "explained in status too:\n\(status.out)")
        // --keep-device takes the migrated database; the desktop row is kept beside it.
        #expect(try scenario.harness.flippio(["resolve", scenario.localCopy.path, "--keep-device"]).status == 0)
        #expect(try Shell.sqlite(scenario.localCopy, "SELECT count(*) FROM pragma_table_info('notes') WHERE name = 'done'") == "1\n")
    }
}
