import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// Runs real processes for these tests (the engine's ProcessRunner lives on another branch).
/// Output goes to files, so a chatty child can never fill a pipe and hang.
struct TestProcessRunner: ProcessRunning {
    func run(_ command: ProcessCommand) async throws -> ProcessResult {
        let dir = try TemporaryDirectory("flippio-run")
        let outURL = dir.child("out"), errURL = dir.child("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command.executable)
        process.arguments = command.arguments
        process.environment = ProcessInfo.processInfo.environment.merging(command.environment) { _, new in new }
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        let start = ContinuousClock.now
        do {
            try process.run()
        } catch {
            throw FlippioError(.toolNotFound, "could not start \(command.executable): \(error)")
        }
        let deadline = start.advanced(by: command.timeout)
        var timedOut = false
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                timedOut = true
                process.terminate()
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        process.waitUntilExit()
        let termination: ProcessResult.Termination = process.terminationReason == .uncaughtSignal
            ? .signalled(process.terminationStatus) : .exited(process.terminationStatus)
        return ProcessResult(termination: termination, stdout: try Data(contentsOf: outURL),
                             stderr: try Data(contentsOf: errURL), duration: ContinuousClock.now - start,
                             timedOut: timedOut)
    }
}

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
        let installer = ServiceInstaller(environment: environment, runner: TestProcessRunner(),
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
        let moved = ServiceInstaller(environment: s.installer.environment, runner: TestProcessRunner(),
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
        await #expect(throws: FlippioError.self) { try await s.installer.status() }
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
        let bad = ServiceInstaller(environment: s.installer.environment, runner: TestProcessRunner(),
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
