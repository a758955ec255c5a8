import Foundation

/// Installs, removes and inspects the `flippio-agent.service` systemd user unit.
///
/// The unit comes from ``unitTemplate`` (the text of `systemd/flippio-agent.service`) with its
/// `ExecStart=` pointing at this flippio executable and workspace. Every change goes through
/// `systemctl --user`, so the user's own service manager runs the agent.
///
/// For example:
///
/// ```swift
/// let installer = ServiceInstaller(environment: ProcessInfo.processInfo.environment, runner: runner,
///                                  executablePath: "/usr/local/bin/flippio", workspace: workspace)
/// let report = try await installer.install()
/// print(report)
/// ```
///
/// When the user has no service manager (no login session: `systemctl --user` says
/// "Failed to connect to bus") every operation throws ``FlippioError`` with code
/// `service-manager-unavailable`, whose remedy explains the ways out.
///
/// ## Topics
/// - ``install()``
/// - ``uninstall()``
/// - ``status()``
/// - ``unitFileContents()``
public struct ServiceInstaller: Sendable {
    /// The unit's name.
    public static let unitName = "flippio-agent.service"

    /// The hint printed after install: a user manager stops when its user's last session ends.
    public static let lingerHint = "to keep it running after you log out: loginctl enable-linger $USER"

    public let environment: [String: String]
    public let runner: any ProcessRunning
    /// `systemctl`, as a name looked up on `PATH` or a path. The default is `systemctl`.
    public let systemctlPath: String
    /// The real (absolute) path of the flippio executable that the unit runs.
    public let executablePath: String
    /// The workspace folder the agent serves.
    public let workspace: URL
    /// Deadline for `daemon-reload`, `show` and similar quick calls. The default is 30 s.
    public var quickTimeout: Duration = .seconds(30)
    /// Deadline for `enable --now` and `disable --now`, which wait for the agent to start or stop.
    /// The default is 120 s (systemd's own start timeout is 90 s).
    public var startStopTimeout: Duration = .seconds(120)
    /// Whether ``install()`` may write a unit whose executable lies inside a build folder
    /// (``buildFolder(of:)``). The default is false: such a binary disappears or changes under the
    /// service with the next `make clean` or build, and it needs the toolchain's Swift runtime.
    public var allowBuildBinary = false

    /// Creates an installer.
    ///
    /// - parameters:
    ///   - environment: the user's environment: `HOME`, `XDG_CONFIG_HOME` (where the unit goes),
    ///     `XDG_RUNTIME_DIR` and `DBUS_SESSION_BUS_ADDRESS` (how `systemctl --user` finds the manager);
    ///     its adb variables and `FLIPPIO_*` settings go into the unit (``passedEnvironment``).
    ///   - runner: runs `systemctl`.
    ///   - systemctlPath: `systemctl`'s name or path.
    ///   - executablePath: the real path of the flippio binary.
    ///   - workspace: the workspace folder.
    public init(
        environment: [String: String],
        runner: any ProcessRunning,
        systemctlPath: String = "systemctl",
        executablePath: String,
        workspace: URL
    ) {
        self.environment = environment
        self.runner = runner
        self.systemctlPath = systemctlPath
        self.executablePath = executablePath
        self.workspace = workspace
    }

    // MARK: - The unit

    /// `$XDG_CONFIG_HOME/systemd/user/flippio-agent.service`; `XDG_CONFIG_HOME` defaults to `~/.config`.
    public var unitURL: URL {
        let configHome: String
        if let value = environment["XDG_CONFIG_HOME"], value.hasPrefix("/") {
            configHome = value
        } else {
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            configHome = (home as NSString).appendingPathComponent(".config")
        }
        return URL(fileURLWithPath: configHome, isDirectory: true)
            .appendingPathComponent("systemd/user", isDirectory: true)
            .appendingPathComponent(Self.unitName, isDirectory: false)
    }

    /// The `ExecStart=` command line: the executable, `agent`, `--workspace` and the folder, quoted
    /// by systemd's rules.
    public var execStart: String {
        Self.commandLine([executablePath, "agent", "--workspace", workspace.path])
    }

