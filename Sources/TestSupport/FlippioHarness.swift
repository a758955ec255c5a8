import Foundation

/// End-to-end set-up: an emulated device reached by the real `adb`, a private workspace, and the
/// built `flippio` binary run as a real process (the agent too, so it can be killed for real).
public final class FlippioHarness: @unchecked Sendable {
    public let sim: Devsim
    public let home: TemporaryDirectory
    public var workspace: URL { home.url.appendingPathComponent("workspace", isDirectory: true) }

    public init(simulator: Devsim? = nil) throws {
        sim = try simulator ?? Devsim()
        home = try TemporaryDirectory("flippio-e2e")
    }

    /// The environment every flippio process gets: the simulator's adb port, the private workspace,
    /// and XDG folders inside the test's folder (so no user config leaks in).
    public var environment: [String: String] {
        var env = sim.environment
        // The agent is started with exactly this environment: tool discovery searches its PATH.
        env["PATH"] = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        env["FLIPPIO_WORKSPACE"] = workspace.path
        env["XDG_CONFIG_HOME"] = home.url.appendingPathComponent("config").path
        env["XDG_STATE_HOME"] = home.url.appendingPathComponent("state").path
        env["XDG_DATA_HOME"] = home.url.appendingPathComponent("data").path
        env["FLIPPIO_LOG_LEVEL"] = "debug"
        // Tests of pushes and conflicts script the app's writes and the desktop's in a set order;
        // an agent that brings the app's write in first would change the story. The tests of
        // following turn it on (`FLIPPIO_FOLLOW=1`).
        env["FLIPPIO_FOLLOW"] = "0"
        env.removeValue(forKey: "NOTIFY_SOCKET")
        env.removeValue(forKey: "JOURNAL_STREAM")
        return env
    }

    /// Runs `flippio ARGS` to completion.
    @discardableResult
    public func flippio(_ arguments: [String], environment extra: [String: String] = [:], timeout: TimeInterval = 120) throws -> ShellResult {
        try Shell.run(Products.executable("flippio"), arguments, environment: environment.merging(extra) { $1 }, timeout: timeout)
    }

    /// The local copy of a device database: `<workspace>/<serial>/<package>/<device path>`.
    public func localCopy(serial: String, package: String, remotePath: String) -> URL {
        workspace.appendingPathComponent(serial).appendingPathComponent(package)
            .appendingPathComponent(String(remotePath.drop(while: { $0 == "/" })))
    }

    /// Starts `flippio ARGS` (any command) in the background, its output going to a log file.
    public func startCommand(_ arguments: [String], environment extra: [String: String] = [:]) throws -> AgentProcess {
        try AgentProcess(arguments: arguments, environment: environment.merging(extra) { $1 },
                         log: home.url.appendingPathComponent("command-\(UUID().uuidString.prefix(6)).log"))
    }

    /// Starts `flippio agent ARGS` in a user namespace of its own whose inotify watch limit
    /// (`/proc/sys/user/max_inotify_watches`, per user namespace) is `maxInotifyWatches`: the
    /// kernel's watch limit reached for the agent alone, with no machine-wide setting changed.
    /// ``AgentProcess/setInotifyWatchLimit(_:)`` raises it later.
    public func startAgentWithInotifyWatchLimit(_ maxInotifyWatches: Int, _ arguments: [String] = [],
                                                 environment extra: [String: String] = [:]) throws -> AgentProcess {
        let script = "echo \(maxInotifyWatches) > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""
        return try AgentProcess(arguments: ["--user", "--map-root-user", "/bin/sh", "-c", script, Products.executable("flippio").path, "agent"] + arguments,
                                environment: environment.merging(extra) { $1 },
                                log: home.url.appendingPathComponent("agent-\(UUID().uuidString.prefix(6)).log"),
                                executable: URL(fileURLWithPath: "/usr/bin/unshare"))
    }

    /// Starts `flippio agent ARGS` in the background, its output going to a log file.
    public func startAgent(_ arguments: [String] = [], environment extra: [String: String] = [:]) throws -> AgentProcess {
        try AgentProcess(arguments: ["agent"] + arguments, environment: environment.merging(extra) { $1 },
                         log: home.url.appendingPathComponent("agent-\(UUID().uuidString.prefix(6)).log"))
    }
}

/// A running `flippio agent`.
public final class AgentProcess: @unchecked Sendable {
    public let process = Process()
    public let logURL: URL

    init(arguments: [String], environment: [String: String], log: URL, executable: URL = Products.executable("flippio")) throws {
        logURL = log
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }

    public var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// How many times `text` appears in the log so far.
    public func occurrences(of text: String) -> Int {
        log.components(separatedBy: text).count - 1
    }

    /// Waits until the agent's log contains `text`.
    public func waitForLog(_ text: String, timeout: Duration = .seconds(30)) async throws {
        try await waitUntil("agent log shows \"\(text)\"\n--- log ---\n\(log)", timeout: timeout) { self.log.contains(text) }
    }

    /// Sets the inotify watch limit of the agent's user namespace (see
    /// ``FlippioHarness/startAgentWithInotifyWatchLimit(_:_:environment:)``).
    public func setInotifyWatchLimit(_ watches: Int) throws {
        let result = try Shell.run(URL(fileURLWithPath: "/usr/bin/nsenter"),
                                   ["--user", "--target", String(pid), "/bin/sh", "-c", "echo \(watches) > /proc/sys/user/max_inotify_watches"])
        guard result.status == 0 else { throw ShellError("nsenter failed: \(result.err)") }
    }

    /// Sends a real signal.
    public func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit and returns its status (or 128 + signal).
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        try await waitUntil("agent exited", timeout: timeout) { !self.process.isRunning }
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
