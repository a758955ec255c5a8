import DeviceSimulator
import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Issue #7, the cable and the device: hung calls, dropped transfers, unplugging, unauthorized
/// and offline devices, apps that cannot be reached, a dead adb server. The real agent process,
/// the real `adb`, faults injected into `flippio-devsim`.
@Suite("Fault: device and cable", .serialized)
struct FaultDeviceTests {
    static let edited = ["one", "two", "three", "edited"]

    func edit(_ scenario: Scenario) throws {
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('edited')")
    }

    @Test("adb call hangs: killed at its timeout with its process group, retried, pushed when the fault clears",
          .tags(.editLost, .corruption))
    func hungAdbCallIsKilledRetriedAndSucceeds() async throws {
        let scenario = try Scenario.make()
        let port = scenario.harness.sim.port
        let oldHash = try scenario.hash(scenario.deviceDatabase)
        let agent = try await scenario.startAgent(environment: ["FLIPPIO_COMMAND_TIMEOUT_MS": "1500"])
        try scenario.device.setFaults(["hangSeconds": 600])
        try scenario.harness.sim.clearRequests()
        try edit(scenario)

        // The push's first device call (the fingerprint) hangs; the agent must give up on it at its
        // timeout and try again.
        func fingerprintCalls() throws -> Int {
            try scenario.deviceRequests().filter { $0.service == "shell" && ($0.command ?? "").contains("sha256sum") }.count
        }
        try await waitUntil("the hung call is tried a second time\n\(agent.log)", timeout: .seconds(30)) {
            try fingerprintCalls() >= 2
        }
        // The first call was killed (with its group), not left hanging beside the retry.
        try await waitUntil("at most the retry's adb is alive: \(liveAdbClients(port: port))") {
            liveAdbClients(port: port).count <= 1
        }
        #expect(try scenario.hash(scenario.deviceDatabase) == oldHash, "nothing changed on the device yet")

        try scenario.device.clearFaults()
        try await scenario.expectPushed(titles: Self.edited, agent: agent)
        try await waitUntil("no adb client left behind: \(liveAdbClients(port: port))") { liveAdbClients(port: port).isEmpty }
    }

    @Test("connection dropped in the middle of a push: the device keeps its old database, the push is retried",
          .tags(.editLost, .corruption))
    func droppedConnectionMidPushKeepsTheOldDatabase() async throws {
        let scenario = try Scenario.make()
        let oldHash = try scenario.hash(scenario.deviceDatabase)
        let agent = try await scenario.startAgent()
        try scenario.device.setFaults(["dropNextTransfer": true])
        try edit(scenario)

        // Every state the device's file is seen in must be the old or the final database.
        var seen: Set<String> = [oldHash]
        try await waitUntil("the device's database changed\n\(agent.log)", timeout: .seconds(45)) {
            guard let hash = try? scenario.hash(scenario.deviceDatabase) else { return false }
            seen.insert(hash)
            return hash != oldHash && (try? scenario.sidecar().state) == .clean
        }
        try await scenario.expectPushed(titles: Self.edited, agent: agent)
        #expect(try scenario.device.faults()["dropNextTransfer"] as? Bool == false, "the fault was used")
        #expect(try scenario.uploadCount() >= 2, "the dropped upload was sent again")
        #expect(seen == [oldHash, try scenario.hash(scenario.deviceDatabase)], "never a partial database on the device")
    }

    @Test("device unplugged while dirty: waiting for device, pushed within 1 s of its return, no busy poll",
          .tags(.editLost))
    func unpluggedDeviceIsPushedWhenPluggedBack() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        try scenario.device.unplug()
        try edit(scenario)
        try await waitUntil("waiting for the device\n\(agent.log)", timeout: .seconds(30)) {
            (try? scenario.sidecar().state) == .waitingForDevice
        }
        let sidecar = try scenario.sidecar()
        #expect(sidecar.nextRetryAt == nil, "no timer: the device's return wakes it")
        #expect(try scenario.statusText().contains("waiting-for-device"))

        // Not a busy poll: while the device is away the agent asks nothing about it. (Absence needs
        // an observation window; a slow machine only makes the check easier to pass.)
        let before = try scenario.deviceRequests().count
        try await Task.sleep(for: .seconds(2))
        #expect(try scenario.deviceRequests().count == before, "no requests for an unplugged device")

