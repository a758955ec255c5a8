import Foundation

/// The seam between the engine and external tools (`adb`, `idevice*`, `afcclient`).
///
/// Every call has a deadline: there is no way to run a tool without one. A non-zero exit status is
/// a result, not an error (as in swift-subprocess): the bridges read stdout/stderr and turn them into
/// ``FlippioError`` codes. `run` throws only when the tool could not be started at all
/// (``FlippioError/Code/toolNotFound``) or the caller was cancelled.
public protocol ProcessRunning: Sendable {
    /// Runs `command` to completion, or until its timeout, whichever comes first.
    ///
    /// On timeout or cancellation the child's whole process group receives SIGTERM, then SIGKILL
    /// after ``ProcessCommand/killGrace``, so no grandchild survives.
    func run(_ command: ProcessCommand) async throws -> ProcessResult
}

/// One invocation of an external tool.
public struct ProcessCommand: Sendable, Equatable {
    /// Absolute path of the executable (tool discovery resolves names to paths).
    public var executable: String
    public var arguments: [String]
    /// Variables added to (or overriding) the inherited environment. The environment is always
    /// passed through, so `ANDROID_ADB_SERVER_PORT`, `ADB_SERVER_SOCKET`, `ANDROID_SERIAL` work.
    public var environment: [String: String]
    /// The deadline for the whole call.
    public var timeout: Duration
    /// Time between SIGTERM and SIGKILL to the process group after a timeout. The default is 2 s.
    public var killGrace: Duration
    /// Where standard output goes.
    public var output: Output
    /// At most this many bytes of stderr are kept. The default is 64 KiB.
    public var errorLimit: Int
    /// Bytes written to the child's stdin, or nil for no input.
    public var input: Data?

    public enum Output: Sendable, Equatable {
        /// Captured in memory, at most `limit` bytes; past that the result is marked truncated.
        case capture(limit: Int)
        /// Written to a file (created or truncated), for binary transfers such as `exec-out cat`.
        case file(path: String)
    }

    public init(
        executable: String,
        arguments: [String],
        environment: [String: String] = [:],
        timeout: Duration,
        killGrace: Duration = .seconds(2),
        output: Output = .capture(limit: 4 << 20),
        errorLimit: Int = 64 << 10,
        input: Data? = nil
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.timeout = timeout
        self.killGrace = killGrace
        self.output = output
        self.errorLimit = errorLimit
        self.input = input
    }

    /// The command line as a user would type it, for logs and error messages.
    public var commandLine: String {
        ([executable] + arguments).map { arg in
            arg.isEmpty || arg.contains(where: { " '\"\\$`!*?;&|<>()\n\t".contains($0) })
                ? "'" + arg.replacingOccurrences(of: "'", with: "'\\''") + "'" : arg
        }.joined(separator: " ")
    }
}

/// What an external tool did.
public struct ProcessResult: Sendable, Equatable {
    /// How the process ended.
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
    }

    public var termination: Termination
    /// Captured stdout (empty when ``ProcessCommand/Output/file(path:)`` was used).
    public var stdout: Data
    public var stderr: Data
    /// True when stdout went past its limit and was cut.
    public var stdoutTruncated: Bool
    public var duration: Duration
    /// True when the deadline passed and the process group was killed.
    public var timedOut: Bool

    public init(termination: Termination, stdout: Data, stderr: Data, stdoutTruncated: Bool = false,
                duration: Duration, timedOut: Bool) {
        self.termination = termination
        self.stdout = stdout
        self.stderr = stderr
        self.stdoutTruncated = stdoutTruncated
        self.duration = duration
        self.timedOut = timedOut
    }

    /// True for exit status 0.
    public var succeeded: Bool { termination == .exited(0) && !timedOut }
    /// The exit status, or 128 + signal number as a shell reports it.
    public var status: Int32 {
        switch termination {
        case .exited(let code): code
        case .signalled(let signal): 128 + signal
        }
    }
    /// stdout decoded as UTF-8, invalid bytes replaced.
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}
