import FlippioEngine
import Foundation
import Testing
import TestSupport

/// `flippio push --restart-app`: the real binary, the real adb, the emulated device.
@Suite("flippio push --restart-app", .serialized)
struct PushRestartAppTests {
    func shellCommands(_ scenario: Scenario) throws -> [String] {
        try scenario.harness.sim.requests().filter { $0.serial == Scenario.serial && $0.service == "shell" }.compactMap(\.command)
    }

    @Test("push --restart-app starts the launcher activity once, after the app was stopped and the push verified; without it, never")
    func restartsAfterVerifiedPush() throws {
        let scenario = try Scenario.make()
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('see me at once')")
        try scenario.harness.sim.clearRequests()

        let push = try scenario.harness.flippio(["push", "--restart-app"])
        #expect(push.status == 0, "\(push.out)\(push.err)")
        #expect(push.out.contains("; app restarted"), "\(push.out)")
        #expect(try scenario.deviceTitles().last == "see me at once")
        let commands = try shellCommands(scenario)
        // Stop, push, verify, and only then: resolve the launcher activity and start it, as the last two calls.
        let stop = try #require(commands.firstIndex { $0.contains("am force-stop com.example.notes") }, "\(commands)")
        let resolve = try #require(commands.firstIndex { $0.contains("resolve-activity") }, "\(commands)")
        #expect(stop < resolve)
        #expect(resolve == commands.count - 2, "\(commands)")
        #expect(commands.last?.hasPrefix("am start -n com.example.notes/.MainActivity") == true, "\(commands)")
        #expect(commands.filter { $0.hasPrefix("am start") }.count == 1)

        // JSON says so too.
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('again')")
        let json = try scenario.harness.flippio(["push", "--restart-app", "--json"])
        #expect(json.status == 0, "\(json.err)")
        #expect(json.out.contains(#""restarted":true"#) || json.out.contains(#""restarted" : true"#), "\(json.out)")

        // Without the flag (and restartApp not configured) nothing starts the app.
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('quietly')")
        try scenario.harness.sim.clearRequests()
        let quiet = try scenario.harness.flippio(["push"])
        #expect(quiet.status == 0, "\(quiet.err)")
        #expect(try shellCommands(scenario).allSatisfy { !$0.hasPrefix("am start") && !$0.contains("resolve-activity") })
        #expect(!quiet.out.contains("restarted"))
    }
}