    /// Whether the agent must be able to run setuid helpers: `fusermount`, through which the iOS
    /// ifuse backend mounts and unmounts (the backend in use when afcclient is missing). The default
    /// is false. When true, the installed unit leaves out `NoNewPrivileges=` and the settings that
    /// imply it in a user unit (every seccomp and prctl line), since with no_new_privs the kernel
    /// ignores fusermount's setuid bit and every mount fails.
    public var allowsSetuidHelpers = false

    /// The lines of ``unitTemplate`` that imply no_new_privs in a user unit, from the first to the last.
    static let noNewPrivilegesBlock = (first: "NoNewPrivileges=yes\n", last: "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n")

    /// The unit file as it is installed: ``unitTemplate`` with the executable and workspace filled in,
    /// and one `Environment=` line per variable of ``passedEnvironment`` just before `ExecStart=`.
    public func unitFileContents() -> String {
        var text = Self.unitTemplate
        if allowsSetuidHelpers, let first = text.range(of: Self.noNewPrivilegesBlock.first),
           let last = text.range(of: Self.noNewPrivilegesBlock.last, range: first.upperBound..<text.endIndex) {
            text.replaceSubrange(first.lowerBound..<last.upperBound, with: """
                # Installed for the iOS ifuse backend (afcclient is missing): ifuse mounts through the setuid
                # fusermount, whose setuid bit the kernel ignores under no_new_privs, which every seccomp and
                # prctl setting implies in a user unit. So none of them here; install afcclient (libimobiledevice
                # 1.3.1 or later) and run `flippio service install` again to get them back.
                NoNewPrivileges=no

                """)
        }
        text = text
            .replacingOccurrences(of: "@FLIPPIO@", with: Self.quote(executablePath))
            .replacingOccurrences(of: "@WORKSPACE@", with: Self.quote(workspace.path))
        let passed = passedEnvironment
        if !passed.isEmpty {
            let lines = ["# Set when the unit was installed: a user manager does not pass on the shell's environment."]
                + passed.map { Self.environmentLine(name: $0.name, value: $0.value) }
            text = text.replacingOccurrences(of: "\nExecStart=", with: "\n" + lines.joined(separator: "\n") + "\nExecStart=")
        }
        return text
    }

    /// Variables that reach the agent as they were when the unit was installed: the adb ones
    /// (``adbEnvironmentVariables``) and every `FLIPPIO_*` setting except `FLIPPIO_WORKSPACE`
    /// (`ExecStart=` names the workspace). Sorted by name; empty values and names systemd cannot
    /// take are left out.
    ///
    /// A systemd user unit gets the manager's environment, not the installing shell's: without these,
    /// a user who set `ANDROID_ADB_SERVER_PORT` or `ADB_SERVER_SOCKET` would get an agent that talks
    /// to (or starts) a different adb server.
    public var passedEnvironment: [(name: String, value: String)] {
        environment
            .filter { name, value in
                !value.isEmpty && Self.isValidVariableName(name)
                    && (Self.adbEnvironmentVariables.contains(name)
                        || (name.hasPrefix("FLIPPIO_") && name != "FLIPPIO_WORKSPACE"))
            }
            .sorted { $0.key < $1.key }
            .map { (name: $0.key, value: $0.value) }
    }

    /// The adb and Android SDK variables a user may have set for adb (and tool discovery) to work.
    public static let adbEnvironmentVariables: Set<String> = [
        "ANDROID_ADB_SERVER_PORT", "ADB_SERVER_SOCKET", "ANDROID_ADB_SERVER_ADDRESS", "ANDROID_SERIAL",
        "ANDROID_HOME", "ANDROID_SDK_ROOT", "ANDROID_USER_HOME", "ADB_VENDOR_KEYS",
    ]

    /// An `Environment=` line by systemd's rules (systemd.exec(5)): the whole assignment in double
    /// quotes, `\`, `"` and control characters C-escaped, `%` as `%%` (specifiers). `$` stays as it
    /// is: `Environment=` does no variable expansion.
    public static func environmentLine(name: String, value: String) -> String {
        "Environment=" + doubleQuoted("\(name)=\(value)", dollar: "$")
    }

