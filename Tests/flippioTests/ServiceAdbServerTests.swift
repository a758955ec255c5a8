import FlippioEngine
import Foundation
import Testing
import TestSupport

/// The agent under a real `systemd --user` must not take the user's adb server down with it.
///
/// When no adb server runs, the agent's first `adb` call (its `adb track-devices`) starts one:
/// `adb fork-server server`, a daemon in its own session but in the unit's cgroup. That server is
/// shared by Android Studio and every terminal; if stopping or restarting the agent killed it, every
/// adb connection would drop. This test makes the agent start a *real* adb server (its environment
/// points adb at an unused port, so the client forks one, instead of reaching the emulated device's
/// server), restarts and stops the service, and checks that the server keeps its PID.
@Suite("flippio service leaves the user's adb server alone", .serialized)
struct ServiceAdbServerTests {
    static let unit = ServiceInstaller.unitName

    @Test("an adb server started by the agent survives systemctl restart and stop of the unit",
          .enabled(if: RealUserManager.canRun,
                   "no real systemd user manager here: \(RealUserManager.unavailableReason ?? "")"),
          .timeLimit(.minutes(2)))
    func adbServerSurvivesRestart() async throws {
        let harness = try FlippioHarness()
        let manager = try RealUserManager()
        let port = try Self.unusedPort()
        var serverPID: Int32?
        // The real adb server is ours to end, by its PID, whatever happens below.
        defer {
            if let serverPID { Self.killAndReap(serverPID) }
            for pid in Self.adbServers(port: port) { Self.killAndReap(pid) }
            manager.terminate()
        }
        try manager.start()
        try await manager.waitUntilUp()

        // The installing shell: adb on an unused port (no ADB_SERVER_SOCKET, which would name the
        // emulated device's server), a private adb home for the key the new server writes.
        try FileManager.default.createDirectory(at: harness.workspace, withIntermediateDirectories: true)
        let adbHome = harness.home.url.appendingPathComponent("android-home")
        try FileManager.default.createDirectory(at: adbHome, withIntermediateDirectories: true)
        let shell = ["XDG_RUNTIME_DIR": manager.runtime.path, "XDG_CONFIG_HOME": manager.config.path,
                     "ADB_SERVER_SOCKET": "", "ANDROID_ADB_SERVER_PORT": "\(port)", "ANDROID_USER_HOME": adbHome.path,
                     "ANDROID_SDK_HOME": adbHome.path]
        #expect(Self.adbServers(port: port).isEmpty, "nothing listens on port \(port) yet")
        let install = try harness.flippio(["service", "install", "--adb", Devsim.adbPath.path, "--allow-build-binary"],
                                          environment: shell, timeout: 60)
        #expect(install.status == 0, "\(install.out)\(install.err)\n\(manager.log)")

        // The agent's `adb track-devices` found no server on the port and forked one.
        var first: [String: String] = [:]
        try await waitUntil("the agent is running and an adb server listens on \(port)\n\(manager.log)", timeout: .seconds(30)) {
            first = try manager.show(Self.unit, ["ActiveState", "MainPID"])
            return first["ActiveState"] == "active" && Self.adbServers(port: port).count == 1
        }
        let server = try #require(Self.adbServers(port: port).first)
        serverPID = server
        // It really is in the unit's cgroup: what KillMode=control-group or mixed would kill.
        #expect(Self.cgroup(of: server)?.hasSuffix("/app.slice/\(Self.unit)") == true, "\(Self.cgroup(of: server) ?? "gone")")
        let firstAgent = try #require(first["MainPID"].flatMap(Int32.init))

        // Restart: a new agent, the same server.
        let restart = try manager.systemctl(["restart", Self.unit])
        #expect(restart.status == 0, "\(restart.err)")
        try await waitUntil("a new agent is running") {
            let state = try manager.show(Self.unit, ["ActiveState", "MainPID"])
            return state["ActiveState"] == "active" && state["MainPID"].flatMap(Int32.init).map { $0 != firstAgent && $0 > 0 } == true
        }
        #expect(!RealUserManager.isAlive(firstAgent))
        #expect(RealUserManager.isAlive(server), "the adb server was killed by the restart")
        #expect(Self.adbServers(port: port) == [server], "the new agent uses the same server")

        // Stop: the agent goes, cleanly; the server stays.
        let stop = try manager.systemctl(["stop", Self.unit])
        #expect(stop.status == 0, "\(stop.err)")
        let stopped = try manager.show(Self.unit, ["ActiveState", "Result"])
        #expect(stopped["ActiveState"] == "inactive")
        #expect(stopped["Result"] == "success", "\(stopped)")
        #expect(RealUserManager.isAlive(server), "the adb server was killed by the stop")

        let uninstall = try harness.flippio(["service", "uninstall"], environment: shell, timeout: 60)
        #expect(uninstall.status == 0, "\(uninstall.err)")
        try await manager.stop()
    }

    // MARK: - Helpers

    /// Live `adb … fork-server server` processes whose environment names `port`.
    static func adbServers(port: Int) -> [Int32] {
        RealUserManager.processes(withEnvironment: "ANDROID_ADB_SERVER_PORT=\(port)").filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.contains("fork-server")
        }
    }

    /// The unified-hierarchy cgroup of a process (`0::/…` in `/proc/PID/cgroup`).
    static func cgroup(of pid: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) }
    }

    /// SIGKILL to one process, then up to 5 s for it to be gone.
    static func killAndReap(_ pid: Int32) {
        guard pid > 0, RealUserManager.isAlive(pid) else { return }
        kill(pid, SIGKILL)
        let deadline = Date().addingTimeInterval(5)
        while RealUserManager.isAlive(pid) && Date() < deadline { usleep(20_000) }
    }

    /// A loopback TCP port nothing listens on right now (the kernel picks it for a socket bound to port 0).
    static func unusedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ShellError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw ShellError("bind() failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw ShellError("getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
