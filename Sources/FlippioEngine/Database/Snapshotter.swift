import Dispatch
import Foundation
import GRDB
import Synchronization

/// A checked, self-contained copy of a database's committed state, ready to push.
public struct Snapshot: Sendable, Equatable {
    /// The snapshot file (in the ``Snapshotter``'s private folder).
    public var url: URL
    /// The content identity of the snapshot (``ContentHash/sha256(databaseAt:)``): equal for
    /// snapshots of an unchanged database, whatever version of SQLite made them.
    ///
    /// With ``Snapshotter/defersContentHash`` it is computed after the snapshot is returned, on a
    /// thread of its own: reading it waits for it (and throws when the file could not be read).
    public var contentHash: String {
        get throws { try contentIdentity.value() }
    }
    /// The content hash, known or being computed.
    var contentIdentity: PendingHash
    /// SHA-256 (hex) of the snapshot file's bytes: what the device's copy must hash to after a push.
    public var fileHash: String
    /// The snapshot file's size in bytes.
    public var size: Int64
    /// Row counts per ordinary table, read from the snapshot.
    public var tableRowCounts: [String: Int]
    /// How long the copy and its checks took (for the trace log; not part of equality).
    var steps = StepTimes()
    /// The snapshot's pages compared with ``Snapshotter/comparingWith`` while it was copied, when
    /// it was given and copied by pages (not part of equality).
    var comparison: PageDelta.Comparison?

    public static func == (a: Snapshot, b: Snapshot) -> Bool {
        (a.url, try? a.contentHash, a.fileHash, a.size, a.tableRowCounts) == (b.url, try? b.contentHash, b.fileHash, b.size, b.tableRowCounts)
    }
}

/// How a ``Snapshotter`` copies a database.
public enum SnapshotMethod: String, Sendable, CaseIterable {
    /// SQLite's online backup API (`sqlite3_backup_*`), all pages in one step: a page-for-page
    /// copy, so `PRAGMA quick_check` on the copy sees any damage the original has.
    case backup
    /// `VACUUM INTO`: a compacted copy rebuilt row by row. Smaller (no free pages) and
    /// independent of the original's page layout, but it rebuilds indexes, which can hide a
    /// damaged index: the original is therefore quick_checked too, which costs one more read.
    case vacuumInto
}

/// Takes consistent snapshots of databases through SQLite.
///
/// A snapshot is the committed state as a reader sees it (WAL content that is not checkpointed
/// yet included, an open write transaction excluded), written to a new file in a private folder,
/// set to `journal_mode=DELETE` (header bytes 18/19 are 1: a plain file with no side files),
/// checked with `PRAGMA quick_check`, and hashed (not fsynced: nothing trusts it without its hash).
///
/// The hash is deterministic: snapshotting an unchanged database gives the same bytes, whether
/// or not it was opened, read, `touch`ed, or checkpointed by another connection in between.
/// The header fields that vary with the original's history are not copied from it:
///
/// - the file change counter (offset 24) and version-valid-for number (92) of the copy are
///   counted by the copy's own commits, which are the same for every snapshot (the original's
///   counter, which rollback-mode commits increment even when they change nothing, is not kept);
/// - the schema cookie (offset 40) is set by SQLite for the new file: 1 with `.backup`, the
///   original's plus one with `.vacuumInto`; it changes only with the schema;
/// - `SQLITE_VERSION_NUMBER` (offset 96) is that of the library here; the hash leaves it out
///   (``ContentHash/sha256(databaseAt:)``), so a libsqlite3 upgrade changes no content identity.
///
/// No header byte is patched by hand. A real edit changes a page, so it changes the hash.
///
/// For example:
///
/// ```swift
/// let snapshotter = Snapshotter(directory: stateFolder.appendingPathComponent("snapshots"))
/// let snapshot = try snapshotter.snapshot(of: try await pool.connection(for: file), named: "x.db")
/// if snapshot.contentHash != sidecar.lastPushedHash { push(snapshot.url) }
/// ```
public struct Snapshotter: Sendable {
    /// The private folder the snapshot files are written to (created when needed).
    public let directory: URL
    /// How the copy is made. The default is ``SnapshotMethod/backup``.
    public let method: SnapshotMethod

