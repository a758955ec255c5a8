import Dispatch
import Foundation
import Synchronization

/// Runs a tool that keeps running (`adb track-devices`, `adb shell run-as PKG inotifyd`) and
/// hands its standard output over as it arrives, at no cost while the tool is silent.
///
/// Why not swift-subprocess, which ``ProcessRunner`` uses for every tool that ends: its
/// `run(…) { execution in … }` keeps a task that sleeps for one second in a loop for as long as the
/// child runs, to notice cancellation. For a call that lasts a second that is nothing; for an
/// agent that follows four apps all day it was four wake-ups a second, every second, with
/// nothing to do. Here the child is spawned with `posix_spawn`, its output is read through a
/// dispatch read source (epoll: the thread sleeps until a byte arrives), and it is reaped once
/// its output ends. Nothing runs while the child is silent.
///
/// Like ``ProcessRunner``, the child leads a process group of its own, with default signal
/// dispositions and an empty signal mask; standard input and standard error are `/dev/null`.
/// When `consume` returns or throws before the output ended (the caller was cancelled, or has
/// seen enough), the whole group gets SIGTERM, then SIGKILL after ``killGrace``, and
/// `run` returns only once the child has been reaped: no child outlives the call.
///
/// For example:
///
/// ```swift
/// let tracker = StreamingProcess(executable: "/usr/bin/adb", arguments: ["track-devices"])
/// let lists = try await tracker.run { output in
///     for try await bytes in output { decoder.feed(bytes) }
/// }
/// ```
public struct StreamingProcess: Sendable {
    public var executable: String
    public var arguments: [String]
    /// Variables added to (or replacing those of) the inherited environment.
    public var environment: [String: String]
    /// How long the group has between SIGTERM and SIGKILL. The default is 500 ms.
    public var killGrace: Duration
    /// How long a child that closed its output may take to exit before it is signalled. The
    /// default is 2 s.
    public var exitGrace: Duration