        let pluggedIn = Date()
        try scenario.device.plugIn()
        try await scenario.expectPushed(titles: Self.edited, agent: agent)
        // The push started on the device's return (adb track-devices), not on a timer.
        let first = try #require(try scenario.deviceRequests().compactMap(\.date).first { $0 >= pluggedIn.addingTimeInterval(-0.05) })
        let latency = first.timeIntervalSince(pluggedIn)
        #expect(latency < 1.0, "the first request for the device came \(latency) s after it was plugged in")
    }

    @Test("device turns unauthorized or offline: waits, says what to do, resumes, no retry storm",
          .tags(.editLost), arguments: ["unauthorized", "offline"])
    func unauthorizedOrOfflineDeviceWaits(state: String) async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        let start = try scenario.deviceRequests().count
        try scenario.device.setState(state)
        try edit(scenario)
        try await waitUntil("waiting for the device\n\(agent.log)", timeout: .seconds(30)) {
            (try? scenario.sidecar().state) == .waitingForDevice
        }
        let sidecar = try scenario.sidecar()
        #expect(sidecar.nextRetryAt == nil)
        #expect(sidecar.lastError?.code == (state == "offline" ? .deviceOffline : .deviceUnauthorized))
        let status = try scenario.statusText()
        #expect(status.contains("waiting-for-device"))
        #expect(status.contains(state == "offline" ? "adb reconnect" : "Allow USB debugging"), "says what to do:\n\(status)")

        // A push that meets the state tries a bounded number of times (its retry policy), then waits.
        let atWait = try scenario.deviceRequests().count
        #expect(atWait - start <= 20, "\(atWait - start) requests before waiting")
        try await Task.sleep(for: .seconds(2))
        #expect(try scenario.deviceRequests().count == atWait, "no retries while the device stays \(state)")
        #expect(try scenario.deviceTitles() == ["one", "two", "three"])

        try scenario.device.setState("device")
        try await scenario.expectPushed(titles: Self.edited, agent: agent)
    }

    @Test("adb says offline while the device list never changes: waits, looks again with backoff, resumes",
          .tags(.editLost))
    func offlineErrorsWithoutAStateChangeAreRetriedWithBackoff() async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        // Every call fails as "device offline" for a while, but `adb devices` keeps listing it as
        // ready: no track-devices event will ever announce its return.
        try scenario.device.setFaults(["failNext": 12, "failMessage": "device offline"])
        try scenario.harness.sim.clearRequests()
        try edit(scenario)
        try await scenario.expectPushed(titles: Self.edited, agent: agent, timeout: .seconds(60))
        #expect(try scenario.device.faults()["failNext"] as? Int == 0, "every injected failure was met")
        let calls = try scenario.deviceRequests().count
        #expect(calls <= 60, "a bounded number of calls: \(calls)")
    }

    @Test("app not debuggable or uninstalled: a permanent error in status, tried once, not retried until the user acts",
          .tags(.editLost), arguments: ["not-debuggable", "uninstalled"])
    func unreachableAppIsAPermanentError(fault: String) async throws {
        let scenario = try Scenario.make()
        let agent = try await scenario.startAgent()
        if fault == "not-debuggable" {
            try scenario.device.setPackage(Scenario.package, debuggable: false)
        } else {
            var config = try scenario.device.config()
            config.packages[Scenario.package] = nil
            try scenario.device.writeConfig(config)
        }
        try scenario.harness.sim.clearRequests()
        try edit(scenario)
        try await waitUntil("failed\n\(agent.log)", timeout: .seconds(30)) { (try? scenario.sidecar().state) == .failed }
        let sidecar = try scenario.sidecar()
        #expect(sidecar.lastError?.code == (fault == "not-debuggable" ? .appNotDebuggable : .unknownPackage))
        #expect(sidecar.nextRetryAt == nil, "a permanent error is not retried by itself")
        let status = try scenario.statusText()
        #expect(status.contains("failed"))
        #expect(status.contains("fix:"), "says what to do:\n\(status)")

        func runAsCalls() throws -> Int { try scenario.deviceRequests().filter { ($0.command ?? "").contains("run-as") }.count }
        #expect(try runAsCalls() == 1, "tried once")
        try await Task.sleep(for: .seconds(2))
        #expect(try runAsCalls() == 1, "not retried")

        // The user acts: a debuggable build is installed, and they push.
        try scenario.device.setPackage(Scenario.package, debuggable: true)
        let push = try scenario.harness.flippio(["push", scenario.localCopy.path])
        #expect(push.status == 0, "\(push.out)\(push.err)")
        try await scenario.expectPushed(titles: Self.edited, agent: agent)
    }

    @Test("adb server killed: reported, and pushes resume when it is back", .tags(.editLost))
    func killedAdbServerIsReportedAndPushesResume() async throws {
        let scenario = try Scenario.make()
        let sim = scenario.harness.sim
        let agent = try await scenario.startAgent()

        // SIGKILL the simulator, which is the adb server the agent's adb talks to.
        let server = try #require(Self.devsimPID(devicesDirectory: sim.devicesDirectory), "the devsim process")
        #expect(kill(server, SIGKILL) == 0)
        try await waitUntil("the server is gone") { !sim.isRunning }
        try edit(scenario)
        try await waitUntil("the dead server is reported\n\(agent.log)", timeout: .seconds(45)) {
            (try? scenario.sidecar().lastError?.code) == .adbServerUnavailable
        }
        #expect(try scenario.statusText().contains("adb start-server"), "says what to do")

        // The server comes back on the same port, with the same device.
        let restarted = try Self.startDevsim(port: sim.port, devicesDirectory: sim.devicesDirectory, log: sim.workDirectory)
        defer {
            restarted.terminate()
            restarted.waitUntilExit()
        }
        try await scenario.expectPushed(titles: Self.edited, agent: agent, timeout: .seconds(60))
    }

    /// The pid of the `flippio-devsim` serving `devicesDirectory`.
    static func devsimPID(devicesDirectory: URL) -> Int32? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let words = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if words.first?.hasSuffix("flippio-devsim") == true, words.contains(devicesDirectory.path) { return pid }
        }
        return nil
    }

    /// Starts `flippio-devsim --port PORT --devices DIR` and waits until it listens.
    static func startDevsim(port: Int, devicesDirectory: URL, log: URL) throws -> Process {
        let out = log.appendingPathComponent("devsim-restarted.out")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        let process = Process()
        process.executableURL = Products.executable("flippio-devsim")
        process.arguments = ["--port", "\(port)", "--devices", devicesDirectory.path]
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: out)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, process.isRunning {
            if let text = try? String(contentsOf: out, encoding: .utf8), text.contains("listening on") { return process }
            usleep(20_000)
        }
        process.terminate()
        throw ShellError("flippio-devsim did not come back on port \(port): \((try? String(contentsOf: out, encoding: .utf8)) ?? "")")
    }
}
