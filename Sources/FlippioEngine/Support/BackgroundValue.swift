import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A value computed on a thread of its own, at a lower CPU priority, and waited for only where
/// it is read.
///
/// Why: work that a later step needs, but the next steps do not, need not make them wait. A push
/// needs its snapshot's content hash only to record the push once the device has checked its
/// copy; the device's check needs the plain SHA-256 before. Computed meanwhile (~130 ms of CPU
/// at 200 MB), the content hash fills the time the host waits for the device instead of coming
/// before it. At nice 10 the thread takes what the push's own steps (and the machine's other
/// work) leave idle: on two cores that is most of what it needs.
///
/// ```swift
/// let hash = BackgroundValue(name: "flippio.content-hash") { try ContentHash.sha256(databaseIn: fd, at: url) }
/// …                                  // the push goes on
/// record.contentHash = try hash.value()  // waits if it is not done yet
/// ```
///
/// A plain `Thread`, not a task or a Dispatch work item: a reader waits for it by blocking, which
/// must not wait for a pool the reader may be occupying.
final class BackgroundValue<Value: Sendable>: Sendable {
    private let outcome = Mutex<Result<Value, any Error>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    /// The nice value the thread runs at (Linux's nice is per thread).
    static var niceness: Int32 { 10 }

    /// Starts `work` on a new thread named `name`.
    init(name: String, _ work: @escaping @Sendable () throws -> Value) {
        let thread = Thread { [self] in
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Self.niceness)
            let result = Result { try work() }
            outcome.withLock { $0 = result }
            done.signal()
        }
        thread.name = name
        thread.start()
    }

    /// The value, or the error `work` threw; waits for it when it is not computed yet.
    func value() throws -> Value {
        if let result = outcome.withLock({ $0 }) { return try result.get() }
        done.wait()
        done.signal()  // for another reader waiting meanwhile
        return try outcome.withLock { $0! }.get()
    }

    /// Whether the value is computed (tests).
    var isDone: Bool { outcome.withLock { $0 != nil } }
}

/// A hash that is known, or being computed in the background (``Snapshotter/defersContentHash``).
enum PendingHash: Sendable {
    case known(String)
    case computing(BackgroundValue<String>)

    /// The hash; waits for it while it is computed.
    func value() throws -> String {
        switch self {
        case .known(let hash): hash
        case .computing(let background): try background.value()
        }
    }
}