    /// A base copy to compare the snapshot's pages with as they are copied (see
    /// ``Snapshot/comparison``): the page delta a push may send, without another read.
    var comparingWith: URL?

    /// Whether the content hash of a snapshot copied by pages is computed after ``snapshot(of:named:)``
    /// returns, on a thread of its own at a lower priority, instead of beside the copy (see
    /// ``Snapshot/contentHash``). The default is false.
    ///
    /// For a push that needs the content hash only once the device has its copy: the copy then
    /// waits for one hash instead of two (at 200 MB, ~130 ms of CPU off the path to the device).
    /// The snapshot file must not be rewritten until the hash is read (it is hashed through a
    /// descriptor of its own, so it may be renamed or deleted).
    var defersContentHash = false

    /// Runs between the copy and the check that the original was not written meanwhile (tests).
    var afterCopyForTesting: (@Sendable () -> Void)?

    /// Whether the copy is checked with `PRAGMA quick_check` and its rows counted. The default
    /// is true.
    ///
    /// - Important: turn it off only for a source this process has just checked itself and that
    ///   nobody else can write, such as a pulled file in a private folder after
    ///   ``PulledDatabase/fold(_:syncToDisk:)``: the backup API copies it page for page, so a second check
    ///   only reads the whole file again to find what the first one found. The copy's header is
    ///   still checked, and ``Snapshot/tableRowCounts`` is then empty.
    var checksCopy = true

    public init(directory: URL, method: SnapshotMethod = .backup) {
        self.directory = directory
        self.method = method
    }

    /// Snapshots the database behind `connection` into `directory/named`, replacing an older one.
    ///
    /// - parameters:
    ///     - connection: a (read-only) connection to the database, e.g. from ``ConnectionPool``.
    ///     - named: the snapshot's file name in ``directory`` (one path component).
    /// - throws: ``FlippioError/Code/corruptDatabase`` with the quick_check output,
    ///   ``FlippioError/Code/notSQLite``, ``FlippioError/Code/databaseBusy`` (a writer holds an
    ///   exclusive lock longer than the connection's busy timeout; retry),
    ///   ``FlippioError/Code/workspaceWriteFailed``. The original is never modified.
    public func snapshot(of connection: DatabaseQueue, named: String) throws -> Snapshot {
        let source = connection.path
        guard !named.isEmpty, !named.contains("/"), named != ".", named != ".." else {
            throw FlippioError(.invalidArgument, "Invalid snapshot name \"\(named)\".",
                               remedy: "This is a bug in flippio; please report it with the log.")
        }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw FlippioError.workspaceWriteFailed(path: directory.path, errno: errno == 0 ? EIO : errno)
        }
        let final = directory.appendingPathComponent(named)
        let temporary = directory.appendingPathComponent(".\(named).\(UUID().uuidString.prefix(8)).tmp")
        defer { Self.remove(temporary) }

