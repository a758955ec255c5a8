import FlippioEngine
import Foundation
import Testing
import TestSupport

/// `flippio service install` for real: a real `systemd --user` (``RealUserManager``) starts the built
/// `flippio agent`, which reaches the emulated device through the real adb with the adb environment
/// of the shell that installed it, and pushes an edit made by the real sqlite3.
///
/// The manager's own environment holds no `ANDROID_*`, `ADB_*` or `FLIPPIO_*` variable, so the agent
/// finds the simulator only through the unit's `Environment=` lines.
@Suite("flippio service under a real systemd user manager", .serialized)
struct ServiceEndToEndTests {
    static let unit = ServiceInstaller.unitName
    /// A FLIPPIO_* value with characters systemd's unit parser treats specially.
    static let trickyNote = #"a "b" 100% $HOME \ c"#

    // Where no user manager can be started (not root, no unshare or systemd), the test is skipped and
    // says why; ServiceInstallerTests and UnitFileTests still check the unit text and systemctl calls.
    @Test("install runs the real agent under systemd --user: STATUS=, a pushed edit, a clean stop, uninstall",
          .enabled(if: RealUserManager.canRun,
                   "no real systemd user manager here: \(RealUserManager.unavailableReason ?? "")"),
          .timeLimit(.minutes(2)))
    func installRunsTheRealAgent() async throws {
        let scenario = try Scenario.make()
        let harness = scenario.harness
        let manager = try RealUserManager()
        // Whatever happens below: the manager stops its units, and anything left of them is killed.
        defer { manager.terminate() }
        try manager.start()
        try await manager.waitUntilUp()

        // A drop-in (not the product's unit) sends the agent's output to a file, as this namespace has no
        // journald, and records how the main process ended (systemd gives ExecStopPost= these variables;
        // `systemctl show` forgets ExecMainCode once the unit is inactive).
        let agentLog = manager.dir.child("agent.log")
        let exitRecord = manager.dir.child("exit.txt")
        let dropIn = manager.config.appendingPathComponent("systemd/user/\(Self.unit).d")
        try FileManager.default.createDirectory(at: dropIn, withIntermediateDirectories: true)
        try """
            [Service]
            StandardOutput=append:\(agentLog.path)
            StandardError=append:\(agentLog.path)
            ExecStopPost=/bin/sh -c 'echo "$$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS" > \(exitRecord.path)'

            """.write(to: dropIn.appendingPathComponent("test.conf"), atomically: true, encoding: .utf8)
        func diagnostics() -> String {
            "--- agent log ---\n\((try? String(contentsOf: agentLog, encoding: .utf8)) ?? "")\n--- manager log ---\n\(manager.log)"
        }

        // The installing user's shell: the simulator's adb variables and FLIPPIO_* settings (from the
        // harness), and the manager's runtime and config folders.
        let shell = ["XDG_RUNTIME_DIR": manager.runtime.path, "XDG_CONFIG_HOME": manager.config.path,
                     "FLIPPIO_NOTE": Self.trickyNote]
        // The built binary lies in .build/: install refuses it, says how to fix that, and writes nothing.
        let refused = try harness.flippio(["service", "install"], environment: shell, timeout: 60)
        #expect(refused.status == 1, "\(refused.out)\(refused.err)")
        #expect(refused.err.contains("make install") && refused.err.contains("--allow-build-binary"), "\(refused.err)")
        #expect(!FileManager.default.fileExists(atPath: manager.config.appendingPathComponent("systemd/user/\(Self.unit)").path))

        // --adb names the adb the agent uses (it reaches the unit as FLIPPIO_ADB).
        let install = try harness.flippio(["service", "install", "--adb", Devsim.adbPath.path, "--allow-build-binary"],
                                          environment: shell, timeout: 60)
        #expect(install.status == 0, "\(install.out)\(install.err)\n\(diagnostics())")
        let unitFile = manager.config.appendingPathComponent("systemd/user/\(Self.unit)")
        #expect(install.out.contains("installed \(unitFile.path)"))
        let unitText = try String(contentsOf: unitFile, encoding: .utf8)
        let executable = Products.executable("flippio").resolvingSymlinksInPath().path
        #expect(unitText.contains("ExecStart=\(ServiceInstaller.quote(executable)) agent --workspace \(ServiceInstaller.quote(harness.workspace.path))"))
        #expect(unitText.contains(#"Environment="ADB_SERVER_SOCKET=tcp:127.0.0.1:\#(harness.sim.port)""#))

        // enable --now returned after READY=1; the agent then reports what it watches.
        let expectedStatus = "watching 1 database on 1 device"
        var state: [String: String] = [:]
        try await waitUntil("StatusText=\(expectedStatus)\n\(diagnostics())") {
            state = try manager.show(Self.unit, ["ActiveState", "SubState", "StatusText", "MainPID", "InvocationID", "UnitFileState"])
            return state["StatusText"] == expectedStatus
        }
        #expect(state["ActiveState"] == "active")
        #expect(state["SubState"] == "running")
        #expect(state["UnitFileState"] == "enabled")
        let mainPID = try #require(state["MainPID"].flatMap(Int32.init))
        let invocation = try #require(state["InvocationID"].flatMap { $0.isEmpty ? nil : $0 })

        // The main process is the built flippio binary, in the unit's own cgroup, with the installing
        // shell's variables.
        #expect(URL(fileURLWithPath: "/proc/\(mainPID)/exe").resolvingSymlinksInPath().path == executable)
        let cgroup = (try? String(contentsOfFile: "/proc/\(mainPID)/cgroup", encoding: .utf8)) ?? ""
        #expect(cgroup.split(separator: "\n").contains { $0.hasPrefix("0::") && $0.hasSuffix("/app.slice/\(Self.unit)") }, "\(cgroup)")
        let agentEnvironment = Self.environment(of: mainPID)
        #expect(agentEnvironment["ADB_SERVER_SOCKET"] == "tcp:127.0.0.1:\(harness.sim.port)")
        #expect(agentEnvironment["ANDROID_ADB_SERVER_PORT"] == "\(harness.sim.port)")
        #expect(agentEnvironment["FLIPPIO_LOG_LEVEL"] == "debug")
        #expect(agentEnvironment["FLIPPIO_ADB"] == Devsim.adbPath.path)
        #expect(agentEnvironment["FLIPPIO_NOTE"] == Self.trickyNote, "quoting survives systemd's parser")
        #expect(agentEnvironment["FLIPPIO_WORKSPACE"] == nil, "ExecStart= names the workspace")

        // `flippio service status` shows the same.
        let status = try harness.flippio(["service", "status"], environment: shell, timeout: 60)
        #expect(status.status == 0, "\(status.err)")
        #expect(status.out.contains("\(Self.unit): active (running): \(expectedStatus)"), "\(status.out)")

        // An edit by the real sqlite3 reaches the device: the agent under systemd pushed it through adb.
        let uploadsBefore = try scenario.uploadCount()
        try Shell.sqlite(scenario.localCopy, "INSERT INTO notes(title) VALUES ('from systemd')")
        try await waitUntil("the device has the edit\n\(diagnostics())", timeout: .seconds(45)) {
            (try? scenario.deviceTitles()) == ["one", "two", "three", "from systemd"]
        }
        try await waitUntil("sidecar clean\n\(diagnostics())") { (try? scenario.sidecar().state) == .clean }
        #expect(try scenario.uploadCount() > uploadsBefore)
        #expect(scenario.deviceSideFiles().isEmpty)
        #expect(try Shell.sqlite(scenario.deviceDatabase, "PRAGMA quick_check") == "ok\n")

        // systemctl stop: SIGTERM, a clean exit, and nothing of the unit left running.
        #expect(RealUserManager.processes(withEnvironment: "INVOCATION_ID=\(invocation)").contains(mainPID))
        let stop = try manager.systemctl(["stop", Self.unit])
        #expect(stop.status == 0, "\(stop.err)\n\(diagnostics())")
        let stopped = try manager.show(Self.unit, ["ActiveState", "SubState", "Result"])
        #expect(stopped["ActiveState"] == "inactive")
        #expect(stopped["SubState"] == "dead")
        #expect(stopped["Result"] == "success", "\(stopped)\n\(diagnostics())")
        // Not killed by the signal, not by SIGKILL after TimeoutStopSec: it handled SIGTERM and exited 0.
        #expect(try String(contentsOf: exitRecord, encoding: .utf8) == "success exited 0\n", "\(diagnostics())")
        #expect(!RealUserManager.isAlive(mainPID))
        let leftovers = RealUserManager.processes(withEnvironment: "INVOCATION_ID=\(invocation)")
            + RealUserManager.processes(withEnvironment: "ADB_SERVER_SOCKET=tcp:127.0.0.1:\(harness.sim.port)")
        #expect(leftovers.isEmpty, "left running: \(leftovers.map { "\($0) \(RealUserManager.command(of: $0) ?? "?")" })")
        let log = (try? String(contentsOf: agentLog, encoding: .utf8)) ?? ""
        #expect(log.contains("stopped"), "the agent logged its graceful stop\n\(diagnostics())")

        // flippio service uninstall removes the unit and its enablement.
        let uninstall = try harness.flippio(["service", "uninstall"], environment: shell, timeout: 60)
        #expect(uninstall.status == 0, "\(uninstall.err)")
        #expect(!FileManager.default.fileExists(atPath: unitFile.path))
        #expect(!FileManager.default.fileExists(
            atPath: manager.config.appendingPathComponent("systemd/user/default.target.wants/\(Self.unit)").path))
        try FileManager.default.removeItem(at: dropIn)
        _ = try manager.systemctl(["daemon-reload"])
        #expect(try manager.show(Self.unit, ["LoadState"])["LoadState"] == "not-found")
        // A second uninstall finds nothing: it says so and succeeds.
        let again = try harness.flippio(["service", "uninstall"], environment: shell, timeout: 60)
        #expect(again.status == 0, "\(again.err)")
        #expect(again.out.contains("flippio-agent.service is not installed"), "\(again.out)")

        try await manager.stop()
    }

    /// A process's environment (`/proc/PID/environ`; root reads any process's).
    static func environment(of pid: Int32) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return [:] }
        var result: [String: String] = [:]
        for entry in data.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { continue }
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return result
    }
}
