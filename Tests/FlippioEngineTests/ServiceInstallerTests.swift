import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// A stand-in `systemctl` (a shell script) that records each call and answers as the real one does.
///
/// Each call appends one line to `calls.log`: the arguments separated by `|`. `FAKE_SYSTEMCTL_MODE`
/// chooses the behaviour: `ok`, `nobus` (no user manager), `failstart` (the agent does not start).
struct FakeSystemctl {
    let dir: TemporaryDirectory
    let script: URL
    let log: URL
    let envLog: URL

    init() throws {
        dir = try TemporaryDirectory("flippio-fake-systemctl")
        script = dir.child("bin/systemctl")
        log = dir.child("calls.log")
        envLog = dir.child("env.log")
        try FileManager.default.createDirectory(at: dir.child("bin"), withIntermediateDirectories: true)
        let text = #"""
        #!/bin/sh
        log="$(dirname "$0")/../calls.log"
        ( IFS='|'; printf '%s\n' "$*" ) >> "$log"
        printf 'XDG_CONFIG_HOME=%s NOTIFY_SOCKET=%s WATCHDOG_USEC=%s\n' "$XDG_CONFIG_HOME" "${NOTIFY_SOCKET-unset}" "${WATCHDOG_USEC-unset}" >> "$(dirname "$0")/../env.log"
        case "$FAKE_SYSTEMCTL_MODE" in
          nobus) echo "Failed to connect to bus: No medium found" >&2; exit 1 ;;
        esac
        case "$2" in
          show)
            printf 'MainPID=4242\nStatusText=watching 2 databases\nNRestarts=1\nLoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n' ;;
          enable|restart)
            if [ "$FAKE_SYSTEMCTL_MODE" = failstart ]; then
              echo "Job for flippio-agent.service failed because the control process exited with error code." >&2
              echo "See \"systemctl --user status flippio-agent.service\" and \"journalctl --user -xeu flippio-agent.service\" for details." >&2
              exit 1
            fi ;;
        esac
        exit 0
        """#
        try text.write(to: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
    }

    /// Each call's arguments.
    func calls() -> [[String]] {
        guard let text = try? String(contentsOf: log, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
    }

    func environmentLines() -> [String] {
        ((try? String(contentsOf: envLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }
}

@Suite("ServiceInstaller")
struct ServiceInstallerTests {
    struct Setup {
        let fake: FakeSystemctl
        let home: URL
        let config: URL
        let workspace: URL
        let installer: ServiceInstaller
    }

    func setup(mode: String = "ok", workspace name: String = "my workspace", systemctl: String? = nil) throws -> Setup {
        let fake = try FakeSystemctl()
        let home = fake.dir.child("home")
        let config = fake.dir.child("config")
        let workspace = fake.dir.child(name)
        let environment = [
            "HOME": home.path, "XDG_CONFIG_HOME": config.path, "PATH": fake.dir.child("bin").path + ":/usr/bin:/bin",
            "FAKE_SYSTEMCTL_MODE": mode, "NOTIFY_SOCKET": "/run/user/0/systemd/notify", "WATCHDOG_USEC": "30000000",
        ]
        let installer = ServiceInstaller(environment: environment, runner: ProcessRunner(),
                                         systemctlPath: systemctl ?? "systemctl",
                                         executablePath: "/opt/flippio tools/bin/flippio", workspace: workspace)
        return Setup(fake: fake, home: home, config: config, workspace: workspace, installer: installer)
    }

    // MARK: - Where and what

    @Test("the unit goes to $XDG_CONFIG_HOME/systemd/user, else ~/.config/systemd/user")
    func unitLocation() {
        func url(_ env: [String: String]) -> String {
            ServiceInstaller(environment: env, runner: UnusedRunner(), executablePath: "/bin/true",
                             workspace: URL(fileURLWithPath: "/w")).unitURL.path
        }
        #expect(url(["HOME": "/home/u", "XDG_CONFIG_HOME": "/cfg"]) == "/cfg/systemd/user/flippio-agent.service")
        #expect(url(["HOME": "/home/u"]) == "/home/u/.config/systemd/user/flippio-agent.service")
        // The XDG spec says a relative value is invalid and must be ignored.
        #expect(url(["HOME": "/home/u", "XDG_CONFIG_HOME": "cfg"]) == "/home/u/.config/systemd/user/flippio-agent.service")
    }

    @Test("ExecStart quotes spaces and quotes, and escapes % and $ by systemd's rules")
    func execStartQuoting() {
        #expect(ServiceInstaller.quote("/usr/bin/flippio") == "/usr/bin/flippio")
        #expect(ServiceInstaller.quote("/home/u/my ws") == #""/home/u/my ws""#)
        #expect(ServiceInstaller.quote("/w/100%") == #""/w/100%%""#)
        #expect(ServiceInstaller.quote("/w/$HOME") == #""/w/$$HOME""#)
        #expect(ServiceInstaller.quote(#"/w/a"b\c"#) == #""/w/a\"b\\c""#)
        #expect(ServiceInstaller.quote("/w/a\nb") == #""/w/a\nb""#)
        #expect(ServiceInstaller.quote(";") == #"";""#)
        #expect(ServiceInstaller.quote("") == #""""#)
        #expect(ServiceInstaller.quote("--workspace") == "--workspace")
        let installer = ServiceInstaller(environment: [:], runner: UnusedRunner(), executablePath: "/opt/my tools/flippio",
                                         workspace: URL(fileURLWithPath: "/home/u/db 100%"))
        #expect(installer.unitFileContents().contains(#"ExecStart="/opt/my tools/flippio" agent --workspace "/home/u/db 100%%""#))
        #expect(!installer.unitFileContents().contains("@FLIPPIO@"))
        #expect(!installer.unitFileContents().contains("@WORKSPACE@"))
    }

    // MARK: - install

    @Test("install writes the unit, reloads, enables and starts it, and hints at lingering")
    func install() async throws {
        let s = try setup()
        let report = try await s.installer.install()
        let unitURL = s.config.appendingPathComponent("systemd/user/flippio-agent.service")
        #expect(report.unitURL.path == unitURL.path)
        #expect(try String(contentsOf: unitURL, encoding: .utf8) == s.installer.unitFileContents())
        let mode = try FileManager.default.attributesOfItem(atPath: unitURL.path)[.posixPermissions] as? Int
        #expect(mode == 0o644)
        #expect(s.fake.calls() == [["--user", "daemon-reload"], ["--user", "enable", "--now", "flippio-agent.service"]])
        #expect(report.hints.contains("to keep it running after you log out: loginctl enable-linger $USER"))
        #expect(report.description.contains("loginctl enable-linger"))
        #expect(!report.replacedExisting)
        // systemctl sees the user's config folder, and not the agent's own notification socket.
        #expect(s.fake.environmentLines().allSatisfy {
            $0 == "XDG_CONFIG_HOME=\(s.config.path) NOTIFY_SOCKET=unset WATCHDOG_USEC=unset"
        })
        // No temporary file is left beside the unit.
        #expect(try FileManager.default.contentsOfDirectory(atPath: unitURL.deletingLastPathComponent().path)
            == ["flippio-agent.service"])
    }

    @Test("installing the same unit again only enables it; a changed unit is restarted")
    func reinstall() async throws {
        let s = try setup()
        _ = try await s.installer.install()
        _ = try await s.installer.install()
        let moved = ServiceInstaller(environment: s.installer.environment, runner: ProcessRunner(),
                                     executablePath: s.installer.executablePath,
                                     workspace: s.fake.dir.child("other workspace"))
        let report = try await moved.install()
        #expect(report.replacedExisting)
        #expect(s.fake.calls() == [
            ["--user", "daemon-reload"], ["--user", "enable", "--now", "flippio-agent.service"],
            ["--user", "daemon-reload"], ["--user", "enable", "--now", "flippio-agent.service"],
            ["--user", "daemon-reload"], ["--user", "enable", "flippio-agent.service"],
            ["--user", "restart", "flippio-agent.service"],
        ])
        #expect(try String(contentsOf: moved.unitURL, encoding: .utf8).contains("other workspace"))
    }

    @Test("no user manager: service-manager-unavailable, with a remedy that offers linger and the foreground")
    func noUserManager() async throws {
        let s = try setup(mode: "nobus")
        do {
            _ = try await s.installer.install()
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .serviceManagerUnavailable)
            #expect(error.message.contains("Failed to connect to bus"))
            #expect(error.remedy?.contains("loginctl enable-linger") == true)
            #expect(error.remedy?.contains("flippio agent") == true)
        }
        // No half-installed unit is left behind.
        #expect(!FileManager.default.fileExists(atPath: s.installer.unitURL.path))
        await #expect(throws: FlippioError.self) { try await s.installer.status() }
    }

    @Test("no user manager on a reinstall: the previous unit is restored")
    func noUserManagerKeepsPreviousUnit() async throws {
        let s = try setup()
        _ = try await s.installer.install()
        let before = try String(contentsOf: s.installer.unitURL, encoding: .utf8)
        var environment = s.installer.environment
        environment["FAKE_SYSTEMCTL_MODE"] = "nobus"
        let moved = ServiceInstaller(environment: environment, runner: ProcessRunner(),
                                     executablePath: s.installer.executablePath, workspace: s.fake.dir.child("elsewhere"))
        await #expect(throws: FlippioError.self) { try await moved.install() }
        #expect(try String(contentsOf: s.installer.unitURL, encoding: .utf8) == before)
    }

    @Test("a start failure is tool-failed and quotes systemctl's message")
    func startFails() async throws {
        let s = try setup(mode: "failstart")
        do {
            _ = try await s.installer.install()
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .toolFailed)
            #expect(error.message.contains("Job for flippio-agent.service failed"))
            #expect(error.remedy?.contains("journalctl --user -u flippio-agent.service") == true)
        }
    }

    @Test("no systemctl on PATH: service-manager-unavailable")
    func noSystemctl() async throws {
        let s = try setup(systemctl: "systemctl-that-does-not-exist")
        await #expect(throws: FlippioError.self) { try await s.installer.install() }
        do { _ = try await s.installer.status() } catch { #expect(FlippioError.Code.serviceManagerUnavailable ~= error) }
    }

    @Test("a relative executable path is refused before anything is written")
    func relativeExecutable() async throws {
        let s = try setup()
        let bad = ServiceInstaller(environment: s.installer.environment, runner: ProcessRunner(),
                                   executablePath: "flippio", workspace: s.workspace)
        await #expect(throws: FlippioError.self) { try await bad.install() }
        #expect(!FileManager.default.fileExists(atPath: bad.unitURL.path))
        #expect(s.fake.calls().isEmpty)
    }

    // MARK: - uninstall and status

    @Test("uninstall disables and stops, removes the unit and reloads; a second uninstall does nothing")
    func uninstall() async throws {
        let s = try setup()
        _ = try await s.installer.install()
        #expect(try await s.installer.uninstall())
        #expect(!FileManager.default.fileExists(atPath: s.installer.unitURL.path))
        #expect(try await !s.installer.uninstall())
        #expect(Array(s.fake.calls().dropFirst(2)) == [
            ["--user", "disable", "--now", "flippio-agent.service"], ["--user", "daemon-reload"],
        ])
    }

    @Test("status parses systemctl show")
    func status() async throws {
        let s = try setup()
        let status = try await s.installer.status()
        #expect(status == ServiceStatus(loadState: "loaded", activeState: "active", subState: "running", mainPID: 4242,
                                        restarts: 1, statusText: "watching 2 databases", unitFileState: "enabled"))
        #expect(status.isInstalled && status.isRunning)
        #expect(s.fake.calls() == [["--user", "show", "flippio-agent.service", "-p",
                                    "LoadState,ActiveState,SubState,MainPID,NRestarts,StatusText,UnitFileState"]])
    }

    @Test("status of a unit that is not installed")
    func statusNotFound() {
        let status = ServiceStatus(parsing: "MainPID=0\nStatusText=\nNRestarts=0\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n")
        #expect(!status.isInstalled && !status.isRunning)
        #expect(status.mainPID == nil && status.statusText == nil && status.unitFileState == nil)
    }

    @Test("the bus-unavailable messages of systemd 252 are recognised")
    func busMessages() {
        #expect(ServiceInstaller.isManagerUnavailable("Failed to connect to bus: No medium found"))
        #expect(ServiceInstaller.isManagerUnavailable("Failed to connect to bus: No such file or directory"))
        #expect(ServiceInstaller.isManagerUnavailable("Failed to connect to bus: $DBUS_SESSION_BUS_ADDRESS and $XDG_RUNTIME_DIR not defined (consider using --machine=<user>@.host --user to connect to bus of other user)"))
        #expect(!ServiceInstaller.isManagerUnavailable("Failed to enable unit: Unit file flippio-agent.service does not exist."))
    }
}

