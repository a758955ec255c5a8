import Foundation
import Testing
import TestSupport

@Suite struct DevsimSmokeTests {
    @Test func devicesListShowsASimulatedDevice() throws {
        let sim = try Devsim()
        try sim.addDevice("emulator-5554")
        let result = try sim.adb(["devices"])
        #expect(result.status == 0)
        #expect(result.out == "List of devices attached\nemulator-5554\tdevice\n\n")
    }
}
