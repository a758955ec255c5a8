import Crypto
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Reads and writes sidecars (`<db>.flippio.json`): atomically, off the caller's thread, with
/// the newest pending write per file winning.
///
/// A write goes to a temporary file in the same folder (`.x.db.flippio.json.tmp-<random>`,
/// which the watcher ignores), is flushed with `fsync`, renamed over the sidecar, and the folder
/// is flushed too: after a crash the sidecar is either the old or the new version, never a mix.
/// The blocking I/O runs on one background queue, in the order writes were submitted.
///
/// A write never replaces a sidecar it cannot understand: when the file on disk is unreadable
/// or written by a newer flippio, ``write(_:forDatabase:replacingUnreadable:)`` throws instead
/// (pass `replacingUnreadable: true` for `forget` or an explicit re-pull).
///
/// For example:
///
/// ```swift
/// let store = SidecarStore()
/// var sidecar = try await store.read(forDatabase: db)
/// sidecar.state = .dirty
/// store.enqueue(sidecar, forDatabase: db)   // returns at once; coalesced with later writes
/// await store.flush()                        // at shutdown
/// ```
///
/// ## Topics
///
/// - ``read(forDatabase:)``
/// - ``write(_:forDatabase:replacingUnreadable:)``
/// - ``enqueue(_:forDatabase:)``
/// - ``flush()``
public actor SidecarStore {
    private let writer: SidecarWriteQueue

    /// The write queue, for tests.
    nonisolated var writeQueue: SidecarWriteQueue { writer }

    /// - parameter onWriteError: called (on a background queue) when a write submitted with
    ///   ``enqueue(_:forDatabase:)`` fails; awaited writes throw instead. The default ignores it.
    public init(onWriteError: (@Sendable (URL, FlippioError) -> Void)? = nil) {
        writer = SidecarWriteQueue(onWriteError: onWriteError)
    }

    /// The sidecar of `database`.
    ///
    /// A write submitted to this store and not yet on disk is returned instead of the file
    /// (read-your-writes).
    ///
    /// - throws: ``FlippioError/Code/notTracked`` when there is no sidecar,
    ///   ``FlippioError/Code/sidecarUnreadable`` when it is not valid JSON of the expected shape,
    ///   ``FlippioError/Code/sidecarTooNew`` when a newer flippio wrote it.
    public func read(forDatabase database: URL) throws -> Sidecar {
        if let pending = writer.pendingSidecar(for: Sidecar.url(forDatabase: database).path) { return pending }
        return try Self.load(forDatabase: database)
    }

    /// Writes `sidecar` beside `database` and returns once it is durably on disk (or superseded
    /// by a newer write to the same file that is on disk).
    ///
    /// - parameter replacingUnreadable: replace the file even when it is unreadable or too new.
    /// - throws: ``FlippioError/Code/sidecarUnreadable`` / ``FlippioError/Code/sidecarTooNew``
    ///   (the file on disk is kept as it is), ``FlippioError/Code/workspaceWriteFailed`` (disk
    ///   full, read-only file system, permissions; the old sidecar is kept).
    public func write(_ sidecar: Sidecar, forDatabase database: URL, replacingUnreadable: Bool = false) async throws {
        let path = Sidecar.url(forDatabase: database).path
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            writer.submit(sidecar, path: path, replacingUnreadable: replacingUnreadable, waiter: continuation)
        }
    }

    /// Submits a write and returns at once. Of several writes pending for one file, only the
    /// newest is written. Failures go to the `onWriteError` handler given to ``init(onWriteError:)``.
    public nonisolated func enqueue(_ sidecar: Sidecar, forDatabase database: URL) {
        writer.submit(sidecar, path: Sidecar.url(forDatabase: database).path, replacingUnreadable: false, waiter: nil)
    }

    /// Returns when every write submitted so far (and any submitted meanwhile) is on disk or failed.
    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            writer.addFlushWaiter(continuation)
        }
    }

    /// Reads the sidecar fresh from disk, lets `change` edit it, and writes it back durably.
    ///
    /// The one way to change a sidecar: the caller holds the database's lock
    /// (``Workspace/lock(for:)``), so no other process (`flippio pull`, `resolve`, `forget`, the
    /// agent) changes the file between the read and the write, and nothing is written from a
    /// stale copy in memory. A sidecar that is gone stays gone: the database was forgotten.
    ///
    /// - throws: ``FlippioError/Code/notTracked`` when there is no sidecar (nothing is written),
    ///   the errors of ``read(forDatabase:)`` and ``write(_:forDatabase:replacingUnreadable:)``,
    ///   and whatever `change` throws (nothing is written then).
    @discardableResult
    public func update<T: Sendable>(forDatabase database: URL, _ change: (inout Sidecar) throws -> T) async throws -> T {
        var sidecar = try Self.load(forDatabase: database)
        let before = sidecar
        let result = try change(&sidecar)
        if sidecar != before {
            sidecar.updatedAt = Date()
            try await write(sidecar, forDatabase: database)
        }
        return result
    }

    /// What the sidecar file holds now, compared with what this process last wrote to it.
    public enum DiskState: Sendable, Equatable {
        /// The file is what this process wrote last (or just before the write in flight): an echo of its own write.
        case ownWrite
        /// Another process wrote it (or this process never did): adopt it.
        case changed(Sidecar)
        /// There is no sidecar any more: the database was forgotten.
        case removed
        /// It cannot be read (the error says why); it is left as it is.
        case unreadable(FlippioError)
    }

    /// Reads the sidecar from disk and tells whether someone else changed it since this process
    /// last wrote it, by content (the bytes written), never by timing.
    public nonisolated func diskState(forDatabase database: URL) -> DiskState {
        let url = Sidecar.url(forDatabase: database)
        switch Self.readFile(url.path) {
        case .failure(let code) where code == ENOENT || code == ENOTDIR:
            return .removed
        case .failure(let code):
            return .unreadable(Self.unreadable(url, problem: String(cString: strerror(code))))
        case .success(let data):
            if writer.wroteLast(data, to: url.path) { return .ownWrite }
            do { return .changed(try Self.decode(data, from: url)) } catch let error as FlippioError {
                return .unreadable(error)
            } catch {
                return .unreadable(Self.unreadable(url, problem: "\(error)"))
            }
        }
    }

    // MARK: - Synchronous access (for one-shot commands)

    /// Reads a sidecar from disk, without a store. See ``read(forDatabase:)`` for the errors.
    public static func load(forDatabase database: URL) throws -> Sidecar {
        let (data, url) = try readSidecar(forDatabase: database)
        return try decode(data, from: url)
    }

    /// Reads the summaries of the sidecars of `databases` (what the agent needs to track them),
    /// several at a time, off the caller's actor.
    ///
    /// The agent's start-up reads every sidecar of the workspace before it is ready. Decoding a
    /// whole sidecar (about 25 keys, eight ISO-8601 dates, the push history) costs about 0.1 ms,
    /// so 1,000 of them one after another on the engine's actor were a tenth of the start-up.
    /// A ``Sidecar/Summary`` decodes four keys, and the slices decode in parallel on the cooperative pool.
    ///
    /// - returns: one result per database, in the order of `databases`: the summary, or why it
    ///   could not be read (the errors of ``load(forDatabase:)``, for what the summary holds).
    public static func loadSummaries(forDatabases databases: [URL],
                                     concurrency: Int = ProcessInfo.processInfo.activeProcessorCount) async -> [Result<Sidecar.Summary, FlippioError>] {
        let slices = max(1, min(concurrency, databases.count / 16))
        let size = (databases.count + slices - 1) / max(1, slices)
        var results = [Result<Sidecar.Summary, FlippioError>?](repeating: nil, count: databases.count)
        await withTaskGroup(of: (Int, [Result<Sidecar.Summary, FlippioError>]).self) { group in
            for start in stride(from: 0, to: databases.count, by: max(1, size)) {
                let slice = databases[start..<min(start + size, databases.count)]
                group.addTask { (start, slice.map(loadSummary)) }
            }
            for await (start, slice) in group {
                for (offset, result) in slice.enumerated() { results[start + offset] = result }
            }
        }
        return results.map { $0! }
    }

    private static func loadSummary(_ database: URL) -> Result<Sidecar.Summary, FlippioError> {
        do {
            let (data, url) = try readSidecar(forDatabase: database)
            return .success(try decode(Sidecar.Summary.self, data, from: url, version: \.schemaVersion))
        } catch let error as FlippioError {
            return .failure(error)
        } catch {
            return .failure(unreadable(Sidecar.url(forDatabase: database), problem: "\(error)"))
        }
    }

    /// The sidecar file's bytes, and its URL.
    private static func readSidecar(forDatabase database: URL) throws -> (Data, URL) {
        let url = Sidecar.url(forDatabase: database)
        switch readFile(url.path) {
        case .success(let bytes): return (bytes, url)
        case .failure(let code) where code == ENOENT || code == ENOTDIR:
            throw FlippioError(.notTracked, "\(database.path) is not tracked by flippio: there is no \(url.lastPathComponent) beside it.",
                               remedy: "Pull it first with `flippio pull DEVICE APP PATH`, or pass a tracked file (see `flippio status`).",
                               context: ["path": database.path])
        case .failure(let code):
            throw unreadable(url, problem: String(cString: strerror(code)))
        }
    }

    /// Decodes sidecar JSON; `url` names the file in errors.
    public static func decode(_ data: Data, from url: URL) throws -> Sidecar {
        try decode(Sidecar.self, data, from: url, version: \.schemaVersion)
    }

    /// Decodes a sidecar, or the part of it `Value` reads, refusing a newer schema than this flippio's.
    private static func decode<Value: Decodable>(_ type: Value.Type, _ data: Data, from url: URL,
                                                 version: (Value) -> Int) throws -> Value {
        // One parse for a good sidecar; the version alone is looked at only to tell a newer
        // flippio's file (whose new fields may not decode) from a broken one.
        let decodeError: any Error
        do {
            let value = try decoder.decode(Value.self, from: data)
            if version(value) > Sidecar.currentSchemaVersion { throw tooNew(url, version: version(value)) }
            return value
        } catch let error as FlippioError {
            throw error
        } catch {
            decodeError = error
        }
        let version: Int
        do {
            version = try JSONDecoder().decode(SchemaVersion.self, from: data).schemaVersion
        } catch {
            throw unreadable(url, problem: describe(error))
        }
        if version > Sidecar.currentSchemaVersion { throw tooNew(url, version: version) }
        throw unreadable(url, problem: describe(decodeError))
    }

    /// The one key every sidecar version has.
    private struct SchemaVersion: Decodable { var schemaVersion: Int }

    private static func tooNew(_ url: URL, version: Int) -> FlippioError {
        FlippioError(.sidecarTooNew,
                     "\(url.path) was written by a newer flippio (sidecar schema \(version); this flippio reads up to \(Sidecar.currentSchemaVersion)).",
                     remedy: "Upgrade flippio to work with this database; the sidecar is left untouched.",
                     context: ["path": url.path, "schemaVersion": String(version)])
    }

    /// Encodes a sidecar as pretty JSON with sorted keys and ISO-8601 dates (milliseconds).
    public static func encode(_ sidecar: Sidecar) throws -> Data {
        var data = try encoder.encode(sidecar)
        data.append(0x0A)
        return data
    }

    /// Whether `name` is a sidecar temporary file (`.x.db.flippio.json.tmp-<random>`).
    public static func isTemporaryFileName(_ name: String) -> Bool {
        name.hasPrefix(".") && name.contains(Sidecar.fileSuffix + temporaryMarker)
    }

    static let temporaryMarker = ".tmp-"

    // MARK: - Coding

    private static let dateStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    private static let plainDateStyle = Date.ISO8601FormatStyle()

    private static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(dateStyle))
        }
        return encoder
    }

    /// One decoder for every read (building one, with its date closure, cost as much as a small
    /// sidecar's decoding); decoding with it from several threads at once is safe.
    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            // Hand-edited files may drop the fraction.
            if let date = try? dateStyle.parse(text) { return date }
            if let date = try? plainDateStyle.parse(text) { return date }
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "\"\(text)\" is not an ISO-8601 date")
        }
        return decoder
    }()

    private static func describe(_ error: any Error) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.isEmpty ? "the top level" : codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing key \"\(key.stringValue)\" at \(path(context.codingPath))"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "wrong type at \(path(context.codingPath)): \(context.debugDescription)"
        case DecodingError.dataCorrupted(let context):
            let underlying = (context.underlyingError as NSError?)?.localizedDescription
            return "invalid data at \(path(context.codingPath)): \(underlying ?? context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    static func unreadable(_ url: URL, problem: String) -> FlippioError {
        FlippioError(.sidecarUnreadable, "Cannot read the sidecar \(url.path): \(problem).",
                     remedy: "Run `flippio forget FILE` and pull again, or fix the JSON by hand.",
                     context: ["path": url.path])
    }

    enum ReadResult { case success(Data), failure(Int32) }

    static func readFile(_ path: String) -> ReadResult {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(errno) }
        defer { close(fd) }
        let limit = 16 << 20  // no sidecar is this big
        // Sized by fstat, plus one byte that sees the end: one read for the whole file (a fixed
        // 64 KB buffer, zeroed for every sidecar, cost more than reading a 2 KB one). At least a
        // page: files under /proc/sys report a size of 0 and answer only the first read (a
        // second read at an offset is the end), so a 1-byte buffer read "16384" as "1".
        var info = stat()
        let size = fstat(fd, &info) == 0 ? Int(info.st_size) : 0
        var buffer = [UInt8](repeating: 0, count: min(max(size + 1, 4096), limit + 1))
        var length = 0
        while true {
            if length == buffer.count {
                if length > limit { return .failure(EFBIG) }
                buffer.append(contentsOf: repeatElement(0, count: length))  // it grew since fstat
            }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + length, $0.count - length) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(errno)
            }
            if n == 0 { return .success(Data(buffer[0..<length])) }
            length += n
        }
    }
}