// MARK: - A real systemd user manager

/// A real `systemd --user`, started for one test in a private mount namespace.
///
/// This machine's PID 1 is not systemd, and `systemd --user` refuses to start unless
/// `/run/systemd/system` exists ("Trying to run as user instance, but the system has not been booted
/// with systemd."). As root, `unshare -m` gives the manager its own mount namespace in which a tmpfs
/// over `/run/systemd` holds that marker; nothing changes outside it. The manager gets its own
/// `XDG_RUNTIME_DIR` and `XDG_CONFIG_HOME` in a temp folder, and `systemctl --user` (run from the
/// test's own namespace) reaches it through `$XDG_RUNTIME_DIR/systemd/private`.
final class RealUserManager: @unchecked Sendable {
    static let systemdBinary = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Root, unshare, systemd, systemctl and python3 (the stand-in agent) are all here.
    static var canRun: Bool {
        getuid() == 0 && systemdBinary != nil && Products.systemTool("systemctl") != nil
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/setsid")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
            && ProcessInfo.processInfo.environment["FLIPPIO_SKIP_REAL_SYSTEMD"] == nil
    }

    let dir: TemporaryDirectory
    let runtime: URL
    let config: URL
    /// The environment a user of this manager has.
    let environment: [String: String]
    /// The manager's process id, once started.
    private(set) var pid: Int32 = 0

