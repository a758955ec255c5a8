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

    func setup(mode: String = "ok", workspace name: String = "my workspace", systemctl: String? = nil,
               environment extra: [String: String] = [:]) throws -> Setup {
        let fake = try FakeSystemctl()
        let home = fake.dir.child("home")
        let config = fake.dir.child("config")
        let workspace = fake.dir.child(name)
        let environment = [
            "HOME": home.path, "XDG_CONFIG_HOME": config.path, "PATH": fake.dir.child("bin").path + ":/usr/bin:/bin",
            "FAKE_SYSTEMCTL_MODE": mode, "NOTIFY_SOCKET": "/run/user/0/systemd/notify", "WATCHDOG_USEC": "30000000",
        ].merging(extra) { $1 }
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

    @Test("the adb variables and FLIPPIO_* settings of the installing shell reach the unit as Environment= lines")
    func environmentPassedThrough() async throws {
        let s = try setup(environment: [
            "ANDROID_ADB_SERVER_PORT": "5137", "ADB_SERVER_SOCKET": "tcp:127.0.0.1:5137", "ANDROID_SERIAL": "emulator-5554",
            "ANDROID_HOME": "/opt/android sdk", "FLIPPIO_SETTLE_MS": "500", "FLIPPIO_ADB": "/opt/android sdk/platform-tools/adb",
            "FLIPPIO_WORKSPACE": "/elsewhere", "FLIPPIO_STOP_APP": "", "EDITOR": "vim", "BAD-NAME": "x",
        ])
        _ = try await s.installer.install()
        let text = try String(contentsOf: s.installer.unitURL, encoding: .utf8)
        let lines = text.split(separator: "\n").map(String.init)
        let environmentLines = lines.filter { $0.hasPrefix("Environment=") }
        #expect(environmentLines == [
            #"Environment="ADB_SERVER_SOCKET=tcp:127.0.0.1:5137""#,
            #"Environment="ANDROID_ADB_SERVER_PORT=5137""#,
            #"Environment="ANDROID_HOME=/opt/android sdk""#,
            #"Environment="ANDROID_SERIAL=emulator-5554""#,
            #"Environment="FLIPPIO_ADB=/opt/android sdk/platform-tools/adb""#,
            #"Environment="FLIPPIO_SETTLE_MS=500""#,
        ])
        // They sit in [Service], just before ExecStart= (which names the workspace, so FLIPPIO_WORKSPACE is left out).
        let exec = try #require(lines.firstIndex { $0.hasPrefix("ExecStart=") })
        #expect(Array(lines[(exec - environmentLines.count)..<exec]) == environmentLines)
        #expect(lines[exec] == #"ExecStart="/opt/flippio tools/bin/flippio" agent --workspace "\#(s.workspace.path)""#)
        // No systemd notification variables, and nothing unrelated to adb or flippio.
        #expect(!text.contains("NOTIFY_SOCKET") && !text.contains("WATCHDOG_USEC") && !text.contains("EDITOR"))
    }

    @Test("Environment= values are quoted by systemd's rules: \\, \" and control characters escaped, % doubled, $ kept")
    func environmentQuoting() {
        #expect(ServiceInstaller.environmentLine(name: "A", value: "1") == #"Environment="A=1""#)
        #expect(ServiceInstaller.environmentLine(name: "A", value: #"x "y" 100% $HOME \ z"#)
            == #"Environment="A=x \"y\" 100%% $HOME \\ z""#)
        #expect(ServiceInstaller.environmentLine(name: "A", value: "a\nb\u{1}") == #"Environment="A=a\nb\x01""#)
        #expect(ServiceInstaller.isValidVariableName("ANDROID_SERIAL") && ServiceInstaller.isValidVariableName("_x1"))
        #expect(!ServiceInstaller.isValidVariableName("1A") && !ServiceInstaller.isValidVariableName("A-B")
            && !ServiceInstaller.isValidVariableName(""))
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

    // MARK: - Build folders

    @Test("buildFolder finds .build, .build-release and .build_x components, and nothing elsewhere")
    func buildFolders() {
        #expect(ServiceInstaller.buildFolder(of: "/src/flippio/.build/debug/flippio") == "/src/flippio/.build")
        #expect(ServiceInstaller.buildFolder(of: "/src/flippio/.build-release/release/flippio") == "/src/flippio/.build-release")
        #expect(ServiceInstaller.buildFolder(of: "/w/.build_ci/x86_64-unknown-linux-gnu/debug/flippio") == "/w/.build_ci")
        #expect(ServiceInstaller.buildFolder(of: "/home/u/.local/bin/flippio") == nil)
        #expect(ServiceInstaller.buildFolder(of: "/usr/local/bin/flippio") == nil)
        #expect(ServiceInstaller.buildFolder(of: "/src/build/flippio") == nil)
        #expect(ServiceInstaller.buildFolder(of: "/src/my.build/flippio") == nil)
    }

    @Test("install refuses a binary inside a build folder, names the fix and touches nothing; allowBuildBinary installs it")
    func refusesBuildBinary() async throws {
        let s = try setup()
        let executable = s.fake.dir.child("src/.build/debug/flippio").path
        var installer = ServiceInstaller(environment: s.installer.environment, runner: ProcessRunner(),
                                         executablePath: executable, workspace: s.workspace)
        let error = await #expect(throws: FlippioError.self) { try await installer.install() }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains(s.fake.dir.child("src/.build").path) == true, "\(String(describing: error))")
        #expect(error?.remedy?.contains("make install") == true)
        #expect(error?.remedy?.contains("--allow-build-binary") == true)
        #expect(!FileManager.default.fileExists(atPath: installer.unitURL.path))
        #expect(s.fake.calls().isEmpty, "systemctl must not run")

        installer.allowBuildBinary = true
        let report = try await installer.install()
        #expect(report.execStart.hasPrefix(executable + " agent"))
        #expect(FileManager.default.fileExists(atPath: installer.unitURL.path))
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

// MARK: - A real systemd user manager (TestSupport's RealUserManager)

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

    /// Where a real user manager cannot start (not root, no systemd), the test is skipped with the reason.
    static let canRun = RealUserManager.canRun && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

    @Test("install starts a Type=notify agent under the real user manager; status and uninstall see it",
          .enabled(if: canRun, "needs root, unshare, systemd, systemctl and python3: \(RealUserManager.unavailableReason ?? "python3 is missing")"))
    func realManager() async throws {
        let manager = try RealUserManager()
        defer { manager.terminate() }
        try manager.start()
        try await manager.waitUntilUp()
        try await exercise(manager)
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