    /// `text` in double quotes with systemd's C-style escapes (`\\`, `\"`, `\n`, `\xNN` for other
    /// control characters) and `%` as `%%`; `$` becomes `dollar` (`$$` where systemd would expand it).
    static func doubleQuoted(_ text: String, dollar: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "%": out += "%%"
            case "$": out += dollar
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`: what systemd accepts as a variable name.
    static func isValidVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || ("A"..."Z").contains(first) || ("a"..."z").contains(first)
        else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    // MARK: - Operations

    /// Writes the unit (atomically), reloads the manager, and enables and starts the agent.
    ///
    /// When there is no user manager the unit file is put back as it was (removed, or its previous
    /// text restored) before the error is thrown.
    ///
    /// Installing again with a changed unit (a new executable path or workspace) restarts the agent
    /// so the change takes effect.
    ///
    /// - throws: ``FlippioError`` with code `invalid-argument` when the executable or workspace path
    ///   is not absolute; `workspace-write-failed` when the unit cannot be written;
    ///   `service-manager-unavailable` when there is no user service manager; `tool-failed` when
    ///   `systemctl` fails (for example the agent did not start); `timed-out`. `invalid-argument` also
    ///   when the executable lies in a build folder and ``allowBuildBinary`` is false; nothing is
    ///   written then.
    public func install() async throws -> InstallReport {
        guard executablePath.hasPrefix("/") else {
            throw FlippioError(.invalidArgument, "The flippio executable path '\(executablePath)' is not absolute.",
                               remedy: "Pass the real path of the flippio binary.")
        }
        guard workspace.isFileURL, workspace.path.hasPrefix("/") else {
            throw FlippioError(.invalidArgument, "The workspace '\(workspace)' is not an absolute local path.",
                               remedy: "Pass an absolute folder with --workspace.")
        }
        if !allowBuildBinary, let folder = Self.buildFolder(of: executablePath) {
            throw FlippioError(.invalidArgument,
                               "\(executablePath) is inside the build folder \(folder): the next `make clean` or build removes or "
                                   + "replaces it under the running service, and it loads the Swift runtime from the toolchain.",
                               remedy: "Run `make install` and then `~/.local/bin/flippio service install` (the installed binary), "
                                   + "or pass --allow-build-binary to install this one anyway.",
                               context: ["executable": executablePath, "buildFolder": folder])
        }
        let contents = unitFileContents()
        let previous = try? String(contentsOf: unitURL, encoding: .utf8)
        let changed = previous != nil && previous != contents
        try writeUnit(contents)

        do {
            try await systemctl(["daemon-reload"], timeout: quickTimeout)
        } catch let error as FlippioError where error.code == .serviceManagerUnavailable {
            // Nothing was reloaded: put things back as they were, so no half-installed unit is left.
            if let previous { try? writeUnit(previous) } else { try? FileManager.default.removeItem(at: unitURL) }
            throw error
        }
        if changed {
            try await systemctl(["enable", Self.unitName], timeout: quickTimeout)
            try await systemctl(["restart", Self.unitName], timeout: startStopTimeout)
        } else {
            try await systemctl(["enable", "--now", Self.unitName], timeout: startStopTimeout)
        }
        return InstallReport(unitURL: unitURL, execStart: execStart, replacedExisting: changed,
                             hints: [Self.lingerHint])
    }

    /// Stops and disables the agent, removes the unit and reloads the manager.
    ///
    /// Does nothing (and returns false) when the unit file is not installed.
    ///
    /// - throws: ``FlippioError`` with code `service-manager-unavailable`, `tool-failed` or `timed-out`;
    ///   `workspace-write-failed` when the unit file cannot be removed.
    @discardableResult
    public func uninstall() async throws -> Bool {
        guard FileManager.default.fileExists(atPath: unitURL.path) else { return false }
        try await systemctl(["disable", "--now", Self.unitName], timeout: startStopTimeout)
        do {
            try FileManager.default.removeItem(at: unitURL)
        } catch {
            throw FlippioError.workspaceWriteFailed(path: unitURL.path, errno: Self.errnoOf(error))
        }
        try await systemctl(["daemon-reload"], timeout: quickTimeout)
        return true
    }

    /// What the user manager says about the unit.
    ///
    /// - throws: ``FlippioError`` with code `service-manager-unavailable`, `tool-failed` or `timed-out`.
    public func status() async throws -> ServiceStatus {
        let result = try await systemctl(
            ["show", Self.unitName, "-p", "LoadState,ActiveState,SubState,MainPID,NRestarts,StatusText,UnitFileState"],
            timeout: quickTimeout)
        return ServiceStatus(parsing: result.stdoutText)
    }

    // MARK: - systemctl

    @discardableResult
    func systemctl(_ arguments: [String], timeout: Duration) async throws -> ProcessResult {
        let command = ProcessCommand(
            executable: try resolvedSystemctl(),
            arguments: ["--user"] + arguments,
            environment: SystemdNotifier.scrubbedEnvironment(environment),
            timeout: timeout)
        let result: ProcessResult
        do {
            result = try await runner.run(command)
        } catch FlippioError.Code.toolNotFound {
            throw Self.managerUnavailable("systemctl could not be started", detail: command.executable)
        }
        if result.timedOut {
            throw FlippioError(.timedOut, "\(command.commandLine) did not finish within \(timeout).",
                               remedy: "See `systemctl --user status \(Self.unitName)` and `journalctl --user -u \(Self.unitName)`.",
                               context: ["command": command.commandLine])
        }
        guard result.succeeded else {
            let stderr = result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines)
            if Self.isManagerUnavailable(stderr) {
                throw Self.managerUnavailable(stderr, detail: command.commandLine)
            }
            throw FlippioError(.toolFailed, "\(command.commandLine) failed (status \(result.status)): \(stderr)",
                               remedy: "See `systemctl --user status \(Self.unitName)` and `journalctl --user -u \(Self.unitName)`.",
                               context: ["command": command.commandLine, "status": String(result.status), "stderr": stderr])
        }
        return result
    }

    /// The build folder `path` lies in, or nil: the part of `path` up to and including its first
    /// component named `.build` or starting with `.build` (`.build-release`, `.build_x`), which is where
    /// SwiftPM puts what it builds (and what `make clean` removes).
    ///
    /// For example, `/src/flippio/.build/debug/flippio` gives `/src/flippio/.build`.
    public static func buildFolder(of path: String) -> String? {
        let components = path.split(separator: "/", omittingEmptySubsequences: false)
        guard let index = components.firstIndex(where: { $0.hasPrefix(".build") }) else { return nil }
        return components[...index].joined(separator: "/")
    }

    /// `systemctlPath` as an absolute path: itself when it contains a slash, else looked up on `PATH`.
    func resolvedSystemctl() throws -> String {
        if systemctlPath.contains("/") { return systemctlPath }
        let path = environment["PATH"].flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where dir.hasPrefix("/") {
            let candidate = "\(dir)/\(systemctlPath)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw FlippioError(.serviceManagerUnavailable, "\(systemctlPath) was not found on PATH: this system does not seem to use systemd.",
                           remedy: "Run `flippio agent` in the foreground (or under your own supervisor) instead of installing a service.",
                           context: ["PATH": path])
    }

    /// What `systemctl --user` prints when it cannot reach a user manager (systemd 252–256 wording).
    static func isManagerUnavailable(_ stderr: String) -> Bool {
        let text = stderr.lowercased()
        return ["failed to connect to bus", "failed to connect to user scope bus", "no medium found",
                "$dbus_session_bus_address", "$xdg_runtime_dir", "not been booted with systemd",
                "failed to get d-bus connection"].contains { text.contains($0) }
    }

    static func managerUnavailable(_ reason: String, detail: String) -> FlippioError {
        FlippioError(.serviceManagerUnavailable,
                     "There is no systemd user manager for this user (\(reason)).",
                     remedy: "Log in through a real session (ssh or a desktop login starts one; `sudo`/`su` do not), "
                         + "or run `loginctl enable-linger $USER` once so it runs without a session; "
                         + "or run `flippio agent` in the foreground instead.",
                     context: ["command": detail])
    }

    // MARK: - Writing the unit

    func writeUnit(_ contents: String) throws {
        let directory = unitURL.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            // .atomic writes a temporary file beside it and renames it over the unit.
            try Data(contents.utf8).write(to: unitURL, options: .atomic)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: unitURL.path)
        } catch {
            throw FlippioError.workspaceWriteFailed(path: unitURL.path, errno: Self.errnoOf(error))
        }
    }

    static func errnoOf(_ error: any Error) -> Int32 {
        let nsError = error as NSError
        if nsError.domain == NSPOSIXErrorDomain { return Int32(nsError.code) }
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return Int32(underlying.code)
        }
        switch nsError.code {
        case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return EACCES
        case NSFileWriteOutOfSpaceError: return ENOSPC
        case NSFileWriteVolumeReadOnlyError: return EROFS
        default: return EIO
        }
    }

    // MARK: - systemd command-line quoting

    /// One argument for `ExecStart=`, by systemd's rules (systemd.service(5), "Command lines"):
    /// plain when it holds only safe characters, else in double quotes with `\`, `"`, control
    /// characters C-escaped. `%` becomes `%%` (specifiers) and `$` becomes `$$` (variable expansion)
    /// in both forms.
    public static func quote(_ argument: String) -> String {
        let safe = !argument.isEmpty && argument.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "/", ".", "_", "-", "+", ":", ",", "=", "@": true
            default: false
            }
        }
        if safe { return argument }
        return doubleQuoted(argument, dollar: "$$")
    }

    /// A whole command line for `ExecStart=`, each argument quoted by ``quote(_:)``.
    public static func commandLine(_ arguments: [String]) -> String {
        arguments.map(quote).joined(separator: " ")
    }
}