    init() throws {
        dir = try TemporaryDirectory("flippio-sd")
        runtime = dir.child("runtime")
        config = dir.child("config")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.createDirectory(at: config, withIntermediateDirectories: true)
        var env = ProcessInfo.processInfo.environment
        env["XDG_RUNTIME_DIR"] = runtime.path
        env["XDG_CONFIG_HOME"] = config.path
        env["DBUS_SESSION_BUS_ADDRESS"] = nil
        environment = env
    }

    /// Starts the manager detached (a background job of a shell that exits at once).
    ///
    /// - Important: the manager must not be a direct child made by Foundation's `Process`: on Linux
    ///   `Process` learns of a child's exit when a socket the child inherits reaches EOF, then calls a
    ///   blocking `waitpid` on its one manager thread. systemd closes every inherited descriptor at
    ///   start-up, so that `waitpid` would block until systemd exits, and no other `Process` in the
    ///   test run would ever be seen to finish. `setsid` puts it in its own process group, out of reach
    ///   of a runner that tears down the shell's group.
    func start() async throws {
        let log = dir.child("manager.log").path
        let inner = "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec \(Self.systemdBinary!) --user"
        let outer = "/usr/bin/setsid /usr/bin/unshare -m /bin/sh -c '\(inner)' </dev/null >'\(log)' 2>&1 & echo $!"
        let result = try await ProcessRunner().run(ProcessCommand(
            executable: "/bin/sh", arguments: ["-c", outer], environment: environment, timeout: .seconds(30)))
        guard result.succeeded, let pid = Int32(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ShellError("could not start systemd --user: \(result.stderrText)")
        }
        self.pid = pid
    }