// MARK: - Summary

extension Sidecar {
    /// What the agent needs of a sidecar to track its database: where it came from, the state
    /// its loop starts in, and whether it follows its device.
    ///
    /// Start-up decodes only this for each database (``SidecarStore/loadSummaries(forDatabases:concurrency:)``):
    /// the rest of a sidecar is read fresh by every push. A sidecar that is valid JSON of a known
    /// version but damaged outside these keys is therefore tracked, and its first check reports
    /// it (``FlippioError/Code/sidecarUnreadable``; the file is never overwritten).
    public struct Summary: Sendable, Decodable, Equatable {
        public var schemaVersion: Int
        public var origin: Origin
        public var state: SyncState
        public var follow: Bool?
    }
}

// MARK: - The write queue

/// The pending writes and the one background drainer. Shared state behind a mutex so that
/// `enqueue` (nonisolated, synchronous) keeps submission order: the newest submission wins,
/// whatever order tasks happen to run in.
final class SidecarWriteQueue: Sendable {
    private struct Pending {
        var sidecar: Sidecar
        var replacingUnreadable: Bool
        var waiters: [CheckedContinuation<Void, any Error>]
    }

    private struct State {
        var pending: [String: Pending] = [:]
        /// Paths in first-submission order.
        var order: [String] = []
        var inFlight: (path: String, sidecar: Sidecar)?
        var draining = false
        var flushWaiters: [CheckedContinuation<Void, Never>] = []
        /// Digests of the bytes last written to each file, to recognise our own writes when the
        /// watcher reports them. Digests, not the bytes: the agent writes every sidecar at least
        /// once (its start-up check), and 1,000 of them (1 to 2 KB each) stayed in memory.
        var lastWritten: [String: OwnWrites] = [:]
    }

