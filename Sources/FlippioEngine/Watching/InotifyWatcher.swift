import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Watches folders with Linux inotify, through the kernel API directly.
///
/// One inotify instance (`inotify_init1(IN_NONBLOCK | IN_CLOEXEC)`) per watcher; a
/// `DispatchSource` read source drains it on a private serial queue into ``eventBatches``, one
/// batch per `read()` of the kernel queue, and rests ``readPause`` after a read that found
/// something. Watches are on folders, with create, modify, attribute, move, delete and
/// close-for-write events: `IN_CLOSE_WRITE` alone would miss GUI tools that keep the database
/// open, and a read-only open also closes. Identical `.changed` events within one read of the queue are merged.
///
/// Not libinotifytools: that library keeps process-global state, is not thread-safe, uses
/// `select()` (which fails on descriptors ≥ 1024) and does not watch new subfolders.
///
/// For example:
///
/// ```swift
/// let watcher = try InotifyWatcher()
/// try watcher.watch(directory: folder)
/// for await batch in watcher.eventBatches {
///     for case .directoryCreated(let sub) in batch { try watcher.watch(directory: sub) }
/// }
/// ```
///
/// Subfolders are not watched automatically: on ``WatchEvent/directoryCreated(_:)`` the caller
/// decides (and rescans the new folder, since files may have appeared before the watch).
/// On ``WatchEvent/overflow`` the caller rescans everything.
public final class InotifyWatcher: FileWatching {
    /// The events each folder watch asks for.
    public static let watchMask: UInt32 = UInt32(IN_CREATE) | UInt32(IN_MODIFY) | UInt32(IN_MOVED_TO)
        | UInt32(IN_MOVED_FROM) | UInt32(IN_DELETE) | UInt32(IN_CLOSE_WRITE) | UInt32(IN_ATTRIB)
        | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF) | UInt32(IN_ONLYDIR)

    public let eventBatches: AsyncStream<[WatchEvent]>

    /// A watched folder: its URL and its path, both built once when the watch is added.
    private struct Folder {
        let url: URL
        let path: String
    }

    private struct State {
        var directoryByWatch: [Int32: Folder] = [:]
        var watchByPath: [String: Int32] = [:]
        var closed = false
        var suspended = false
        /// The events of the read being parsed (only the watcher's queue uses it). Handed to the
        /// stream whole, so its storage is new for each read.
        var batch: [WatchEvent] = []
        /// Storage reused by every read of the kernel queue.
        var seen = Set<WatchEvent>()
        var names = RecentNames()
    }

    private let fd: Int32
    private let state = Mutex(State())
    private let continuation: AsyncStream<[WatchEvent]>.Continuation
    // DispatchSource is thread-safe (suspend/resume/cancel may be called from any thread) but not annotated Sendable.
    nonisolated(unsafe) private let source: any DispatchSourceRead
    private let queue = DispatchQueue(label: "flippio.inotify")

    /// Opens an inotify instance. Nothing is watched yet.
    ///
    /// - throws: ``FlippioError/Code/watchLimitReached`` when the per-user limit on inotify
    ///   instances (`fs.inotify.max_user_instances`) is reached.
    public init() throws {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else {
            let code = errno
            if code == EMFILE || code == ENFILE || code == ENOSPC { throw Self.limitError(errno: code, directory: nil) }
            throw FlippioError.internalError("inotify_init1 failed: \(String(cString: strerror(code))).")
        }
        self.fd = fd
        // Unbounded: the kernel queue (fs.inotify.max_queued_events) is the real bound, and
        // dropping here would lose edits without an overflow signal.
        (eventBatches, continuation) = AsyncStream.makeStream(of: [WatchEvent].self, bufferingPolicy: .unbounded)
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        Self.install(on: source, fd: fd, watcher: WeakWatcher(self))
        source.resume()
    }

    deinit {
        close()
    }

    // MARK: - Watches

    public func watch(directory: URL) throws {
        let path = Self.normalizedPath(directory)
        let directory = URL(fileURLWithPath: path, isDirectory: true)
        try state.withLock { state in
            guard !state.closed else {
                throw FlippioError.internalError("The watcher is closed; cannot watch \(path).")
            }
            let wd = inotify_add_watch(fd, path, Self.watchMask)
            guard wd >= 0 else { throw Self.watchError(errno: errno, directory: directory) }
            if let old = state.directoryByWatch[wd], old.path != path { state.watchByPath[old.path] = nil }
            if let oldWatch = state.watchByPath[path], oldWatch != wd { state.directoryByWatch[oldWatch] = nil }
            state.directoryByWatch[wd] = Folder(url: directory, path: path)
            state.watchByPath[path] = wd
        }
    }

    public func unwatch(directory: URL) {
        let path = Self.normalizedPath(directory)
        state.withLock { state in
            guard let wd = state.watchByPath.removeValue(forKey: path) else { return }
            state.directoryByWatch[wd] = nil
            if !state.closed { _ = inotify_rm_watch(fd, wd) }
        }
    }

    public var watchedDirectories: [URL] {
        state.withLock { $0.directoryByWatch.values.map(\.url) }.sorted { $0.path < $1.path }
    }

    public func close() {
        let wasOpen = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.closed = true
            state.directoryByWatch = [:]
            state.watchByPath = [:]
            if state.suspended { state.suspended = false; source.resume() }
            return true
        }
        guard wasOpen else { return }
        source.cancel()  // the cancel handler closes the descriptor, after the last read
        continuation.finish()
    }

    /// The folder's path, standardized, without a trailing slash.
    static func normalizedPath(_ url: URL) -> String {
        var path = url.standardizedFileURL.path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }

    // MARK: - Test hooks

    /// Stops draining the kernel queue (events pile up there, up to `max_queued_events`).
    func suspendReading() {
        let suspended = state.withLock { state -> Bool in
            guard !state.closed, !state.suspended else { return false }
            state.suspended = true
            source.suspend()
            return true
        }
        // `suspend()` stops new handler runs only: wait for one already running on the queue, so
        // that nothing at all is read from here on.
        if suspended { queue.sync {} }
    }

    /// Resumes draining after ``suspendReading()``.
    func resumeReading() {
        state.withLock { state in
            guard state.suspended else { return }
            state.suspended = false
            source.resume()
        }
    }

    // MARK: - Reading

    /// Holds the watcher weakly so the read source does not keep it alive.
    private struct WeakWatcher: Sendable {
        weak var watcher: InotifyWatcher?
        init(_ watcher: InotifyWatcher) { self.watcher = watcher }
    }

    /// Installs the handlers from a plain function so the closures are `@Sendable` and
    /// isolated to nothing (they run on the watcher's queue).
    private static func install(on source: any DispatchSourceRead, fd: Int32, watcher: WeakWatcher) {
        source.setEventHandler { @Sendable in
            guard let watcher = watcher.watcher, watcher.drainKernelQueue() else { return }
            watcher.pauseReading()
        }
        source.setCancelHandler { @Sendable in
            _ = Glibc.close(fd)
        }
    }

    private static let bufferSize = 64 * 1024

    /// How long the kernel queue is left alone after a read that found records, before it is read
    /// again.
    ///
    /// Read as soon as it is readable, the queue yields one or two records per read during a burst
    /// of commits (sqlite3 writes ~4.5 records per commit, ~20,000 a second): about 28,000 reads
    /// that found records for 10,000 commits, each a wake-up of this queue's thread and of the
    /// consumer's task, which cost the agent more than handling the events (1.4 to 1.9 s of CPU;
    /// with the pause, 0.3 s). Paused, a read takes what came meanwhile
    /// (~100 records at that pace), as one batch. The first record after a quiet time is still
    /// read at once; the next ones are at most this late, nothing next to a settle window of
    /// hundreds of milliseconds. The kernel keeps records meanwhile (`max_queued_events`, 16,384
    /// by default, is many pauses' worth).
    static let readPause = DispatchTimeInterval.milliseconds(5)

    /// Reads the kernel queue until it is empty; returns whether it held anything.
    private func drainKernelQueue() -> Bool {
        withUnsafeTemporaryAllocation(byteCount: Self.bufferSize, alignment: 8) { buffer in
            var readSome = false
            while true {
                let count = read(fd, buffer.baseAddress, buffer.count)
                if count < 0 {
                    if errno == EINTR { continue }
                    return readSome  // EAGAIN: drained; EBADF: closed
                }
                if count == 0 { return readSome }
                readSome = true
                parse(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            }
        }
    }

    /// Stops the read source for ``readPause`` (see there). Nothing to do once closed; a close
    /// during the pause cancels the source, whose cancel handler runs when the pause ends.
    private func pauseReading() {
        let suspended = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            source.suspend()  // under the lock: close() sees it either before or after
            return true
        }
        guard suspended else { return }
        // Held strongly: a watcher released meanwhile still gets its source resumed, and cancelled.
        let paused = ReadSource(source: source)
        queue.asyncAfter(deadline: .now() + Self.readPause) { @Sendable in paused.source.resume() }
    }

    /// The read source, to resume from a closure (DispatchSource is thread-safe but not annotated Sendable).
    private struct ReadSource: @unchecked Sendable {
        let source: any DispatchSourceRead
    }

    private static let headerSize = MemoryLayout<inotify_event>.size  // 16: wd, mask, cookie, len

    /// Turns a buffer of variable-length `struct inotify_event` records into events and yields
    /// them as one batch (none when the read held no event worth reporting).
    ///
    /// Per event of a file, nothing is allocated once the watcher has warmed up: the folder's path
    /// comes from the watch and a name is decoded once and reused while it recurs
    /// (``RecentNames``); per read, the batch's array is. The batch is yielded under the state's
    /// lock: the stream's consumer never waits for that lock while holding the stream's.
    private func parse(_ bytes: UnsafeRawBufferPointer) {
        state.withLock { state in
            state.batch = []
            // A file's record is at least 32 bytes (16 of header, a name padded to 16).
            state.batch.reserveCapacity(bytes.count / (Self.headerSize + 16) + 1)
            state.seen.removeAll(keepingCapacity: true)
            var offset = 0
            while offset + Self.headerSize <= bytes.count {
                let wd = bytes.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                let nameStart = offset + Self.headerSize
                guard nameStart + length <= bytes.count else { break }  // never happens: the kernel writes whole records
                offset = nameStart + length
                // The name is NUL-terminated and padded with NULs to an aligned length.
                let nameBytes = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<(nameStart + length)])
                let nameBytesUsed = UnsafeRawBufferPointer(rebasing: nameBytes[0..<(nameBytes.firstIndex(of: 0) ?? nameBytes.count)])
                handle(wd: wd, mask: mask, nameBytes: nameBytesUsed, state: &state)
            }
            if !state.batch.isEmpty { continuation.yield(state.batch) }
            state.batch = []
        }
    }

    /// One kernel record: updates the watches and appends its event, if any, to the batch.
    private func handle(wd: Int32, mask: UInt32, nameBytes: UnsafeRawBufferPointer, state: inout State) {
        func emit(_ event: WatchEvent, _ state: inout State) {
            if case .changed = event {
                guard state.seen.insert(event).inserted else { return }  // identical within one read: merged
            }
            state.batch.append(event)
        }
        if mask & UInt32(IN_Q_OVERFLOW) != 0 {
            emit(.overflow, &state)
            return
        }
        guard let directory = state.directoryByWatch[wd] else { return }  // a watch we dropped
        if mask & UInt32(IN_IGNORED) != 0 {
            // The kernel removed the watch (folder gone, file system unmounted).
            state.directoryByWatch[wd] = nil
            state.watchByPath[directory.path] = nil
            emit(.directoryRemoved(directory.url), &state)
            return
        }
        if mask & (UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF)) != 0 {
            state.directoryByWatch[wd] = nil
            state.watchByPath[directory.path] = nil
            // A moved folder lives on elsewhere; its old path is meaningless, so stop.
            if mask & UInt32(IN_MOVE_SELF) != 0 { _ = inotify_rm_watch(fd, wd) }
            emit(.directoryRemoved(directory.url), &state)
            return
        }
        guard !nameBytes.isEmpty else { return }  // an event on the folder itself
        let name = state.names.name(decoding: nameBytes)
        if mask & UInt32(IN_ISDIR) != 0 {
            let child = directory.url.appendingPathComponent(name, isDirectory: true)
            if mask & (UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) != 0 {
                emit(.directoryCreated(child), &state)
            } else if mask & (UInt32(IN_DELETE) | UInt32(IN_MOVED_FROM)) != 0,
                      let childWatch = state.watchByPath.removeValue(forKey: child.path) {
                // Reported once: by whichever of this event and the child's own
                // DELETE_SELF/MOVE_SELF comes first (the other finds no watch).
                state.directoryByWatch[childWatch] = nil
                _ = inotify_rm_watch(fd, childWatch)
                emit(.directoryRemoved(child), &state)
            }
            return
        }
        emit(.changed(directory: directory.path, name: name), &state)
    }

    // MARK: - Errors

    static func watchError(errno code: Int32, directory: URL) -> FlippioError {
        switch code {
        case ENOSPC, EMFILE, ENFILE:
            return limitError(errno: code, directory: directory)
        case ENOENT, ENOTDIR:
            return FlippioError(.noSuchFile, "Cannot watch \(directory.path): it is not an existing folder.",
                                remedy: "Check the workspace folder; `flippio status` lists what is tracked.",
                                context: ["path": directory.path])
        case EACCES, EPERM:
            return FlippioError(.permissionDenied, "Cannot watch \(directory.path): permission denied.",
                                remedy: "Check the permissions of the workspace folder.",
                                context: ["path": directory.path])
        default:
            return FlippioError.internalError("inotify_add_watch(\(directory.path)) failed: \(String(cString: strerror(code))).")
        }
    }

    static func limitError(errno code: Int32, directory: URL?) -> FlippioError {
        let limits = InotifyLimits.current()
        let what = directory.map { "Cannot watch \($0.path)" } ?? "Cannot start watching"
        if code == ENOSPC {
            let current = limits.maxUserWatches.map { " (fs.inotify.max_user_watches = \($0))" } ?? ""
            return FlippioError(
                .watchLimitReached,
                "\(what): the per-user inotify watch limit is reached\(current); changes there are only found by rescans.",
                remedy: "Raise it with `sudo sysctl fs.inotify.max_user_watches=524288`, and keep it across reboots with `echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-flippio-inotify.conf`.",
                context: ["errno": String(code), "limit": limits.maxUserWatches.map(String.init) ?? "unknown"])
        }
        let current = limits.maxUserInstances.map { " (fs.inotify.max_user_instances = \($0))" } ?? ""
        return FlippioError(
            .watchLimitReached,
            "\(what): too many inotify instances or open files\(current).",
            remedy: "Close other file-watching programs or raise the limit with `sudo sysctl fs.inotify.max_user_instances=1024` (persist it in /etc/sysctl.d/90-flippio-inotify.conf); also check `ulimit -n`.",
            context: ["errno": String(code), "limit": limits.maxUserInstances.map(String.init) ?? "unknown"])
    }
}