    var isRunning: Bool {
        guard pid > 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        // The state follows the parenthesised command name; a zombie has exited.
        guard let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    func systemctl(_ arguments: [String]) async throws -> ProcessResult {
        try await ProcessRunner().run(ProcessCommand(
            executable: Products.systemTool("systemctl")!.path, arguments: ["--user"] + arguments,
            environment: environment, timeout: .seconds(60)))
    }

    func waitUntilUp() async throws {
        try await waitUntil("systemd --user answers", timeout: .seconds(60)) {
            guard isRunning else {
                let log = (try? String(contentsOf: dir.child("manager.log"), encoding: .utf8)) ?? ""
                throw ShellError("systemd --user is not running: \(log)")
            }
            guard FileManager.default.fileExists(atPath: runtime.appendingPathComponent("systemd/private").path) else {
                return false
            }
            return try await systemctl(["show", "-p", "Version"]).succeeded
        }
    }

    /// SIGTERM: the manager stops its units (their whole cgroups) and exits.
    func stop() async throws {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        do {
            try await waitUntil("systemd --user exits", timeout: .seconds(60)) { !isRunning }
        } catch {
            kill(pid, SIGKILL)
            throw error
        }
    }
}

@Suite("ServiceInstaller with a real systemd user manager", .serialized)
struct ServiceInstallerRealManagerTests {
    /// A stand-in agent: records its argv and watchdog variables, sends READY=1 with a STATUS, then waits.
    static let fakeAgent = #"""
    import json, os, socket, sys, time
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    record = {"argv": sys.argv[1:], "pid": os.getpid(),
              "WATCHDOG_USEC": os.environ.get("WATCHDOG_USEC"), "WATCHDOG_PID": os.environ.get("WATCHDOG_PID")}
    with open(os.path.join(here, "started.json.tmp"), "w") as f:
        json.dump(record, f)
    os.rename(os.path.join(here, "started.json.tmp"), os.path.join(here, "started.json"))
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1\nSTATUS=fake agent watching", address)
    time.sleep(120)
    """#

    @Test("install starts a Type=notify agent under the real user manager; status and uninstall see it",
          .enabled(if: RealUserManager.canRun, "needs root, unshare, systemd, systemctl and python3"))
    func realManager() async throws {
        let manager = try RealUserManager()
        do {
            try await manager.start()
            try await manager.waitUntilUp()
            try await exercise(manager)
        } catch {
            try? await manager.stop()
            throw error
        }
        try await manager.stop()
    }

    func exercise(_ manager: RealUserManager) async throws {
        // Paths with a space, % and $: the quoting must survive systemd's parser and expansion.
        let bin = manager.dir.child("bin dir")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try Self.fakeAgent.write(to: bin.appendingPathComponent("agent.py"), atomically: true, encoding: .utf8)
        let executable = bin.appendingPathComponent("fake flippio")
        try "#!/bin/sh\nexec /usr/bin/python3 \"$(dirname \"$0\")/agent.py\" \"$@\"\n"
            .write(to: executable, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: executable.path)
        let workspace = manager.dir.child("work space 100% $HOME")
        try FileManager.default.createDirectory(at: workspace, withIntermediateDirectories: true)

        let installer = ServiceInstaller(environment: manager.environment, runner: ProcessRunner(),
                                         executablePath: executable.path, workspace: workspace)
        let report = try await installer.install()
        #expect(report.unitURL.path == manager.config.appendingPathComponent("systemd/user/flippio-agent.service").path)

        // enable --now returned: systemd got READY=1 from the main process.
        let status = try await installer.status()
        #expect(status.loadState == "loaded")
        #expect(status.activeState == "active")
        #expect(status.subState == "running")
        #expect(status.unitFileState == "enabled")
        #expect(status.statusText == "fake agent watching")
        let pid = try #require(status.mainPID)

        let started = try JSONSerialization.jsonObject(with: Data(contentsOf: bin.appendingPathComponent("started.json")))
            as? [String: Any]
        #expect(started?["argv"] as? [String] == ["agent", "--workspace", workspace.path])
        #expect(started?["pid"] as? Int == Int(pid))
        // WatchdogSec=30 reaches the agent as WATCHDOG_USEC/WATCHDOG_PID, and the schedule honours them.
        let watchdogEnv = ["WATCHDOG_USEC": started?["WATCHDOG_USEC"] as? String ?? "",
                           "WATCHDOG_PID": started?["WATCHDOG_PID"] as? String ?? ""]
        let schedule = try #require(WatchdogSchedule(environment: watchdogEnv, processID: pid))
        #expect(schedule.interval == .seconds(15))
        #expect(WatchdogSchedule(environment: watchdogEnv, processID: pid + 1) == nil)

        // The unit is enabled for default.target.
        let wants = manager.config.appendingPathComponent("systemd/user/default.target.wants/flippio-agent.service")
        #expect(FileManager.default.fileExists(atPath: wants.path))

        #expect(try await installer.uninstall())
        let after = try await installer.status()
        #expect(after.loadState == "not-found")
        #expect(after.activeState == "inactive")
        #expect(!FileManager.default.fileExists(atPath: wants.path))
        // disable --now waited for the stop: the agent's process is gone.
        try await waitUntil("the agent process exits") { kill(pid, 0) != 0 && errno == ESRCH }
    }
}
