import Foundation
import Subprocess
import Synchronization
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs external tools with swift-subprocess, with a deadline and a whole-group kill.
///
/// Each child is started as the leader of its own process group (`setpgid(0, 0)`), so that a
/// timeout or a cancelled caller can signal everything the tool started: `adb` and the
/// libimobiledevice tools fork helpers, and `sh -c '… &'` leaves grandchildren behind.
///
/// The teardown after a timeout or a cancellation is:
/// 1. SIGTERM to the group, then up to ``ProcessCommand/killGrace`` for the leader to exit;
/// 2. SIGKILL to the group if the leader is still alive;
/// 3. once the leader has been reaped, SIGKILL to the group again, for grandchildren that
///    ignored SIGTERM while the leader obeyed it.
///
/// A normal exit kills nothing: a tool may legitimately leave a daemon behind (`adb` starts
/// its server that way).
///
/// For example:
///
/// ```swift
/// let runner = ProcessRunner()
/// let result = try await runner.run(ProcessCommand(
///     executable: "/usr/bin/adb", arguments: ["devices", "-l"], timeout: .seconds(10)))
/// if result.timedOut { … }
/// ```
///
/// - throws: ``FlippioError/Code/toolNotFound`` when the executable does not exist,
///   ``FlippioError/Code/toolFailed`` when it cannot be started (not executable, spawn failure),
///   ``FlippioError/Code/workspaceWriteFailed`` when a ``ProcessCommand/Output/file(path:)``
///   target cannot be opened, and `CancellationError` when the calling task is cancelled
///   (after the group was killed). A non-zero exit status or a timeout is not thrown: it is a
///   ``ProcessResult``.
public struct ProcessRunner: ProcessRunning {
    public init() {
        _ = Self.ignoreSIGPIPE
    }

