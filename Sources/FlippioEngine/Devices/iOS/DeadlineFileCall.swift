import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs a blocking file-system call on a thread of its own, and gives up on it after a deadline.
///
/// A call into a FUSE mount whose daemon is stuck (a wedged USB link under ifuse) blocks in the
/// kernel until the daemon answers, which may be never, and no signal flippio can send wakes it.
/// Run on Swift's cooperative pool, a few such calls would starve every task of the agent. So
/// each call gets a fresh `Thread`; the awaiting task resumes at the deadline with `timedOut`,
/// and a thread still blocked is left behind (it ends when the kernel lets go, e.g. once the
/// mount is detached with `fusermount -uz`).
///
/// For example:
///
/// ```swift
/// let names = try await DeadlineFileCall.run("list /Documents", timeout: .seconds(5)) {
///     try PosixFile.list(mountPoint + "/Documents")
/// }
/// ```
///
/// - throws: what `body` throws, or `timedOut` naming `what`.
/// - Important: `body` must not touch actor state: it runs outside the concurrency runtime.
enum DeadlineFileCall {
    static func run<T: Sendable>(_ what: String, timeout: Duration,
                                 _ body: @escaping @Sendable () throws -> T) async throws -> T {
        let once = ResumeOnce<T>()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            let thread = Thread {
                once.resume(with: Result { try body() })
            }
            thread.name = "flippio-fs"
            thread.start()
            let (seconds, attoseconds) = timeout.components
            let nanoseconds = Int(clamping: seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) {
                once.resume(with: .failure(FlippioError(
                    .timedOut, "A file operation through the iOS mount did not finish in time (\(what)).",
                    remedy: "Check the cable and that the device is unlocked; flippio remounts and tries again.",
                    context: ["operation": what])))
            }
        }
    }

    /// Resumes a continuation once: whichever of the call and the deadline comes first.
    private final class ResumeOnce<T: Sendable>: Sendable {
        private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, early: Result<T, any Error>?)>((nil, nil))

        func set(_ continuation: CheckedContinuation<T, any Error>) {
            let early: Result<T, any Error>? = state.withLock {
                if let early = $0.early { $0.early = nil; return early }
                $0.continuation = continuation
                return nil
            }
            if let early { continuation.resume(with: early) }
        }

        func resume(with result: Result<T, any Error>) {
            let continuation: CheckedContinuation<T, any Error>? = state.withLock {
                guard let continuation = $0.continuation else {
                    if $0.early == nil { $0.early = result }
                    return nil
                }
                $0.continuation = nil
                return continuation
            }
            continuation?.resume(with: result)
        }
    }
}
