import Foundation

/// Finds the external tools and checks that each one runs, once per process.
///
/// For each ``Tool`` the first of these wins:
/// 1. an explicit path from the command line (`--adb`), passed as `explicitPaths`;
/// 2. the tool's variable (``Tool/environmentVariable``: `FLIPPIO_ADB`, `FLIPPIO_IDEVICE_ID`, …);
/// 3. `PATH`;
/// 4. for `adb` only, `$ANDROID_HOME/platform-tools` then `$ANDROID_SDK_ROOT/platform-tools`.
///
/// An explicit path (1 or 2) that does not point at an executable is reported as such; the
/// search does not quietly fall back to `PATH`, which would run a different tool than the
/// user asked for.
///
/// The tool found is then run with its version arguments under a short deadline (3 s by
/// default), through the injected ``ProcessRunning``: a tool that hangs (a wedged adb server,
/// usbmuxd not answering) is reported as timed out, and its process group is killed.
///
/// Lookups of different tools run concurrently. The result for each tool is cached for the
/// life of the actor, and concurrent callers asking for the same tool share one lookup.
///
/// For example:
///
/// ```swift
/// let tools = ToolDiscovery(environment: ProcessInfo.processInfo.environment,
///                           explicitPaths: options.adb.map { [.adb: $0] } ?? [:],
///                           runner: ProcessRunner())
/// let adb = try await tools.require(.adb)
/// ```
public actor ToolDiscovery {
    private let environment: [String: String]
    private let explicitPaths: [Tool: String]
    private let runner: any ProcessRunning
    private let timeout: Duration
    private var lookups: [Tool: Task<ToolInfo, Never>] = [:]

    /// - parameters:
    ///   - environment: Where `PATH`, `FLIPPIO_*`, `ANDROID_HOME` and `ANDROID_SDK_ROOT` are
    ///     read from (the tools themselves still run with the process's environment).
    ///   - explicitPaths: Paths given on the command line; they beat the environment.
    ///   - runner: Runs the version calls.
    ///   - timeout: The deadline of each version call. The default is 3 s.
    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        explicitPaths: [Tool: String] = [:],
        runner: any ProcessRunning = ProcessRunner(),
        timeout: Duration = .seconds(3)
    ) {
        self.environment = environment
        self.explicitPaths = explicitPaths
        self.runner = runner
        self.timeout = timeout
    }

    /// Finds and checks `tool`; the first call does the work, later ones get the cached result.
    public func locate(_ tool: Tool) async -> ToolInfo {
        if let lookup = lookups[tool] { return await lookup.value }
        // An unstructured task, so that concurrent callers can share it and a cancelled caller
        // does not leave the others with a cancelled lookup. It is bounded by `timeout`.
        let (environment, explicitPaths, runner, timeout) = (environment, explicitPaths, runner, timeout)
        let lookup = Task {
            await Self.discover(tool, environment: environment, explicitPaths: explicitPaths,
                                runner: runner, timeout: timeout)
        }
        lookups[tool] = lookup
        return await lookup.value
    }

    /// Finds and checks every tool concurrently; the results are in ``Tool/allCases`` order.
    public func locateAll() async -> [ToolInfo] {
        await withTaskGroup(of: ToolInfo.self) { group in
            for tool in Tool.allCases {
                group.addTask { await self.locate(tool) }
            }
            var found: [Tool: ToolInfo] = [:]
            for await info in group { found[info.tool] = info }
            return Tool.allCases.compactMap { found[$0] }
        }
    }

    /// The path of `tool`, ready to run.
    ///
    /// - throws: ``FlippioError/Code/toolNotFound`` naming the Debian package to install, or
    ///   ``FlippioError/Code/toolFailed`` when the tool was found but did not answer its
    ///   version call (timed out, crashed, exited with an error).
    public func require(_ tool: Tool) async throws -> String {
        let info = await locate(tool)
        guard let path = info.path else {
            throw FlippioError(
                .toolNotFound, "\(tool) was not found (\(info.problem ?? "not found")).",
                remedy: "Install the Debian package `\(tool.debianPackage)` (sudo apt install \(tool.debianPackage)), "
                    + "or set \(tool.environmentVariable) to its path.",
                context: ["tool": tool.rawValue, "package": tool.debianPackage])
        }
        if let problem = info.problem {
            throw FlippioError(
                .toolFailed, "\(tool) at \(path) does not work: \(problem).",
                remedy: "Check that `\(path) \(tool.versionArguments.joined(separator: " "))` runs, "
                    + "or point \(tool.environmentVariable) at a working \(tool).",
                context: ["tool": tool.rawValue, "path": path])
        }
        return path
    }

    // MARK: - Lookup

    private static func discover(
        _ tool: Tool, environment: [String: String], explicitPaths: [Tool: String],
        runner: any ProcessRunning, timeout: Duration
    ) async -> ToolInfo {
        let path: String
        switch resolve(tool, environment: environment, explicitPaths: explicitPaths) {
        case .found(let found):
            path = found
        case .notFound(let problem):
            return ToolInfo(tool: tool, path: nil, version: nil, problem: problem)
        }
        let command = ProcessCommand(executable: path, arguments: tool.versionArguments, timeout: timeout,
                                     killGrace: .milliseconds(500), output: .capture(limit: 64 << 10),
                                     errorLimit: 16 << 10)
        let result: ProcessResult
        do {
            result = try await runner.run(command)
        } catch let error as FlippioError {
            return ToolInfo(tool: tool, path: path, version: nil, problem: error.message)
        } catch {
            return ToolInfo(tool: tool, path: path, version: nil, problem: "\(error)")
        }
        if result.timedOut {
            return ToolInfo(tool: tool, path: path, version: nil,
                            problem: "`\(command.commandLine)` timed out after \(format(timeout))")
        }
        guard result.succeeded else {
            let detail = firstLine(result.stderrText) ?? firstLine(result.stdoutText)
            return ToolInfo(tool: tool, path: path, version: nil,
                            problem: "`\(command.commandLine)` failed with status \(result.status)"
                                + (detail.map { ": \($0)" } ?? ""))
        }
        let output = result.stdout.isEmpty ? result.stderrText : result.stdoutText
        return ToolInfo(tool: tool, path: path, version: tool.parseVersion(output), problem: nil)
    }

    private enum Resolution {
        case found(String)
        case notFound(String)
    }

    private static func resolve(_ tool: Tool, environment: [String: String], explicitPaths: [Tool: String]) -> Resolution {
        let explicit: (value: String, source: String)? =
            explicitPaths[tool].map { ($0, "--\(tool.rawValue)") }
            ?? environment[tool.environmentVariable].flatMap { $0.isEmpty ? nil : ($0, tool.environmentVariable) }
        if let explicit {
            if explicit.value.contains("/") {
                return isExecutable(explicit.value) ? .found(explicit.value)
                    : .notFound("\(explicit.source) is \(explicit.value), which is not an executable file")
            }
            // A bare name ("adb-34") is looked up on PATH.
            if let found = searchPath(explicit.value, environment: environment) { return .found(found) }
            return .notFound("\(explicit.source) is \(explicit.value), which is not on PATH")
        }
        if let found = searchPath(tool.executableName, environment: environment) { return .found(found) }
        if tool == .fusermount, let found = searchPath("fusermount3", environment: environment) { return .found(found) }
        if tool == .adb {
            for variable in ["ANDROID_HOME", "ANDROID_SDK_ROOT"] {
                guard let root = environment[variable], !root.isEmpty else { continue }
                let candidate = (root as NSString).appendingPathComponent("platform-tools/adb")
                if isExecutable(candidate) { return .found(candidate) }
            }
            return .notFound("not found on PATH, $ANDROID_HOME/platform-tools or $ANDROID_SDK_ROOT/platform-tools: "
                             + "install the Debian package `adb`")
        }
        return .notFound("not found on PATH: install the Debian package `\(tool.debianPackage)`")
    }

    private static func searchPath(_ name: String, environment: [String: String]) -> String? {
        // Empty PATH entries mean the current directory; they are skipped on purpose.
        for directory in (environment["PATH"] ?? "").split(separator: ":") where !directory.isEmpty {
            let candidate = (String(directory) as NSString).appendingPathComponent(name)
            if isExecutable(candidate) { return candidate }
        }
        return nil
    }

    private static func isExecutable(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            && FileManager.default.isExecutableFile(atPath: path)
    }

    private static func firstLine(_ text: String) -> String? {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .first { !$0.isEmpty }
    }

    /// "3s", "500ms", "1.5s".
    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        if milliseconds < 1000 { return "\(milliseconds)ms" }
        return String(format: "%.1fs", Double(milliseconds) / 1000)
    }
}