    /// A child that exits without reading all of its input would otherwise kill this whole
    /// process with SIGPIPE when we write to its stdin; with SIGPIPE ignored the write fails
    /// with EPIPE instead. (Children get default dispositions back: swift-subprocess spawns
    /// with `POSIX_SPAWN_SETSIGDEF`.)
    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    public func run(_ command: ProcessCommand) async throws -> ProcessResult {
        try Task.checkCancellation()
        try Self.checkExecutable(command)
        let clock = ContinuousClock()
        let start = clock.now

        let stdout = BoundedCapture(limit: {
            if case .capture(let limit) = command.output { return max(0, limit) }
            return 0
        }())
        let stderr = BoundedCapture(limit: max(0, command.errorLimit))
        let child = ChildProcess()

        // The file is opened here, not by the child, so that a bad path is reported as such
        // rather than as a tool failure; the child writes to it directly (no copy through us).
        var outputFile: FileDescriptor?
        if case .file(let path) = command.output {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: path, errno: errno) }
            outputFile = FileDescriptor(rawValue: fd)
        }
        defer { try? outputFile?.close() }

        let configuration = Self.configuration(for: command)
        let file = outputFile
        let (first, execution) = await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                do {
                    return .finished(try await Self.execute(
                        configuration, input: command.input, outputFile: file,
                        stdout: stdout, stderr: stderr, child: child))
                } catch {
                    return .failed(error)
                }
            }
            group.addTask {
                do {
                    try await Task.sleep(for: command.timeout)
                    return .deadline
                } catch {
                    return .cancelled
                }
            }
            let first = await group.next()!
            // Cancelling the subprocess task is what starts swift-subprocess's teardown sequence
            // (SIGTERM to the group, grace, SIGKILL); we then wait for it to finish.
            group.cancelAll()
            let second = await group.next()!
            switch first {
            case .finished, .failed: return (first, first)
            case .deadline, .cancelled: return (first, second)
            }
        }

        let timedOut: Bool
        if case .deadline = first { timedOut = true } else { timedOut = false }
        // A call that finished before the caller was cancelled keeps its result (the caller sees
        // the cancellation at its next suspension point), and nothing of it is killed. One that
        // the cancellation's teardown ended (killed by a signal) may still come first: it is a
        // cancellation, not a result.
        let cancelled: Bool
        switch first {
        case .finished(let status):
            if case .signalled = Self.termination(status) { cancelled = Task.isCancelled } else { cancelled = false }
        default:
            cancelled = Task.isCancelled
        }
        if timedOut || cancelled {
            // Step 3 of the teardown: the leader has been reaped, but a grandchild that caught
            // SIGTERM may still hold the group. While any member lives the kernel does not reuse
            // the group id, so this cannot hit an unrelated process group.
            child.killGroup()
        }
        if cancelled { throw CancellationError() }

        let duration = clock.now - start
        let (out, truncated) = stdout.contents
        let (err, _) = stderr.contents
        switch execution {
        case .finished(let status):
            return ProcessResult(termination: Self.termination(status), stdout: out, stderr: err,
                                 stdoutTruncated: truncated, duration: duration, timedOut: timedOut)
        case .failed(let error):
            if timedOut, child.pid != nil {
                return ProcessResult(termination: .signalled(SIGKILL), stdout: out, stderr: err,
                                     stdoutTruncated: truncated, duration: duration, timedOut: true)
            }
            throw Self.flippioError(error, command: command)
        case .deadline, .cancelled:
            throw FlippioError.internalError("The process runner lost track of \(command.commandLine).")
        }
    }

    // MARK: - Running

    private enum Outcome: Sendable {
        case finished(TerminationStatus)
        case failed(any Error)
        case deadline
        case cancelled
    }

    private static func configuration(for command: ProcessCommand) -> Configuration {
        var overrides: [Environment.Key: String?] = [:]
        for (key, value) in command.environment {
            if let key = Environment.Key(rawValue: key) { overrides[key] = value }
        }
        var options = PlatformOptions()
        // The child leads its own group, so signals to `-pid` reach it and everything it forks,
        // and never this process.
        options.processGroupID = 0
        // Used by swift-subprocess when our task is cancelled; the implicit final SIGKILL
        // inherits `toProcessGroup` from this step.
        options.teardownSequence = [
            .send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: command.killGrace),
        ]
        let executable: Executable = command.executable.contains("/")
            ? .path(FilePath(command.executable)) : .name(command.executable)
        return Configuration(
            executable: executable,
            arguments: Arguments(command.arguments),
            // Inherited and never scrubbed: ANDROID_ADB_SERVER_PORT, ADB_SERVER_SOCKET,
            // ANDROID_SERIAL, USBMUXD_SOCKET_ADDRESS must reach the tools.
            environment: .inherit.updating(overrides),
            platformOptions: options
        )
    }

    /// Starts the child and reads its output until it exits.
    ///
    /// Both streams are read to the end even past their limits, so that a chatty tool never
    /// blocks on a full pipe (nor dies of SIGPIPE) because we stopped listening. stdin is fed
    /// through a writer we close ourselves: swift-subprocess 1.0.2's own `.data` input traps
    /// (an unclosed descriptor) when the child exits before reading all of it.
    private static func execute(
        _ configuration: Configuration, input: Data?, outputFile: FileDescriptor?,
        stdout: BoundedCapture, stderr: BoundedCapture, child: ChildProcess
    ) async throws -> TerminationStatus {
        switch (input, outputFile) {
        case (nil, nil):
            return try await execute(configuration, input: .none, output: .sequence, child: child) { execution in
                async let out: Void = stdout.drain(execution.standardOutput)
                await stderr.drain(execution.standardError)
                await out
            }
        case (nil, let file?):
            return try await execute(configuration, input: .none, output: fileOutput(file), child: child) { execution in
                await stderr.drain(execution.standardError)
            }
        case (let data?, nil):
            return try await execute(configuration, input: .inputWriter, output: .sequence, child: child) { execution in
                async let fed: Void = feed(data, to: execution.standardInputWriter)
                async let out: Void = stdout.drain(execution.standardOutput)
                await stderr.drain(execution.standardError)
                _ = await (fed, out)
            }
        case (let data?, let file?):
            return try await execute(configuration, input: .inputWriter, output: fileOutput(file), child: child) { execution in
                async let fed: Void = feed(data, to: execution.standardInputWriter)
                await stderr.drain(execution.standardError)
                await fed
            }
        }
    }

    private static func execute<Input: InputProtocol, Output: OutputProtocol>(
        _ configuration: Configuration, input: Input, output: Output, child: ChildProcess,
        _ body: (Execution<Input, Output, SequenceOutput>) async -> Void
    ) async throws -> TerminationStatus {
        try await Subprocess.run(configuration, input: input, output: output, error: .sequence) { execution in
            child.started(execution.processIdentifier.value)
            await body(execution)
        }.terminationStatus
    }

    private static func fileOutput(_ file: FileDescriptor) -> FileDescriptorOutput {
        // We close it ourselves once the call is over, whatever happened.
        .fileDescriptor(file, closeAfterSpawningProcess: false)
    }

    /// Writes `data` to the child's stdin, then closes it so the child sees end of file.
    ///
    /// A child that exits (or closes stdin) early makes the write fail with EPIPE; that is
    /// its business, reported through its exit status, not an error of ours.
    private static func feed(_ data: Data, to writer: StandardInputWriter) async {
        _ = try? await writer.write(Array(data))
        try? await writer.finish()
    }

    private static func termination(_ status: TerminationStatus) -> ProcessResult.Termination {
        switch status {
        case .exited(let code): .exited(Int32(truncatingIfNeeded: code))
        case .signaled(let signal): .signalled(Int32(truncatingIfNeeded: signal))
        }
    }

    private static func flippioError(_ error: any Error, command: ProcessCommand) -> FlippioError {
        if let error = error as? FlippioError { return error }
        if (error as? SubprocessError)?.code == .executableNotFound {
            return toolNotFound(command)
        }
        return FlippioError(.toolFailed, "Could not start \(command.commandLine): \(error)",
                            remedy: "Check that \(command.executable) is an executable program.",
                            context: ["tool": command.toolName, "path": command.executable])
    }

    /// Checked before spawning so that the error names the missing file plainly.
    static func checkExecutable(_ command: ProcessCommand) throws {
        guard command.executable.contains("/") else { return }  // a bare name is resolved on PATH
        guard FileManager.default.fileExists(atPath: command.executable) else { throw toolNotFound(command) }
        // swift-subprocess reports EACCES as "not found"; say what is really wrong.
        guard FileManager.default.isExecutableFile(atPath: command.executable) else {
            throw FlippioError(.toolFailed, "\(command.executable) is not executable.",
                               remedy: "Make it executable (chmod +x) or point flippio at the right file.",
                               context: ["tool": command.toolName, "path": command.executable])
        }
    }

    private static func toolNotFound(_ command: ProcessCommand) -> FlippioError {
        FlippioError(.toolNotFound, "\(command.toolName) was not found at \(command.executable).",
                     remedy: "Install \(command.toolName), or give its path explicitly.",
                     context: ["tool": command.toolName, "path": command.executable])
    }
}