    /// The digests of the last two writes to one file: the write in flight, and the one before it.
    ///
    /// Both, because a write's digest is recorded before its rename (the watcher may report the
    /// new file before `write` returns): until the rename lands, the file still holds the write
    /// before, and a look at it then must not take our own older write for another process's and
    /// adopt it (the agent would go back to a state it had left). Writes to one file never
    /// overlap, so the file always holds one of these two while they are the last.
    struct OwnWrites {
        var latest: Data
        var previous: Data?

        func contains(_ digest: Data) -> Bool { digest == latest || digest == previous }
    }

    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "flippio.sidecar-writes", qos: .utility)
    private let onWriteError: (@Sendable (URL, FlippioError) -> Void)?

    init(onWriteError: (@Sendable (URL, FlippioError) -> Void)?) {
        self.onWriteError = onWriteError
    }

    private let performed = Atomic<Int>(0)

    /// How many files were written (tests check coalescing with it).
    var writesPerformed: Int { performed.load(ordering: .relaxed) }

    /// Keeps the drainer from starting until ``releaseForTesting()``.
    func holdForTesting() { queue.suspend() }
    func releaseForTesting() { queue.resume() }

    /// Whether `data` is what this process wrote last to `path`, or wrote just before the write
    /// still in flight (see ``OwnWrites``).
    func wroteLast(_ data: Data, to path: String) -> Bool {
        guard let own = state.withLock({ $0.lastWritten[path] }) else { return false }
        return own.contains(Data(SHA256.hash(data: data)))
    }

    func pendingSidecar(for path: String) -> Sidecar? {
        state.withLock { state in
            if let pending = state.pending[path] { return pending.sidecar }
            if let inFlight = state.inFlight, inFlight.path == path { return inFlight.sidecar }
            return nil
        }
    }

    func submit(_ sidecar: Sidecar, path: String, replacingUnreadable: Bool, waiter: CheckedContinuation<Void, any Error>?) {
        let start = state.withLock { state -> Bool in
            if var pending = state.pending[path] {
                pending.sidecar = sidecar
                pending.replacingUnreadable = replacingUnreadable
                if let waiter { pending.waiters.append(waiter) }
                state.pending[path] = pending
            } else {
                state.pending[path] = Pending(sidecar: sidecar, replacingUnreadable: replacingUnreadable,
                                              waiters: waiter.map { [$0] } ?? [])
                state.order.append(path)
            }
            if state.draining { return false }
            state.draining = true
            return true
        }
        if start { queue.async { self.drain() } }
    }

    func addFlushWaiter(_ waiter: CheckedContinuation<Void, Never>) {
        let idle = state.withLock { state -> Bool in
            if !state.draining { return true }
            state.flushWaiters.append(waiter)
            return false
        }
        if idle { waiter.resume() }
    }

    private enum Step {
        case write(String, Pending)
        case done([CheckedContinuation<Void, Never>])
    }

    private func drain() {
        while true {
            let step = state.withLock { state -> Step in
                state.inFlight = nil
                guard !state.order.isEmpty else {
                    // Decided under the lock: a later submit sees draining == false and starts a new drainer.
                    state.draining = false
                    defer { state.flushWaiters = [] }
                    return .done(state.flushWaiters)
                }
                let path = state.order.removeFirst()
                let pending = state.pending.removeValue(forKey: path)!
                state.inFlight = (path, pending.sidecar)
                return .write(path, pending)
            }
            switch step {
            case .done(let waiters):
                for waiter in waiters { waiter.resume() }
                return
            case .write(let path, let pending):
                let url = URL(fileURLWithPath: path)
                do {
                    // Recorded before the rename: the watcher may report the new file before
                    // `write` returns, and it must already be recognised as ours.
                    let data = try SidecarStore.encode(pending.sidecar)
                    let digest = Data(SHA256.hash(data: data))
                    state.withLock { $0.lastWritten[path] = OwnWrites(latest: digest, previous: $0.lastWritten[path]?.latest) }
                    try SidecarFile.write(pending.sidecar, to: url, replacingUnreadable: pending.replacingUnreadable)
                    performed.add(1, ordering: .relaxed)
                    for waiter in pending.waiters { waiter.resume() }
                } catch {
                    let flippioError = error as? FlippioError
                        ?? FlippioError.internalError("Writing \(path) failed: \(error)")
                    if pending.waiters.isEmpty {
                        onWriteError?(url, flippioError)
                    } else {
                        for waiter in pending.waiters { waiter.resume(throwing: flippioError) }
                    }
                }
            }
        }
    }
}

