import Foundation
import Synchronization
import Testing
import TestSupport

/// `faults.json`: injected failures as the real client sees them.
@Suite struct DevsimFaultTests {
    @Test func failNext_failsThatManyRequestsWithTheMessage_thenRecovers() throws {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554")
        try device.setFaults(["failNext": 2, "failMessage": "device offline"])

        let first = try sim.adb(["-s", device.serial, "shell", "echo", "hi"])
        #expect(first.status == 1)
        #expect(first.err == "error: device offline\n")
        let second = try sim.adb(["-s", device.serial, "exec-out", "echo", "hi"])
        #expect(second.status != 0)
        #expect(second.err == "error: device offline\n")
        let third = try sim.adb(["-s", device.serial, "shell", "echo", "hi"])
        #expect(third.status == 0)
        #expect(third.out == "hi\n")
        #expect(try device.faults()["failNext"] as? Int == 0)
    }

    @Test func hang_isCutShortByTheCallersTimeout_andTheServerKeepsServing() throws {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554")
        try device.setFaults(["hangSeconds": 600])

        let hung = try sim.adb(["-s", device.serial, "shell", "echo", "hi"], timeout: 2)
        #expect(hung.status != 0)
        #expect(hung.out == "")

        try device.clearFaults()
        let after = try sim.adb(["-s", device.serial, "shell", "echo", "hi"])
        #expect(after.out == "hi\n")
    }

    @Test func dropNextTransfer_cutsOneExecTransfer_thenClears() throws {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554")
        let blob = Data((0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try device.write(blob, to: "/data/local/tmp/blob")
        try device.setFaults(["dropNextTransfer": true])

        let cut = try sim.adb(["-s", device.serial, "exec-out", "cat", "/data/local/tmp/blob"])
        #expect(cut.stdout.count < blob.count)
        #expect(blob.starts(with: cut.stdout))
        #expect(try device.faults()["dropNextTransfer"] as? Bool == false)

        let whole = try sim.adb(["-s", device.serial, "exec-out", "cat", "/data/local/tmp/blob"])
        #expect(whole.stdout == blob)
    }

    @Test func dropNextTransfer_failsAPull() throws {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554")
        try device.write(Data(repeating: 7, count: 300_000), to: "/sdcard/blob")
        try device.setFaults(["dropNextTransfer": true])
        let work = try TemporaryDirectory()

        let pull = try sim.adb(["-s", device.serial, "pull", "/sdcard/blob", work.child("blob").path])
        #expect(pull.status != 0)
        let again = try sim.adb(["-s", device.serial, "pull", "/sdcard/blob", work.child("blob").path])
        #expect(again.status == 0)
        #expect(try Data(contentsOf: work.child("blob")) == Data(repeating: 7, count: 300_000))
    }

    @Test func replyLatency_theCommandTakesEffectBeforeItsAnswerArrives() async throws {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554")
        try device.setFaults(["replyLatencyMs": 3000])
        let answered = Mutex(false)
        let call = Task.detached {
            defer { answered.withLock { $0 = true } }
            return try sim.adb(["-s", device.serial, "shell", "touch /data/local/tmp/done; echo ran"])
        }
        try await waitUntil("the command ran on the device", timeout: .seconds(20), poll: .milliseconds(5)) {
            FileManager.default.fileExists(atPath: device.url("/data/local/tmp/done").path)
        }
        #expect(!answered.withLock { $0 }, "the answer comes after the reply latency")
        let result = try await call.value
        #expect(result.status == 0)
        #expect(result.out == "ran\n")
    }

    @Test func latency_delaysButAnswers() throws {
        let sim = try Devsim()
        let device = try sim.addDevice("emulator-5554")
        try device.setFaults(["latencyMs": 50])
        #expect(try sim.adb(["-s", device.serial, "shell", "echo", "slow"]).out == "slow\n")
    }
}