/// What ``ServiceInstaller/install()`` did.
public struct InstallReport: Sendable, Equatable, CustomStringConvertible {
    /// Where the unit file was written.
    public let unitURL: URL
    /// The `ExecStart=` line as written.
    public let execStart: String
    /// True when an older, different unit was replaced (the agent was restarted).
    public let replacedExisting: Bool
    /// Advice for the user, e.g. ``ServiceInstaller/lingerHint``.
    public let hints: [String]

    public var description: String {
        var lines = ["installed \(unitURL.path)", "started \(ServiceInstaller.unitName): \(execStart)"]
        if replacedExisting { lines.append("replaced the previous unit and restarted the agent") }
        lines += hints
        return lines.joined(separator: "\n")
    }
}

/// The unit's state as `systemctl --user show` reports it.
public struct ServiceStatus: Sendable, Equatable, Codable {
    /// `loaded`, `not-found`, `bad-setting`, …
    public var loadState: String
    /// `active`, `activating`, `inactive`, `failed`, …
    public var activeState: String
    /// `running`, `start`, `dead`, `auto-restart`, …
    public var subState: String
    /// The agent's process id, or nil when it is not running.
    public var mainPID: Int32?
    /// How often systemd restarted the agent since the unit was started.
    public var restarts: Int
    /// The agent's last `STATUS=`, or nil.
    public var statusText: String?
    /// `enabled`, `disabled`, … or nil when the unit file is not installed.
    public var unitFileState: String?