// MARK: - The atomic file write

enum SidecarFile {
    /// temp file → write → fsync → rename → fsync folder. Blocking.
    @discardableResult
    static func write(_ sidecar: Sidecar, to url: URL, replacingUnreadable: Bool) throws -> Data {
        if !replacingUnreadable {
            switch SidecarStore.readFile(url.path) {
            case .success(let data):
                _ = try SidecarStore.decode(data, from: url)  // throws unreadable / too new: keep the file
            case .failure(let code) where code == ENOENT:
                break
            case .failure(let code) where code == ENOTDIR:
                throw FlippioError.workspaceWriteFailed(path: url.path, errno: code)
            case .failure(let code):
                throw SidecarStore.unreadable(url, problem: String(cString: strerror(code)))
            }
        }
        let data = try SidecarStore.encode(sidecar)
        let directory = url.deletingLastPathComponent()
        let tempName = ".\(url.lastPathComponent)\(SidecarStore.temporaryMarker)\(randomSuffix())"
        let temp = directory.appendingPathComponent(tempName)

        let fd = open(temp.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: url.path, errno: errno) }
        var renamed = false
        defer { if !renamed { unlink(temp.path) } }
        do {
            defer { close(fd) }
            try data.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw FlippioError.workspaceWriteFailed(path: url.path, errno: errno)
                    }
                    offset += n
                }
            }
            if fsync(fd) != 0 { throw FlippioError.workspaceWriteFailed(path: url.path, errno: errno) }
        }
        if rename(temp.path, url.path) != 0 { throw FlippioError.workspaceWriteFailed(path: url.path, errno: errno) }
        renamed = true
        let dirfd = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            // The rename is only durable once the folder is flushed; EINVAL (file systems that
            // cannot fsync folders) is not a failure of the write.
            let result = fsync(dirfd)
            let code = errno
            close(dirfd)
            if result != 0 && code != EINVAL { throw FlippioError.workspaceWriteFailed(path: url.path, errno: code) }
        }
        return data
    }

    private static func randomSuffix() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }
}
