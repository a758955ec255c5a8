import FlippioEngine
import Foundation
import Testing
import TestSupport

/// `flippio devices`, `dbs` and `pull` end to end (real adb, emulated device, real sqlite3).
@Suite("Listing and pulling", .serialized)
struct PullCommandTests {
    @Test func pullingAWALDatabaseWhoseNewestRowsAreOnlyInTheWALKeepsThem() async throws {
        let scenario = try Scenario.make(journalMode: "wal", pull: false)
        // The app keeps its database open, so its last commit sits in -wal, not in the main file.
        let app = try SQLiteSession(scenario.deviceDatabase)
        defer { app.kill() }
        try await app.execute("PRAGMA wal_autocheckpoint=0; INSERT INTO notes(title) VALUES ('only in the wal');")
        let wal = URL(fileURLWithPath: scenario.deviceDatabase.path + "-wal")
        #expect((try? FileManager.default.attributesOfItem(atPath: wal.path)[.size] as? Int) ?? 0 > 0)
        #expect(try !Data(contentsOf: scenario.deviceDatabase).contains(Data("only in the wal".utf8)))

        try scenario.pull()
        #expect(try scenario.localTitles() == ["one", "two", "three", "only in the wal"])
        for suffix in ["-wal", "-shm", "-journal"] {
            #expect(!FileManager.default.fileExists(atPath: scenario.localCopy.path + suffix), "folded into one file")
        }
        let sidecar = try scenario.sidecar()
        #expect(sidecar.schemaVersion == 1)
        #expect(sidecar.origin.deviceID == Scenario.serial)
        #expect(sidecar.origin.appID == Scenario.package)
        #expect(sidecar.origin.remotePath == Scenario.remotePath)
        #expect(sidecar.fingerprintAtPull.mainHash == (try scenario.hash(scenario.deviceDatabase)))
        #expect(sidecar.fingerprintAtPull.walHash == (try scenario.hash(wal)))
        #expect(sidecar.state == .clean)
    }

    @Test func devicesListsUnauthorizedAndOfflineDevicesWithTheFix() throws {
        let harness = try FlippioHarness()
        try harness.sim.addDevice("READY01", packages: [:])
        try harness.sim.addDevice("LOCKED02", state: "unauthorized")
        try harness.sim.addDevice("GONE03", state: "offline")
        let text = try harness.flippio(["devices"])
        #expect(text.status == 0)
        #expect(text.out.contains("READY01"))
        #expect(text.out.contains("LOCKED02") && text.out.contains("unauthorized"))
        #expect(text.out.contains("GONE03") && text.out.contains("offline"))
        #expect(text.err.contains("USB debugging"), "the unauthorized device comes with its fix: \(text.err)")

        let json = try harness.flippio(["devices", "--json"])
        let devices = try JSONDocument.decode([Device].self, "devices", from: json.stdout)
        #expect(Set(devices.map(\.id)) == ["READY01", "LOCKED02", "GONE03"])
        #expect(devices.first { $0.id == "LOCKED02" }?.state == .unauthorized)
        #expect(devices.first { $0.id == "LOCKED02" }?.remedy != nil)
    }

    @Test func errorsNameTheFix() throws {
        let harness = try FlippioHarness()
        try harness.sim.addDevice("emulator-5554", packages: ["com.example.release": false])
        try harness.sim.addDevice("UNAUTH", state: "unauthorized")
        try harness.sim.addDevice("OFFLN", state: "offline")

        let notDebuggable = try harness.flippio(["dbs", "emulator-5554", "com.example.release"])
        #expect(notDebuggable.status == 1)
        #expect(notDebuggable.err.contains("not debuggable"))
        #expect(notDebuggable.err.contains("fix:") && notDebuggable.err.contains("debuggable"))

        let unauthorized = try harness.flippio(["dbs", "UNAUTH", "com.example.release"])
        #expect(unauthorized.status == 1)
        #expect(unauthorized.err.contains("unauthorized") && unauthorized.err.contains("fix:"))

        let offline = try harness.flippio(["pull", "OFFLN", "com.example.release"])
        #expect(offline.status == 1)
        #expect(offline.err.contains("offline") && offline.err.contains("fix:"))

        let unknown = try harness.flippio(["dbs", "nosuch", "com.example.release"])
        #expect(unknown.status == 1)
        #expect(unknown.err.contains("emulator-5554"), "lists the devices that are connected")
    }

