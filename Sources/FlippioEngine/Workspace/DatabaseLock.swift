import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An advisory, cross-process lock for one database, so that `flippio push` and the agent never
/// push the same database at the same time.
///
/// Made by ``Workspace/lock(for:)``. The lock is `flock(2)` on a small file in the workspace's
/// state folder, never on the database (closing a descriptor of a database drops SQLite's POSIX
/// locks). `flock` locks belong to an open file description, so two `DatabaseLock` values for
/// the same database exclude each other even inside one process. The lock is released by
/// ``release()``, when the value is deallocated, or when the process dies.
///
/// For example:
///
/// ```swift
/// let lock = try workspace.lock(for: sidecar.origin.remoteDatabase)
/// try await lock.acquire(timeout: .seconds(30))
/// defer { lock.release() }
/// try await push(database)
/// ```
public final class DatabaseLock: Sendable {
    /// The lock file (in `<workspace>/.flippio/locks/`).
    public let lockFile: URL
    /// The database this lock guards (`device:path`), for messages.
    public let name: String

    private struct State {
        var fd: Int32 = -1
        var held = false
    }

    private let state = Mutex(State())

    init(lockFile: URL, name: String) throws {
        self.lockFile = lockFile
        self.name = name
        let fd = open(lockFile.path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: lockFile.path, errno: errno) }
        state.withLock { $0.fd = fd }
    }

    deinit {
        state.withLock { state in
            if state.fd >= 0 { close(state.fd) }  // closing releases the flock
            state.fd = -1
        }
    }

    /// Whether this value holds the lock now.
    public var isHeld: Bool { state.withLock { $0.held } }

    /// Takes the lock if nobody holds it; returns whether it is now held by this value.
    ///
    /// Does not wait. Calling it again while holding the lock returns true.
    public func tryAcquire() throws -> Bool {
        try state.withLock { state in
            if state.held { return true }
            guard state.fd >= 0 else { throw FlippioError.internalError("The lock for \(name) was used after release.") }
            while true {
                if flock(state.fd, LOCK_EX | LOCK_NB) == 0 {
                    state.held = true
                    return true
                }
                switch errno {
                case EINTR: continue
                case EWOULDBLOCK: return false
                case let code: throw FlippioError.workspaceWriteFailed(path: lockFile.path, errno: code)
                }
            }
        }
    }

    /// Waits for the lock, up to `timeout`.
    ///
    /// Polls with a growing interval (10 ms up to 250 ms) rather than blocking a thread in `flock`,
    /// so it stays cancellable.
    ///
    /// - throws: ``FlippioError/Code/pushInProgress`` when another process (or lock value) still
    ///   holds it after `timeout`; `CancellationError` when the task is cancelled.
    public func acquire(timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var interval = Duration.milliseconds(10)
        while true {
            if try tryAcquire() { return }
            let now = clock.now
            if now >= deadline {
                throw FlippioError(.pushInProgress,
                                   "Another flippio process is working on \(name) (a push, pull or resolve); gave up waiting after \(timeout).",
                                   remedy: "Wait for it to finish (see `flippio status`) and try again.",
                                   context: ["database": name, "lock": lockFile.path])
            }
            try await Task.sleep(for: min(interval, now.duration(to: deadline)))
            interval = min(interval * 2, .milliseconds(250))
        }
    }

    /// Releases the lock if held. The value can be acquired again later.
    public func release() {
        state.withLock { state in
            guard state.held, state.fd >= 0 else { return }
            _ = flock(state.fd, LOCK_UN)
            state.held = false
        }
    }
}
