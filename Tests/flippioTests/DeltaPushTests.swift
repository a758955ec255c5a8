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

    @Test(.tags(.silentOverwrite))
    func deviceChangedSinceTheBase_takesTheMergePath_notTheDelta() throws {
        let scenario = try Self.scenario(rows: 250)
        try Shell.sqlite(scenario.deviceDatabase, "UPDATE notes SET title = 'by the app' WHERE id = 3")
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'by the user' WHERE id = 200")
        let pushed = try Self.push(scenario)
        #expect(pushed.record.merged != nil)
        #expect(pushed.record.viaDelta == false)
        #expect(try !scenario.harness.sim.requests().contains { ($0.command ?? "").contains("dd if=") })
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

    @Test func thresholdZero_alwaysPushesTheWholeFile() throws {
        let scenario = try Self.scenario(rows: 100)
        try Shell.sqlite(scenario.localCopy, "UPDATE notes SET title = 'x' WHERE id = 50")
        let pushed = try Self.push(scenario, environment: ["FLIPPIO_DELTA_THRESHOLD": "0"])
        #expect(pushed.record.viaDelta == false)
        try Self.expectDeviceHoldsThePush(scenario)
    }
}