    @Test func aDeviceIsNamedByAUniquePrefix() throws {
        let scenario = try Scenario.make(pull: false)
        let result = try scenario.harness.flippio(["dbs", "emu", Scenario.package, "--json"])
        #expect(result.status == 0, "\(result.err)")
        let databases = try JSONDocument.decode([RemoteDatabase].self, "databases", from: result.stdout)
        #expect(databases.map(\.path) == [Scenario.remotePath])
    }

    @Test func usageErrorsExitWithTwo() throws {
        let harness = try FlippioHarness()
        #expect(try harness.flippio(["pull"]).status == 2)
        #expect(try harness.flippio(["resolve", "x.db"]).status == 2, "neither --keep-local nor --keep-device")
        #expect(try harness.flippio(["no-such-command"]).status == 2)
    }

    @Test func pullRefusesToDropLocalChangesThatAreNotPushed() throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('local only')")
        // No agent runs: the edit is known only by its content.
        let again = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package, "notes.db"])
        #expect(again.status == 1)
        #expect(again.err.contains("--overwrite"))
        #expect(try scenario.localTitles().contains("local only"))

        let overwritten = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package, "notes.db", "--overwrite"])
        #expect(overwritten.status == 0, "\(overwritten.err)")
        #expect(try scenario.localTitles() == ["one", "two", "three"])
    }

    @Test func pullingAgainAnUnchangedCopyIsAllowed() throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.deviceDatabase, "INSERT INTO notes(title) VALUES ('newer on the device')")
        try scenario.pull()
        #expect(try scenario.localTitles().last == "newer on the device")
    }

    @Test func aTransientFailureIsRetriedWithBackoffAndThenSucceeds() throws {
        let scenario = try Scenario.make(pull: false)
        // The next two device requests fail as an unplugged cable would.
        try scenario.device.setFaults(["failNext": 2, "failMessage": "device offline"])
        let result = try scenario.harness.flippio(["dbs", Scenario.serial, Scenario.package, "--json"])
        #expect(result.status == 0, "\(result.err)")
        let databases = try JSONDocument.decode([RemoteDatabase].self, "databases", from: result.stdout)
        #expect(databases.map(\.path) == [Scenario.remotePath])
        #expect(((try scenario.device.faults())["failNext"] as? Int ?? 0) == 0, "both failures were consumed by retries")
    }

    @Test func aPermanentFailureIsTriedOnce() throws {
        let harness = try FlippioHarness()
        try harness.sim.addDevice("emulator-5554", packages: ["com.example.release": false])
        try harness.sim.clearRequests()
        let result = try harness.flippio(["dbs", "emulator-5554", "com.example.release"])
        #expect(result.status == 1)
        let runAsFinds = try harness.sim.requests().filter { ($0.command ?? "").hasPrefix("run-as com.example.release find") }
        #expect(runAsFinds.count == 1, "not debuggable is permanent: no retry (\(runAsFinds.count) tries)")
    }

    @Test func aHungAdbCallIsKilledAtItsTimeoutWithItsProcessGroup() throws {
        let harness = try FlippioHarness()
        let serial = "hang-\(UUID().uuidString.prefix(8))"
        let device = try harness.sim.addDevice(serial, packages: [Scenario.package: true])
        try device.setFaults(["hangSeconds": 600])
        let result = try harness.flippio(["dbs", serial, Scenario.package],
                                         environment: ["FLIPPIO_COMMAND_TIMEOUT_MS": "1000", "FLIPPIO_RETRY_ATTEMPTS": "1"],
                                         timeout: 300)
        #expect(result.status == 1, "flippio gave up by itself (a kill by the test would not be status 1)")
        #expect(result.err.contains("did not finish within 1 s"), "\(result.err)")
        // The adb client of the hung call was killed with its process group: none is left.
        let survivors = try Shell.run(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", "adb -s \(serial)"]).out
        #expect(survivors.isEmpty, "adb processes left behind: \(survivors)")
        try device.clearFaults()
    }
}