        // SQLite's locks keep out SQLite writers only. A program that rewrites the file in place
        // (truncate, then write) leaves an empty file for a moment, which SQLite reads as a valid
        // empty database: that must never become a snapshot, so the copy counts only when the
        // file was not written while it was taken. A save that merely coincided with the copy
        // (the user's next commit) is copied again at once, a few times, before it is a retry.
        var attempt = 0
        var steps = StepTimes()
        var copied: PageCopy.Copied?
        while true {
            attempt += 1
            Self.remove(temporary)  // VACUUM INTO needs a new file
            let before = FileSignature(URL(fileURLWithPath: source))
            if before.size == 0 {
                throw FlippioError(
                    .notSQLite, "\(source) is empty (0 bytes): not an SQLite database flippio would push over the app's.",
                    remedy: "If a program is rewriting it, let it finish: the agent looks again at the next save. "
                        + "Otherwise pull it again with `flippio pull`.",
                    context: ["path": source])
            }
            do {
                copied = try copy(connection, to: temporary, source: source)
                afterCopyForTesting?()
                if Self.changed(source, since: before) {
                    if attempt < Self.copyAttempts { continue }
                    throw Self.changedWhileCopying(source)
                }
                do {
                    try Self.prepare(temporary)
                } catch {
                    throw FlippioError.database(error, path: temporary.path, action: "check the snapshot")
                }
                break
            } catch let error as FlippioError where error.code == .databaseBusy {
                throw error
            } catch {
                // A torn read of a file being rewritten is a change, not a damaged database.
                if Self.changed(source, since: before) {
                    if attempt < Self.copyAttempts { continue }
                    throw Self.changedWhileCopying(source)
                }
                throw error
            }
        }
        let tableRowCounts: [String: Int]
        let hash: (content: PendingHash, file: String)
        if let copied {
            // Copied by pages, hashed on the way: only the check is left.
            steps.lap(copied.contentHash == nil ? "copy and file hash" : "copy and hashes")
            hash = (try copied.contentHash.map(PendingHash.known) ?? Self.hashingContent(of: temporary), copied.fileHash)
            tableRowCounts = try Self.checkAndHash(temporary, what: "The snapshot of \(source)", check: checksCopy, hash: false).rowCounts
            steps.lap("quick_check")
        } else {
            steps.lap("copy")
            // The copy is complete and nothing writes it any more: check it and hash it side by
            // side (three whole-file passes, on as many threads; the file is in the page cache).
            let checked = try Self.checkAndHash(temporary, what: "The snapshot of \(source)", check: checksCopy, hash: true)
            guard let hashes = checked.hash else { throw FlippioError.workspaceWriteFailed(path: temporary.path, errno: EIO) }
            (tableRowCounts, hash) = (checked.rowCounts, (.known(hashes.content), hashes.file))
            steps.lap(checksCopy ? "quick_check and hashes" : "hashes")
        }
        // Not fsynced: a snapshot is a transient file that is sent, then kept as the base, and
        // neither is trusted without its hash (the device checks the SHA-256 of what it received;
        // a base is re-hashed before a merge, and a page delta against a damaged base fails the
        // device's check and goes as a whole file). Syncing 200 MB cost more than the rest.
        guard rename(temporary.path, final.path) == 0 else {
            throw FlippioError.workspaceWriteFailed(path: final.path, errno: errno)
        }
        return Snapshot(url: final, contentIdentity: hash.content, fileHash: hash.file, size: DatabaseInspector.fileSize(final),
                        tableRowCounts: tableRowCounts, steps: steps, comparison: copied?.comparison)
    }

    /// Describes how row counts changed, for the agent's log: `["users": "3 → 4"]`.
    ///
    /// Tables whose count did not change are left out; an added table reads `"new → 2"`, a
    /// dropped one `"5 → dropped"`.
    public func rowCountChanges(from old: [String: Int], to new: [String: Int]) -> [String: String] {
        Self.rowCountChanges(from: old, to: new)
    }

    /// See ``rowCountChanges(from:to:)``.
    public static func rowCountChanges(from old: [String: Int], to new: [String: Int]) -> [String: String] {
        var changes: [String: String] = [:]
        for table in Set(old.keys).union(new.keys) {
            switch (old[table], new[table]) {
            case let (a?, b?) where a != b: changes[table] = "\(a) → \(b)"
            case let (nil, b?): changes[table] = "new → \(b)"
            case let (a?, nil): changes[table] = "\(a) → dropped"
            default: break
            }
        }
        return changes
    }

    // MARK: - Private

    /// Copies the database into `temporary`; the copy's hashes when it was copied by pages.
    private func copy(_ connection: DatabaseQueue, to temporary: URL, source: String) throws -> PageCopy.Copied? {
        do {
            switch method {
            case .backup:
                // A rollback-journal file is copied a chunk at a time under the connection's read
                // lock, to the same bytes the backup API would write, and hashed on the way
                // (``PageCopy``); a WAL file, or one it declines, page by page by the backup API.
                if let copied = try PageCopy.copy(connection, to: temporary, comparingWith: comparingWith,
                                                  hashingContent: !defersContentHash) { return copied }
                let destination = try DatabaseQueue(path: temporary.path, configuration: Self.privateConfiguration)
                // A new private file, deleted on any failure and never trusted without its hash: no
                // rollback journal and no fsync per commit while it is filled (with them the copy
                // took 2.5× as long). Neither setting is stored in the file, whose bytes are the same.
                try destination.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA journal_mode = OFF")
                    try db.execute(sql: "PRAGMA synchronous = OFF")
                }
                try connection.backup(to: destination)
                try destination.close()
            case .vacuumInto:
                try connection.inDatabase { db in
                    try DatabaseInspector.quickCheck(db, path: source, what: "\(source)")
                    try db.execute(sql: "VACUUM INTO ?", arguments: [temporary.path])
                }
            }
            return nil
        } catch {
            throw FlippioError.database(error, path: source, action: "snapshot")
        }
    }

    /// Starts hashing the content of the finished copy at `file` on a thread of its own, through a
    /// descriptor opened now (the copy is renamed next, and may be deleted before it is read).
    private static func hashingContent(of file: URL) throws -> PendingHash {
        let fd = open(file.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: file.path, errno: errno) }
        return .computing(BackgroundValue(name: "flippio.content-hash") {
            defer { close(fd) }
            return try ContentHash.sha256(databaseIn: fd, at: file)
        })
    }

    /// How many copies a snapshot takes at most while the original keeps being written.
    static let copyAttempts = 3

    /// Whether `source` or its side files were written since `before` was taken.
    private static func changed(_ source: String, since before: FileSignature) -> Bool {
        FileSignature(URL(fileURLWithPath: source)) != before
    }

    /// ``FlippioError/Code/databaseBusy`` (retryable): written during every copy.
    private static func changedWhileCopying(_ source: String) -> FlippioError {
        FlippioError(.databaseBusy, "\(source) changed while flippio was copying it.",
                     remedy: "Nothing to do: the agent copies it again once it is quiet.",
                     context: ["path": source])
    }

    /// Our own files only: they are not shared, so a lock means a bug; fail fast.
    private static var privateConfiguration: Configuration {
        var configuration = Configuration()
        configuration.label = "flippio.snapshot"
        configuration.busyMode = .immediateError
        return configuration
    }

    /// Makes the copy a plain rollback-journal file: the backup API copies page 1 as it is, so a
    /// WAL original gives a copy marked WAL (bytes 18/19 = 2); leaving WAL mode rewrites them to 1
    /// and removes the -wal/-shm. The header is checked first: SQLite would open some damaged
    /// headers as an empty database.
    private static func prepare(_ file: URL) throws {
        guard try SQLiteHeader.read(fileAt: file).isWAL else { return }
        let queue = try DatabaseQueue(path: file.path, configuration: privateConfiguration)
        try queue.writeWithoutTransaction { db in
            let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode = DELETE")
            guard mode == "delete" else {
                throw FlippioError.internalError("Could not switch the snapshot \(file.path) out of WAL mode (got \(mode ?? "nil")).")
            }
        }
        try queue.close()
    }

    /// `quick_check` and row counts of the finished copy (unless `check` is false), and its two
    /// hashes (unless `hash` is false; nil when they could not be read), side by side: the check
    /// is a pass over the file, the hashes another, and neither needs the other.
    private static func checkAndHash(_ file: URL, what: String, check: Bool, hash hashing: Bool)
        throws -> (rowCounts: [String: Int], hash: (content: String, file: String)?) {
        let counts = Mutex<Result<[String: Int], any Error>>(.success([:]))
        let hash = Mutex<Result<(content: String, file: String), any Error>?>(nil)
        DispatchQueue.concurrentPerform(iterations: 2) { part in
            if part == 0 {
                guard hashing else { return }
                let result = Result { try ContentHash.hashes(ofDatabaseAt: file) }
                hash.withLock { $0 = result }
            } else if check {
                let result = Result { () throws -> [String: Int] in
                    var configuration = privateConfiguration
                    DatabaseInspector.mapWholeFile(&configuration)
                    let queue = try DatabaseQueue(path: file.path, configuration: configuration)
                    defer { try? queue.close() }
                    return try queue.read { db in
                        try DatabaseInspector.quickCheck(db, path: file.path, what: what)
                        return try DatabaseInspector.tableRowCounts(db)
                    }
                }
                counts.withLock { $0 = result }
            }
        }
        let rowCounts: [String: Int]
        do { rowCounts = try counts.withLock { $0 }.get() } catch {
            throw FlippioError.database(error, path: file.path, action: "check the snapshot")
        }
        return (rowCounts, try? hash.withLock { $0 }?.get())
    }

    private static func remove(_ file: URL) {
        for path in [file.path] + DatabaseInspector.sideFiles(of: file).map(\.path) { unlink(path) }
    }
}
