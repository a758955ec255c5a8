import Foundation
import GRDB

/// Warm, read-only SQLite connections to the tracked databases.
///
/// The agent never touches a live database file except through SQLite in this pool: a POSIX
/// `close()` of any other descriptor on the file would drop the locks SQLite holds on it for the
/// whole process. Each connection is a GRDB `DatabaseQueue` opened with `SQLITE_OPEN_READONLY`
/// and the default journal-mode configuration, so the pool never changes the user's database:
///
/// - no journal-mode change (a `DatabasePool` would switch the file to WAL: never used here);
/// - no writes, and no checkpoint: a read-only connection cannot checkpoint, not even when it is
///   the last one to close a WAL database (the `-wal` is left exactly as it was);
/// - a read-only connection still sees WAL content that is not checkpointed yet. To do so SQLite
///   needs the `-shm` (and `-wal`): if they are missing it creates them, empty, like any reader.
///
/// Connections are opened on first use (or ahead with ``warm(_:)``), handed out by ``connection(for:)``, which
/// compares the file's device and inode (`stat`, which opens nothing) with those at open time and
/// reopens after an atomic-rename save, and evicted least-recently-used beyond ``capacity``.
///
/// For example:
///
/// ```swift
/// let pool = ConnectionPool()
/// let queue = try await pool.connection(for: file)
/// if try await !pool.isWriterActive(file) { let snapshot = try snapshotter.snapshot(of: queue, named: "x") }
/// ```
///
/// - Important: a connection a caller still holds is never closed under it (GRDB must not use a
///   closed connection): eviction and ``close(_:)`` drop the pool's reference, and the connection
///   closes when its last holder releases it.
/// - Important: an atomic-rename save over a database in WAL mode while any connection is open
///   (the user's or ours) pairs the new file with the old `-wal`/`-shm`, a documented SQLite
///   corruption path. Pulled copies are folded into rollback-journal mode, so this arises only
///   when the user switched a copy to WAL themselves.
public actor ConnectionPool {
    /// How many connections the pool has opened, reopened and evicted (for tests and `doctor`).
    public struct Counters: Sendable, Equatable {
        /// Every SQLite open, reopens included.
        public var opens = 0
        /// Opens caused by a changed inode or device (an atomic-rename save).
        public var reopens = 0
        /// Connections closed to stay within capacity.
        public var evictions = 0
        public init() {}
    }

    private struct Entry {
        let queue: DatabaseQueue
        let identity: FileIdentity
        var lastUse: UInt64
    }

    /// At most this many connections stay open.
    public let capacity: Int
    private let busyTimeout: TimeInterval
    private var entries: [String: Entry] = [:]
    private var useClock: UInt64 = 0
    /// Opens, reopens and evictions so far.
    public private(set) var counters = Counters()

    /// Creates an empty pool.
    ///
    /// - parameters:
    ///     - capacity: the most connections kept open; the least recently used is closed beyond it.
    ///       The default is 32.
    ///     - busyTimeout: how long a read waits for a writer's EXCLUSIVE lock (rollback mode)
    ///       before failing with ``FlippioError/Code/databaseBusy``. Waiting never blocks the writer.
    ///       The default is 1 second.
    public init(capacity: Int = 32, busyTimeout: TimeInterval = 1) {
        self.capacity = max(1, capacity)
        self.busyTimeout = busyTimeout
    }

    /// The databases that have an open connection, most recently used first.
    public var openDatabases: [URL] {
        entries.sorted { $0.value.lastUse > $1.value.lastUse }.map { URL(fileURLWithPath: $0.key) }
    }

    /// Opens connections to `databases` (at most ``capacity`` of them) ahead of their use.
    ///
    /// The agent no longer calls it: its start-up checks run after READY and open connections on
    /// demand. Kept for tests and benchmarks that need a warm pool.
    ///
    /// - returns: the databases that could not be opened, with why; the others are warm.
    @discardableResult
    public func warm(_ databases: [URL]) async -> [URL: FlippioError] {
        var failures: [URL: FlippioError] = [:]
        for database in databases.prefix(capacity) {
            do { _ = try connection(for: database) } catch {
                failures[database] = FlippioError.database(error, path: database.path, action: "open")
            }
        }
        return failures
    }

    /// The warm connection to `database`, opened (or reopened) when needed.
    ///
    /// The connection is read-only. It is reopened when the file's device or inode changed since
    /// it was opened (an editor saved by writing a new file and renaming it over the old one).
    ///
    /// Standardizing the URL costs more than the rest of a warm acquire: a caller that acquires
    /// often keeps the path and calls ``connection(atPath:)``.
    ///
    /// - throws: ``FlippioError/Code/databaseMissing``, ``FlippioError/Code/notSQLite``,
    ///   ``FlippioError/Code/permissionDenied``.
    public func connection(for database: URL) throws -> DatabaseQueue {
        try connection(atPath: Self.key(database))
    }

    /// The warm connection to the database at `path`, opened (or reopened) when needed.
    ///
    /// The same as ``connection(for:)`` without building the key: when warm, one `stat` (the
    /// check that the file is still the one opened: a save by rename replaces the inode) and one
    /// dictionary lookup.
    ///
    /// - parameter path: the database's standardized absolute path (`standardizedFileURL.path`
    ///   of its URL); another spelling of the same file gets a connection of its own.
    /// - throws: ``FlippioError/Code/databaseMissing``, ``FlippioError/Code/notSQLite``,
    ///   ``FlippioError/Code/permissionDenied``.
    public func connection(atPath key: String) throws -> DatabaseQueue {
        useClock += 1
        guard let identity = FileIdentity(path: key) else {
            closeEntry(key)
            throw FlippioError(.databaseMissing, "\(key) does not exist.",
                               remedy: "Pull the database again, or run `flippio forget` to stop tracking it.",
                               context: ["path": key])
        }
        if let index = entries.index(forKey: key) {
            if entries.values[index].identity == identity {
                entries.values[index].lastUse = useClock
                return entries.values[index].queue
            }
            // Close the old connection BEFORE opening the new one (when nobody else holds it):
            // both would open the same `x.db-shm` path, and closing the old descriptor later
            // would drop the new connection's locks on it (POSIX locks belong to the process).
            closeEntry(key)
            counters.reopens += 1
        }
        let queue = try open(key, expected: identity)
        entries[key] = Entry(queue: queue.queue, identity: queue.identity, lastUse: useClock)
        evictBeyondCapacity()
        return queue.queue
    }

    /// Closes the connection to `database`, if open.
    ///
    /// A connection still held by a caller (a snapshot in progress) stays usable and closes when
    /// the caller releases it.
    public func close(_ database: URL) {
        closeEntry(Self.key(database))
    }

    /// Closes every connection.
    public func closeAll() {
        for key in Array(entries.keys) { closeEntry(key) }
    }

    /// Whether another process holds a write transaction on `database` right now.
    ///
    /// True while a RESERVED, PENDING or EXCLUSIVE lock is held on the file (rollback-journal
    /// mode), or the WAL write lock in its `-shm` (WAL mode). It reads the kernel's lock table
    /// (`/proc/locks`) for the file's and the `-shm`'s inode: it takes no lock, never waits, and
    /// opens nothing; see `WriterLockProbe`. Without `/proc/locks` it asks SQLite's
    /// `xCheckReservedLock` through the warm connection (rollback mode only).
    ///
    /// - throws: ``FlippioError/Code/databaseMissing`` when the file does not exist.
    public func isWriterActive(_ database: URL) throws -> Bool {
        let key = Self.key(database)
        guard FileIdentity(path: key) != nil else {
            throw FlippioError(.databaseMissing, "\(key) does not exist.",
                               remedy: "Pull the database again, or run `flippio forget` to stop tracking it.",
                               context: ["path": key])
        }
        if let locks = WriterLockProbe.heldLocks() {
            return WriterLockProbe.writerActive(path: key, locks: locks)
        }
        let queue = try connection(atPath: key)
        return queue.inDatabase { WriterLockProbe.reservedLockHeld($0) }
    }

    // MARK: - Private

    /// The key of a database: its standardized path.
    private static func key(_ database: URL) -> String {
        database.standardizedFileURL.path
    }

    private func open(_ path: String, expected: FileIdentity) throws -> (queue: DatabaseQueue, identity: FileIdentity) {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.label = "flippio.pool"
        configuration.busyMode = .timeout(busyTimeout)
        // A page cache of 64 KiB instead of SQLite's 2 MB: a snapshot reads each page once, so a
        // cache kept between pushes only holds memory (up to 2 MB per warm connection).
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA cache_size = -64") }
        var identity = expected
        // A save may replace the file between our stat and SQLite's open: check again after opening.
        for _ in 0..<3 {
            let queue: DatabaseQueue
            do {
                queue = try DatabaseQueue(path: path, configuration: configuration)
            } catch {
                throw FlippioError.database(error, path: path, action: "open")
            }
            counters.opens += 1
            guard let after = FileIdentity(path: path), after != identity else { return (queue, identity) }
            try? queue.close()
            identity = after
        }
        throw FlippioError(.databaseBusy, "\(path) keeps being replaced while the agent opens it.",
                           remedy: nil, context: ["path": path])
    }

    private func closeEntry(_ key: String) {
        guard var queue = entries.removeValue(forKey: key)?.queue else { return }
        // GRDB crashes when a closed queue is used, so close explicitly only when nobody else
        // holds it. Otherwise the last holder's release closes it (GRDB closes on deinit).
        // A failed close (unfinalized statements) also leaves closing to deinit.
        if isKnownUniquelyReferenced(&queue) {
            try? queue.close()
        }
    }

    private func evictBeyondCapacity() {
        while entries.count > capacity {
            guard let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse })?.key else { return }
            closeEntry(oldest)
            counters.evictions += 1
        }
    }
}