    public init(loadState: String, activeState: String, subState: String, mainPID: Int32?, restarts: Int,
                statusText: String?, unitFileState: String?) {
        self.loadState = loadState
        self.activeState = activeState
        self.subState = subState
        self.mainPID = mainPID
        self.restarts = restarts
        self.statusText = statusText
        self.unitFileState = unitFileState
    }

    /// Parses `Key=Value` lines from `systemctl show`; unknown keys are ignored, missing ones left empty.
    public init(parsing text: String) {
        var values: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        func nonEmpty(_ key: String) -> String? { values[key].flatMap { $0.isEmpty ? nil : $0 } }
        loadState = values["LoadState"] ?? ""
        activeState = values["ActiveState"] ?? ""
        subState = values["SubState"] ?? ""
        mainPID = nonEmpty("MainPID").flatMap { Int32($0) }.flatMap { $0 > 0 ? $0 : nil }
        restarts = nonEmpty("NRestarts").flatMap { Int($0) } ?? 0
        statusText = nonEmpty("StatusText")
        unitFileState = nonEmpty("UnitFileState")
    }

    /// Whether the manager knows a unit file for it.
    public var isInstalled: Bool { !loadState.isEmpty && loadState != "not-found" }
    /// Whether the agent is up (`active`, including while reloading).
    public var isRunning: Bool { activeState == "active" || activeState == "reloading" }
}
