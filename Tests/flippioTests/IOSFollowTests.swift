import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Following on iOS (issue 13): no device-side events through the libimobiledevice tools, so the
/// agent polls the fingerprint while the device is connected.
@Suite("iOS: the local copy follows the app by polling", .serialized)
struct IOSFollowTests {
    @Test func theAppsRowArrivesThroughTheFingerprintPoll_andNothingIsPushed() async throws {
        let scenario = try IOSScenario.make()
        let agent = try scenario.startAgent(environment: ["FLIPPIO_FOLLOW": "1", "FLIPPIO_IOS_FOLLOW_MS": "500"])
        try await agent.waitForLog("ready")
        let uploads = try scenario.uploadCount()
        try Shell.sqlite(scenario.deviceDatabase, "INSERT INTO notes(title) VALUES ('from the iPhone app')")
        do {
            try await waitUntil("the app's row arrives", timeout: .seconds(20), poll: .milliseconds(300)) {
                (try? scenario.localTitles())?.contains("from the iPhone app") == true
            }
        } catch {
            Issue.record("\(error)\n\(agent.log)")
            return
        }
        #expect(try scenario.uploadCount() == uploads, "rows brought in are not pushed back")
    }

    @Test func aPollIntervalOfZeroTurnsFollowingOffForIOS() async throws {
        let scenario = try IOSScenario.make()
        let status = try scenario.flippio(["status", "--json"], environment: ["FLIPPIO_IOS_FOLLOW_MS": "0"])
        #expect(status.out.contains("\"follow\" : false"), "\(status.out)")
    }
}
