import Foundation

/// A real `systemd --user`, started for one test in a private mount namespace.
///
/// This machine's PID 1 is not systemd, and `systemd --user` refuses to start unless
/// `/run/systemd/system` exists ("Trying to run as user instance, but the system has not been booted
/// with systemd."). As root, `unshare -m` gives the manager its own mount namespace in which a tmpfs
/// over `/run/systemd` holds that marker; nothing changes outside it. The manager gets its own
/// `XDG_RUNTIME_DIR` and `XDG_CONFIG_HOME` in a temp folder, and `systemctl --user` (run from the
/// test's own namespace) reaches it through `$XDG_RUNTIME_DIR/systemd/private`.
///
/// For example:
///
/// ```swift
/// let manager = try RealUserManager()
/// defer { manager.terminate() }
/// try manager.start()
/// try await manager.waitUntilUp()
/// let state = try manager.show("flippio-agent.service", ["ActiveState"])
/// ```
///
/// The manager's environment is the test process's without `NOTIFY_SOCKET`, D-Bus, and every
/// `ANDROID_*`, `ADB_*` and `FLIPPIO_*` variable: a unit gets only what its own `Environment=` gives it.
public final class RealUserManager: @unchecked Sendable {
    public static let systemdBinary = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Why a manager cannot be started here, or nil when it can: it needs root (for `unshare -m` and
    /// the tmpfs mount), systemd, systemctl, unshare and setsid. `FLIPPIO_SKIP_REAL_SYSTEMD` set skips it.
    public static var unavailableReason: String? {
        if ProcessInfo.processInfo.environment["FLIPPIO_SKIP_REAL_SYSTEMD"] != nil { return "FLIPPIO_SKIP_REAL_SYSTEMD is set" }
        if getuid() != 0 { return "not root: unshare -m and the tmpfs over /run/systemd need root" }
        if systemdBinary == nil { return "systemd is not installed (/usr/lib/systemd/systemd)" }
        if Products.systemTool("systemctl") == nil { return "systemctl is not on PATH" }
        for tool in ["/usr/bin/unshare", "/usr/bin/setsid"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing"
        }
        return nil
    }

    /// Whether a manager can be started here (see ``unavailableReason``).
    public static var canRun: Bool { unavailableReason == nil }

    public let dir: TemporaryDirectory
    /// The manager's `XDG_RUNTIME_DIR`.
    public let runtime: URL
    /// The manager's `XDG_CONFIG_HOME`: units go to `config/systemd/user/`.
    public let config: URL
    /// The environment a user of this manager has (and the manager's own).
    public let environment: [String: String]
    /// The manager's process id, once started.
    public private(set) var pid: Int32 = 0

    public init() throws {
        dir = try TemporaryDirectory("flippio-sd")
        runtime = dir.child("runtime")
        config = dir.child("config")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.createDirectory(at: config, withIntermediateDirectories: true)
        var env = ProcessInfo.processInfo.environment.filter { name, _ in
            !["ANDROID_", "ADB_", "FLIPPIO_", "WATCHDOG_", "LISTEN_"].contains { name.hasPrefix($0) }
        }
        for name in ["NOTIFY_SOCKET", "DBUS_SESSION_BUS_ADDRESS", "INVOCATION_ID", "MANAGERPID", "JOURNAL_STREAM"] {
            env[name] = nil
        }
        env["XDG_RUNTIME_DIR"] = runtime.path
        env["XDG_CONFIG_HOME"] = config.path
        env["SYSTEMD_PAGER"] = "cat"
        environment = env
    }

    /// Starts the manager detached (a background job of a shell that exits at once).
    ///
    /// - Important: the manager must not be a direct child made by Foundation's `Process`: on Linux
    ///   `Process` learns of a child's exit when a socket the child inherits reaches EOF, then calls a
    ///   blocking `waitpid` on its one manager thread. systemd closes every inherited descriptor at
    ///   start-up, so that `waitpid` would block until systemd exits, and no other `Process` in the
    ///   test run would ever be seen to finish. Here the direct child is a shell that has exited by
    ///   then. `setsid` puts the manager in its own session, out of reach of signals to the test's group.
    ///
    /// The manager also gets a cgroup of its own (a new child of the test's cgroup, in the unified
    /// and the `name=systemd` hierarchies): a user manager takes its own cgroup as its root, and two
    /// managers started from one cgroup would share `app.slice/flippio-agent.service`, so stopping
    /// the unit of one would kill the agent of the other.
    public func start() throws {
        let log = dir.child("manager.log").path
        let script = dir.child("start-manager.sh")
        try """
            # Runs in the new mount namespace, then becomes systemd --user.
            cg=flippio-sd-$$
            own() { sed -n "s/^$1//p" /proc/self/cgroup | head -n 1; }
            enter() {  # enter BASE PATH: a new child of PATH in the hierarchy mounted at BASE
              [ -f "$1/cgroup.procs" ] || return 0
              mkdir "$1$2/$cg" && echo $$ > "$1$2/$cg/cgroup.procs" && echo "$1$2/$cg" >> '\(cgroupsFile.path)' \
                || echo "could not make a cgroup under $1$2: the manager shares its parent's" >&2
            }
            if [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then enter /sys/fs/cgroup/unified "$(own 0::)"
            else enter /sys/fs/cgroup "$(own 0::)"; fi
            [ -n "$(own '[0-9]*:name=systemd:')" ] && enter /sys/fs/cgroup/systemd "$(own '[0-9]*:name=systemd:')"
            mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec \(Self.systemdBinary!) --user

            """.write(to: script, atomically: true, encoding: .utf8)
        let outer = "/usr/bin/setsid /usr/bin/unshare -m /bin/sh '\(script.path)' </dev/null >'\(log)' 2>&1 & echo $!"
        let result = try run(URL(fileURLWithPath: "/bin/sh"), ["-c", outer], timeout: 30)
        guard result.status == 0, let pid = Int32(result.out.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ShellError("could not start systemd --user: \(result.err)")
        }
        self.pid = pid
    }

    /// The manager's log (its stdout and stderr).
    public var log: String { (try? String(contentsOf: dir.child("manager.log"), encoding: .utf8)) ?? "" }

    public var isRunning: Bool { pid > 0 && Self.isAlive(pid) }

    /// Runs `systemctl --user ARGS` against this manager.
    @discardableResult
    public func systemctl(_ arguments: [String]) throws -> ShellResult {
        try run(Products.systemTool("systemctl")!, ["--user"] + arguments, timeout: 60)
    }

    /// `systemctl --user show UNIT -p P1,P2,...` as a dictionary.
    public func show(_ unit: String, _ properties: [String]) throws -> [String: String] {
        let result = try systemctl(["show", unit, "-p", properties.joined(separator: ",")])
        guard result.status == 0 else { throw ShellError("systemctl show \(unit) failed: \(result.err)") }
        var values: [String: String] = [:]
        for line in result.out.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return values
    }

    public func waitUntilUp() async throws {
        try await waitUntil("systemd --user answers", timeout: .seconds(60)) {
            guard isRunning else { throw ShellError("systemd --user is not running: \(log)") }
            guard FileManager.default.fileExists(atPath: runtime.appendingPathComponent("systemd/private").path) else {
                return false
            }
            return try systemctl(["show", "-p", "Version"]).status == 0
        }
    }

    /// SIGTERM: the manager stops its units (their whole cgroups) and exits.
    public func stop() async throws {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        do {
            try await waitUntil("systemd --user exits", timeout: .seconds(60)) { !isRunning }
        } catch {
            terminate()
            throw error
        }
    }

    /// Ends the manager and everything it started, whatever state it is in; safe to call more than
    /// once and from `defer`. SIGTERM, up to 15 s for the manager to stop its units and exit, then
    /// SIGKILL; then SIGKILL to any process still carrying `MANAGERPID=<pid>` (a unit's processes).
    public func terminate() {
        guard pid > 0 else { return }
        if isRunning {
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(15)
            while isRunning && Date() < deadline { usleep(20_000) }
            if isRunning { kill(pid, SIGKILL) }
        }
        let leftovers = Self.processes(withEnvironment: "MANAGERPID=\(pid)")
        for leftover in leftovers { kill(leftover, SIGKILL) }
        let deadline = Date().addingTimeInterval(5)
        while leftovers.contains(where: Self.isAlive) && Date() < deadline { usleep(20_000) }
        removeCgroups()
    }

    /// Where ``start()`` recorded the cgroups it made, one path a line.
    private var cgroupsFile: URL { dir.child("cgroups.txt") }

    /// Removes the manager's cgroups, deepest first (only empty cgroups can go; others stay).
    private func removeCgroups() {
        let roots = ((try? String(contentsOf: cgroupsFile, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        for root in roots where root.hasPrefix("/sys/fs/cgroup/") {
            var folders = [root]
            if let walker = FileManager.default.enumerator(atPath: root) {
                for case let relative as String in walker
                where (try? FileManager.default.attributesOfItem(atPath: root + "/" + relative)[.type] as? FileAttributeType) == .typeDirectory {
                    folders.append(root + "/" + relative)
                }
            }
            for folder in folders.sorted(by: { $0.count > $1.count }) { rmdir(folder) }
        }
        try? FileManager.default.removeItem(at: cgroupsFile)
    }

    // MARK: - Processes

    /// Whether `pid` exists and is not a zombie.
    public static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        // The state follows the parenthesised command name; a zombie has exited.
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// Live processes whose environment holds `entry` (`NAME=value`), e.g. a unit's `INVOCATION_ID=…`.
    /// Reading other processes' environments needs root.
    public static func processes(withEnvironment entry: String) -> [Int32] {
        let wanted = Array(entry.utf8)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return names.compactMap(Int32.init).filter { pid in
            guard pid != getpid(), let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return data.split(separator: 0).contains { Array($0) == wanted } && isAlive(pid)
        }
    }

    /// The executable name (`comm`) of a process, or nil when it is gone.
    public static func command(of pid: Int32) -> String? {
        (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Running programs

    /// Runs a program with exactly ``environment`` (``Shell/run(_:_:input:environment:timeout:)``
    /// adds the test process's environment, which could name another manager).
    private func run(_ executable: URL, _ arguments: [String], timeout: TimeInterval) throws -> ShellResult {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let group = DispatchGroup()
        nonisolated(unsafe) var out = Data(), err = Data()
        group.enter()
        DispatchQueue.global().async { out = outPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { err = errPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        if group.wait(timeout: .now() + timeout) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            group.wait()
        }
        process.waitUntilExit()
        return ShellResult(status: process.terminationStatus, stdout: out, stderr: err)
    }
}