extension ProcessCommand {
    /// The executable's file name, for messages.
    fileprivate var toolName: String { (executable as NSString).lastPathComponent }
}

// MARK: - Helpers

/// The child's pid, recorded as soon as it is spawned, for the final group kill.
private final class ChildProcess: Sendable {
    private let state = Mutex<pid_t?>(nil)

    var pid: pid_t? { state.withLock { $0 } }

    func started(_ pid: pid_t) { state.withLock { $0 = pid } }

    /// SIGKILL to the child's process group. ESRCH (the group is already empty) is the usual case.
    func killGroup() {
        // Never `kill(0, …)` or `kill(-1, …)`: those mean "my own group" and "everyone".
        guard let pid, pid > 1 else { return }
        _ = kill(-pid, SIGKILL)
    }
}

/// Keeps the first `limit` bytes of a stream and counts the rest.
///
/// Shared with the subprocess task so that what was read before a timeout survives it.
private final class BoundedCapture: Sendable {
    let limit: Int
    private let state = Mutex<(data: Data, truncated: Bool)>((Data(), false))

    init(limit: Int) { self.limit = limit }

    var contents: (Data, Bool) { state.withLock { ($0.data, $0.truncated) } }

    /// Reads `sequence` until end of stream (or until the child exits and swift-subprocess
    /// cancels the read because a grandchild keeps the pipe open).
    func drain(_ sequence: SubprocessOutputSequence) async {
        do {
            for try await buffer in sequence {
                buffer.withUnsafeBytes { bytes in
                    state.withLock { state in
                        let room = limit - state.data.count
                        if bytes.count <= room {
                            state.data.append(contentsOf: bytes)
                        } else {
                            if room > 0 { state.data.append(contentsOf: bytes.prefix(room)) }
                            state.truncated = true
                        }
                    }
                }
            }
        } catch {
            // A read error ends the stream; what was read so far is kept.
        }
    }
}