/// The kernel's inotify limits, as `flippio doctor` prints them.
public struct InotifyLimits: Sendable, Equatable, Codable {
    /// `fs.inotify.max_user_watches`: folders one user may watch, over all programs.
    public var maxUserWatches: Int?
    /// `fs.inotify.max_user_instances`: inotify instances one user may open.
    public var maxUserInstances: Int?
    /// `fs.inotify.max_queued_events`: events queued per instance before `IN_Q_OVERFLOW`.
    public var maxQueuedEvents: Int?

    public init(maxUserWatches: Int?, maxUserInstances: Int?, maxQueuedEvents: Int?) {
        self.maxUserWatches = maxUserWatches
        self.maxUserInstances = maxUserInstances
        self.maxQueuedEvents = maxQueuedEvents
    }

    /// Reads the limits from `/proc/sys/fs/inotify` (nil for each value that cannot be read).
    public static func current(procDirectory: URL = URL(fileURLWithPath: "/proc/sys/fs/inotify")) -> InotifyLimits {
        func value(_ name: String) -> Int? {
            guard case .success(let data) = SidecarStore.readFile(procDirectory.appendingPathComponent(name).path) else { return nil }
            return Int(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return InotifyLimits(maxUserWatches: value("max_user_watches"),
                             maxUserInstances: value("max_user_instances"),
                             maxQueuedEvents: value("max_queued_events"))
    }
}

/// The file names of recent events, decoded once.
///
/// A save or a commit produces a burst of events for the same few names (`x.db-journal` created,
/// written, deleted; `x.db` written). A name longer than 15 UTF-8 bytes is a heap-allocated
/// `String`; this keeps the last few so that a recurring name is compared, not decoded and
/// allocated again. Shorter names are stored inline in the `String` and never allocate.
struct RecentNames {
    private var names: [String] = []
    private var next = 0
    static let capacity = 16
    /// The longest name stored inline in a `String` (no heap allocation) on 64-bit platforms.
    static let inlineLimit = 15

    /// The name spelled by `bytes` (UTF-8, no NUL), reused when it was seen recently.
    mutating func name(decoding bytes: UnsafeRawBufferPointer) -> String {
        if bytes.count <= Self.inlineLimit { return String(decoding: bytes, as: UTF8.self) }
        for candidate in names where candidate.utf8.count == bytes.count {
            let equal = candidate.utf8.withContiguousStorageIfAvailable { stored in
                memcmp(stored.baseAddress!, bytes.baseAddress!, bytes.count) == 0
            } ?? candidate.utf8.elementsEqual(bytes)
            if equal { return candidate }
        }
        let name = String(decoding: bytes, as: UTF8.self)
        // Only names that decode losslessly are kept: a malformed name decodes with U+FFFD and
        // would not compare equal to its own bytes next time (it is decoded each time instead).
        guard name.utf8.count == bytes.count else { return name }
        if names.count < Self.capacity {
            names.append(name)
        } else {
            names[next] = name
            next = (next + 1) % Self.capacity
        }
        return name
    }
}