    public init(executable: String, arguments: [String], environment: [String: String] = [:],
                killGrace: Duration = .milliseconds(500), exitGrace: Duration = .seconds(2)) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.killGrace = killGrace
        self.exitGrace = exitGrace
    }

    /// What ``run(_:)`` returns: the value `consume` returned and how the child ended.
    public struct Outcome<Value: Sendable>: Sendable {
        public var value: Value
        public var termination: ProcessResult.Termination
    }

    /// Starts the child, calls `consume` with its output (chunks of bytes in order; the sequence
    /// ends when the child closes its output), then makes sure the child has ended.
    ///
    /// - throws: ``FlippioError/Code/toolNotFound`` when the executable does not exist,
    ///   ``FlippioError/Code/toolFailed`` when it is not executable or cannot be started, and whatever `consume` throws
    ///   (after the child was stopped and reaped).
    public func run<Value: Sendable>(
        _ consume: (AsyncThrowingStream<[UInt8], any Error>) async throws -> Value
    ) async throws -> Outcome<Value> {
        try Task.checkCancellation()
        try ProcessRunner.checkExecutable(ProcessCommand(executable: executable, arguments: arguments, timeout: .zero))
        let child = try spawn()
        let output = Self.read(child.output)
        let value: Value
        do {
            value = try await consume(output.stream)
        } catch {
            output.stop()
            _ = await Self.stop(child.pid, signalAtOnce: true, killGrace: killGrace, exitGrace: exitGrace)
            throw error
        }
        // Output that ended means the child is exiting; a caller that stopped reading early
        // (or was cancelled) wants it gone.
        let ended = output.ended
        output.stop()
        let termination = await Self.stop(child.pid, signalAtOnce: !ended, killGrace: killGrace, exitGrace: exitGrace)
        return Outcome(value: value, termination: termination)
    }

    // MARK: - Spawning

    private func spawn() throws -> (pid: pid_t, output: Int32) {
        var fds: [Int32] = [-1, -1]
        // pipe2(O_CLOEXEC) is not imported (it needs _GNU_SOURCE): close-on-exec right after.
        guard pipe(&fds) == 0, fcntl(fds[0], F_SETFD, FD_CLOEXEC) == 0, fcntl(fds[1], F_SETFD, FD_CLOEXEC) == 0 else {
            throw FlippioError(.toolFailed, "Could not start \(executable): no pipe (\(String(cString: strerror(errno)))).",
                               remedy: "The system is out of file descriptors; restart the agent.")
        }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(writeEnd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nothing else of ours reaches the child: `adb` may start a server that lives for hours,
        // and a descriptor it kept would outlive us (a parent's pipe or socket that should signal
        // our exit, a lock file).
        Self.closeFrom3(&actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var variables = ProcessInfo.processInfo.environment
        variables.merge(environment) { _, new in new }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }

        var pid: pid_t = 0
        let status = posix_spawnp(&pid, executable, &actions, &attributes, argv, envp)
        guard status == 0 else {
            close(readEnd)
            throw FlippioError(.toolFailed, "Could not start \(executable): \(String(cString: strerror(status))).",
                               remedy: "Check that \(executable) is an executable program for this machine.",
                               context: ["path": executable])
        }
        Self.running.withLock { _ = $0.insert(pid) }
        return (pid, readEnd)
    }

    /// Adds "close every descriptor from 3 up" to `actions`: glibc's
    /// `posix_spawn_file_actions_addclosefrom_np` (2.34 and later; a GNU extension Swift does not
    /// import, so looked up by name), else one close per descriptor open now.
    private static func closeFrom3(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
            return
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap(Int32.init) where fd >= 3 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
    }

    /// The children started and not yet reaped.
    private static let running = Mutex<Set<pid_t>>([])

    /// Sends SIGTERM to the group of every child still running, without waiting.
    ///
    /// For a process about to exit: a child whose reading task was cancelled is stopped by that
    /// task, but the process may end before the task has run.
    public static func terminateAll() {
        running.withLock { children in
            for pid in children { kill(-pid, SIGTERM) }
        }
    }

    // MARK: - Reading

    /// A flag set once, read from any thread.
    private final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }

    /// The child's output as a stream, read by a dispatch source that sleeps until data arrives.
    ///
    /// `@unchecked Sendable`: a dispatch source may be cancelled from any thread.
    private final class Output: @unchecked Sendable {
        let stream: AsyncThrowingStream<[UInt8], any Error>
        private let source: any DispatchSourceRead
        private let endOfOutput: Flag

        init(stream: AsyncThrowingStream<[UInt8], any Error>, source: any DispatchSourceRead, ended: Flag) {
            self.stream = stream
            self.source = source
            self.endOfOutput = ended
        }

        /// Whether the child closed its output (rather than the reader stopping first).
        var ended: Bool { endOfOutput.isSet }
        func stop() { source.cancel() }
    }

    private static func read(_ fd: Int32) -> Output {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [UInt8].self)
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: DispatchQueue(label: "flippio.streaming-process"))
        let ended = Flag()
        source.setEventHandler(handler: readHandler(fd, source: source, continuation: continuation, ended: ended))
        source.setCancelHandler(handler: cancelHandler(fd, continuation: continuation))
        let cancel = SourceCanceller(source)
        continuation.onTermination = { @Sendable _ in cancel.cancel() }
        source.activate()
        return Output(stream: stream, source: source, ended: ended)
    }

    /// `@unchecked Sendable` for the same reason as ``Output``.
    private struct SourceCanceller: @unchecked Sendable {
        let source: any DispatchSourceRead
        init(_ source: any DispatchSourceRead) { self.source = source }
        func cancel() { source.cancel() }
    }

    private static func cancelHandler(_ fd: Int32, continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation) -> @Sendable () -> Void {
        { @Sendable in
            close(fd)
            continuation.finish()
        }
    }

    /// Made in a plain function so the closure is `@Sendable` and bound to no actor: it runs on
    /// the source's queue.
    private static func readHandler(_ fd: Int32, source: any DispatchSourceRead,
                                     continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation,
                                     ended: Flag) -> @Sendable () -> Void {
        let source = SourceCanceller(source)
        return { @Sendable in
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    continuation.yield(Array(buffer[..<count]))
                    continue
                }
                if count < 0 && errno == EINTR { continue }
                if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }
                // End of output (or a read error, which ends it as well).
                ended.set()
                source.cancel()
                return
            }
        }
    }

    // MARK: - Stopping

    /// Reaps `pid`, signalling its group first when asked (or when it does not exit within
    /// `exitGrace` on its own), SIGKILL after `killGrace`; after a signal, the group gets a
    /// last SIGKILL once the leader is reaped, for grandchildren that ignored SIGTERM (while any
    /// member lives, the kernel does not reuse the group's id).
    private static func stop(_ pid: pid_t, signalAtOnce: Bool, killGrace: Duration, exitGrace: Duration) async -> ProcessResult.Termination {
        let signalled = Flag()
        @Sendable func signal(_ number: Int32) {
            // Under the lock: once reaped, the group id may be reused.
            running.withLock { children in
                guard children.contains(pid) else { return }
                signalled.set()
                kill(-pid, number)
            }
        }
        let queue = DispatchQueue.global()
        if signalAtOnce {
            signal(SIGTERM)
            queue.asyncAfter(deadline: .now() + killGrace.dispatchInterval) { signal(SIGKILL) }
        } else {
            queue.asyncAfter(deadline: .now() + exitGrace.dispatchInterval) {
                signal(SIGTERM)
                queue.asyncAfter(deadline: .now() + killGrace.dispatchInterval) { signal(SIGKILL) }
            }
        }
        let status: Int32 = await withCheckedContinuation { continuation in
            // waitpid blocks: a thread of its own, for the moment the child takes to exit.
            Thread.detachNewThread {
                // Wait for the exit without reaping, forget the child, then reap: no signal can
                // reach a reused process id in between.
                var info = siginfo_t()
                while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
                running.withLock { _ = $0.remove(pid) }
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                continuation.resume(returning: status)
            }
        }
        if signalled.isSet { kill(-pid, SIGKILL) }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import (they are macros).
        let signalNumber = status & 0x7f
        return signalNumber == 0 ? .exited((status >> 8) & 0xff) : .signalled(signalNumber)
    }
}

extension Duration {
    /// The duration for `DispatchTime` arithmetic.
    var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }
}
