import Foundation
import Synchronization
import Testing
import TestSupport
@testable import FlippioEngine

/// Collects a watcher's events as they arrive, batch by batch.
final class EventLog: Sendable {
    private let log = Mutex<[[WatchEvent]]>([])
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(_ watcher: some FileWatching) {
        let stream = watcher.eventBatches
        task.withLock { $0 = Task { [weak self] in
            for await batch in stream { self?.append(batch) }
        } }
    }

    private func append(_ batch: [WatchEvent]) { log.withLock { $0.append(batch) } }

    /// Every event, in the order delivered.
    var all: [WatchEvent] { log.withLock { $0.flatMap { $0 } } }
    /// The batches as delivered (one per read of the kernel queue).
    var batches: [[WatchEvent]] { log.withLock { $0 } }
    func clear() { log.withLock { $0.removeAll() } }

    /// Waits until some event satisfies `match`.
    func waitFor(_ what: String, _ match: @escaping @Sendable (WatchEvent) -> Bool) async throws {
        try await waitUntil(what) { self.all.contains(where: match) }
    }

    deinit { task.withLock { $0?.cancel() } }
}

@Suite("InotifyWatcher")
struct WatcherTests {
    /// A folder with a tracked database `x.db`, a watcher on the folder and an index.
    struct Fixture: Sendable {
        let dir: TemporaryDirectory
        let db: URL
        let watcher: InotifyWatcher
        let log: EventLog
        var index: DatabaseIndex

        init(journalMode: String = "DELETE") throws {
            dir = try TemporaryDirectory("flippio-watch")
            db = dir.child("x.db")
            try Shell.sqlite(db, "PRAGMA journal_mode=\(journalMode); CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);")
            watcher = try InotifyWatcher()
            log = EventLog(watcher)
            try watcher.watch(directory: dir.url)
            index = DatabaseIndex()
            index.track(db)
        }

        /// Creates a file for each of `names` while the watcher does not read, so that all their
        /// records wait in the kernel's queue together; then lets it read.
        func writeWhileNotReading(_ names: [String]) throws {
            watcher.suspendReading()
            for name in names { try Data("x".utf8).write(to: dir.child(name)) }
            watcher.resumeReading()
        }

        /// The databases the events so far map to (ignored events dropped).
        var databasesTouched: Set<URL> {
            Set(log.all.compactMap { event in
                guard case .changed(let directory, let name) = event,
                      case .database(let db) = index.classify(directory: directory, name: name) else { return nil }
                return db
            })
        }

        func waitForDatabaseEvent(_ what: String) async throws {
            try await waitUntil(what) { databasesTouched == [db.standardizedFileURL] }
        }
    }

    @Test func sqliteEdit_rollbackJournal_reachesTheDatabase() async throws {
        let f = try Fixture()
        try Shell.sqlite(f.db, "INSERT INTO notes(body) VALUES ('hello');")
        try await f.waitForDatabaseEvent("an event for x.db after a rollback-journal insert")
        // The journal's events come first, and may be read a pause (InotifyWatcher.readPause) before the database's.
        try await f.log.waitFor("x.db itself written") { $0 == .changed(directory: f.dir.url.path, name: "x.db") }
        let names = Set(f.log.all.compactMap { if case .changed(_, let name) = $0 { name } else { nil } })
        #expect(names.isSubset(of: ["x.db", "x.db-journal"]), "\(names)")
    }

    @Test func sqliteEdit_walMode_reachesTheDatabase() async throws {
        let f = try Fixture(journalMode: "WAL")
        try Shell.sqlite(f.db, "PRAGMA journal_mode=WAL; INSERT INTO notes(body) VALUES ('wal');")
        try await f.waitForDatabaseEvent("an event for x.db after a WAL-mode insert")
        let names = Set(f.log.all.compactMap { if case .changed(_, let name) = $0 { name } else { nil } })
        #expect(names.contains("x.db-wal") || names.contains("x.db"), "\(names)")
        // Whatever happened to -shm never maps to the database.
        #expect(f.index.classify(directory: f.dir.url, name: "x.db-shm") == .ignored)
    }

    @Test func atomicRenameSave_arrivesAsTheDatabase() async throws {
        let f = try Fixture()
        let temp = f.dir.child(".x.db.editor-tmp")
        try FileManager.default.copyItem(at: f.db, to: temp)
        try Shell.sqlite(temp, "INSERT INTO notes(body) VALUES ('saved by rename');")
        f.log.clear()
        #expect(rename(temp.path, f.db.path) == 0)
        try await f.log.waitFor("MOVED_TO x.db") { $0 == .changed(directory: f.dir.url.path, name: "x.db") }
        #expect(f.databasesTouched == [f.db])
        // A second edit after the inode changed is still seen: the watch is on the folder.
        f.log.clear()
        try Shell.sqlite(f.db, "INSERT INTO notes(body) VALUES ('after rename');")
        try await f.waitForDatabaseEvent("an event after the inode was replaced")
    }

    @Test func touch_isAChange() async throws {
        let f = try Fixture()
        let touch = try #require(Products.systemTool("touch"))
        try Shell.run(touch, [f.db.path])
        try await f.waitForDatabaseEvent("an attribute event for x.db")
    }

    @Test func newSubfolder_isReported_andCanBeWatched_removalToo() async throws {
        let f = try Fixture()
        let sub = f.dir.url.appendingPathComponent("com.example/databases", isDirectory: true)
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        let first = f.dir.url.appendingPathComponent("com.example", isDirectory: true)
        try await f.log.waitFor("directoryCreated com.example") { $0 == .directoryCreated(first) }
        try f.watcher.watch(directory: first)
        try f.watcher.watch(directory: sub)
        #expect(f.watcher.watchedDirectories.count == 3)
        var index = f.index
        let subDB = sub.appendingPathComponent("y.db")
        index.track(subDB)
        try Shell.sqlite(subDB, "CREATE TABLE t(x);")
        try await waitUntil("an event for the database in the new subfolder") {
            f.log.all.contains { event in
                guard case .changed(let directory, let name) = event else { return false }
                return index.classify(directory: directory, name: name) == .database(subDB)
            }
        }
        try FileManager.default.removeItem(at: first)
        try await f.log.waitFor("directoryRemoved databases") { $0 == .directoryRemoved(sub) }
        try await f.log.waitFor("directoryRemoved com.example") { $0 == .directoryRemoved(first) }
        try await waitUntil("watches of removed folders dropped") { f.watcher.watchedDirectories == [f.dir.url] }
        let removals = f.log.all.filter { $0 == .directoryRemoved(first) }
        #expect(removals.count == 1, "reported once: \(f.log.all)")
    }

    @Test func longNames_recurringInOneRead_keepTheirSpelling() async throws {
        // Names over 15 bytes are reused from recent events (RecentNames): each must still be its own.
        let f = try Fixture()
        f.watcher.suspendReading()
        let names = ["a-much-longer-database.db-journal", "a-much-longer-database.db", "another-long-name.sqlite-wal",
                     "caf\u{e9}-\u{1F600}-unicode-name.db"]
        for round in 0..<3 {
            for name in names { try Data("\(round)".utf8).write(to: f.dir.child(name)) }
        }
        f.watcher.resumeReading()
        try await waitUntil("events for every name") {
            Set(f.log.all.compactMap { if case .changed(_, let name) = $0 { name } else { nil } }).isSuperset(of: names)
        }
        let seen = Set(f.log.all.compactMap { if case .changed(_, let name) = $0 { name } else { nil } })
        #expect(seen == Set(names), "\(seen)")
    }

    @Test func recentNames_reuseOnlyTheSameBytes() {
        var recent = RecentNames()
        func decode(_ text: String) -> String {
            Array(text.utf8).withUnsafeBytes { recent.name(decoding: $0) }
        }
        let names = (0..<40).map { "database-number-\($0).db-journal" }
        for _ in 0..<2 {
            for name in names { #expect(decode(name) == name) }
        }
        #expect(decode("short.db") == "short.db")
        let malformed: [UInt8] = Array("a-long-name-with-a-bad-byte-".utf8) + [0xFF] + Array(".db".utf8)
        let decoded = malformed.withUnsafeBytes { recent.name(decoding: $0) }
        #expect(decoded == String(decoding: malformed, as: UTF8.self))
        #expect(malformed.withUnsafeBytes { recent.name(decoding: $0) } == decoded)
    }

    @Test func sidecarWrites_areSidecarSignals_andTheirTempsIgnored() async throws {
        let f = try Fixture()
        try await SidecarStore().write(sampleSidecar(), forDatabase: f.db)
        try await f.log.waitFor("the sidecar's rename") { $0 == .changed(directory: f.dir.url.path, name: "x.db.flippio.json") }
        let classes = Set(f.log.all.compactMap { event -> DatabaseIndex.Classification? in
            guard case .changed(let directory, let name) = event else { return nil }
            return f.index.classify(directory: directory, name: name)
        })
        #expect(classes == [.sidecar(f.db), .ignored], "\(f.log.all)")
    }

    @Test func oneReadArrivesAsOneBatch_inKernelOrder_withIdenticalChangesMerged() async throws {
        let f = try Fixture()
        // Created, written and closed: three records per file, all queued before anything is read,
        // about 9 KB: one read of the 64 KB buffer.
        let names = (0..<100).map { String(format: "file-%03d", $0) }
        try f.writeWhileNotReading(names)
        try await waitUntil("events for every file") { Set(f.log.all.compactMap(\.changedName)).isSuperset(of: names) }
        let batches = f.log.batches
        #expect(batches.count == 1, "one read, one batch: \(batches.map(\.count))")
        #expect(batches.first?.compactMap(\.changedName) == names, "each file once, in the order written")
    }

    @Test func readsLargerThanTheBuffer_loseNothing_andKeepTheOrder() async throws {
        let limit = try #require(InotifyLimits.current().maxQueuedEvents)
        try #require(limit >= 4000, "max_queued_events \(limit) is too small for this test")
        let f = try Fixture()
        // 1,000 files × 3 records × 64 bytes (a 40-byte name padded to 48, and the header): about
        // 190 KB, so several reads of the 64 KB buffer.
        let names = (0..<1000).map { String(format: "a-file-with-a-forty-byte-long-name-%04d", $0) }
        try f.writeWhileNotReading(names)
        try await waitUntil("events for every file") { Set(f.log.all.compactMap(\.changedName)).isSuperset(of: names) }
        let batches = f.log.batches
        #expect(batches.count > 1, "more than one read")
        #expect(batches.allSatisfy { !$0.isEmpty }, "no empty batch")
        // A file's records may straddle two reads (then it is in both): its first event keeps the order.
        var firstSeen: [String] = []
        var seen = Set<String>()
        for name in f.log.all.compactMap(\.changedName) where seen.insert(name).inserted { firstSeen.append(name) }
        #expect(firstSeen == names)
        #expect(f.log.all.contains(.overflow) == false)
    }

    @Test func overflow_isReported_whenTheKernelQueueFills() async throws {
        let limit = try #require(InotifyLimits.current().maxQueuedEvents)
        try #require(limit <= 1_000_000, "max_queued_events \(limit) too large to flood in a test")
        let f = try Fixture()
        let a = f.dir.child("a"), b = f.dir.child("b")
        makeFile(atPath: a.path, contents: nil)
        makeFile(atPath: b.path, contents: nil)
        f.watcher.suspendReading()
        // Alternate two files: the kernel merges an event identical to the last one queued.
        var failures = 0
        for i in 0...(limit + 16) where utimensat(AT_FDCWD, (i % 2 == 0 ? a : b).path, nil, 0) != 0 {
            failures += 1
        }
        #expect(failures == 0)
        f.watcher.resumeReading()
        try await f.log.waitFor("IN_Q_OVERFLOW") { $0 == .overflow }
        // The watcher keeps working after an overflow.
        f.log.clear()
        try Shell.sqlite(f.db, "INSERT INTO notes(body) VALUES ('after overflow');")
        try await f.waitForDatabaseEvent("an event after the overflow")
    }

    @Test func close_endsTheStream() async throws {
        let dir = try TemporaryDirectory()
        let watcher = try InotifyWatcher()
        try watcher.watch(directory: dir.url)
        let drained = Task { for await _ in watcher.eventBatches {}; return true }
        watcher.close()
        #expect(await drained.value)
        #expect(throws: FlippioError.self) { try watcher.watch(directory: dir.url) }
    }

    @Test func watchingAMissingFolder_isNoSuchFile() throws {
        let watcher = try InotifyWatcher()
        let error = #expect(throws: FlippioError.self) { try watcher.watch(directory: URL(fileURLWithPath: "/nonexistent/flippio")) }
        #expect(error?.code == .noSuchFile)
    }

    @Test func watchLimitError_saysHowToRaiseIt() {
        let error = InotifyWatcher.watchError(errno: ENOSPC, directory: URL(fileURLWithPath: "/ws/dev"))
        #expect(error.code == .watchLimitReached)
        #expect(error.message.contains("/ws/dev"))
        #expect(error.remedy?.contains("sudo sysctl fs.inotify.max_user_watches=524288") == true)
        #expect(error.remedy?.contains("/etc/sysctl.d/") == true)
        #expect(InotifyWatcher.watchError(errno: EMFILE, directory: URL(fileURLWithPath: "/ws")).code == .watchLimitReached)
    }

    @Test func limits_areReadFromProc() throws {
        let limits = InotifyLimits.current()
        // The same numbers `cat` prints: /proc/sys files report a size of 0 and answer one read.
        func cat(_ name: String) throws -> Int? {
            Int(try Shell.run(URL(fileURLWithPath: "/bin/cat"), ["/proc/sys/fs/inotify/\(name)"]).out
                .trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(limits.maxUserWatches == (try cat("max_user_watches")))
        #expect(limits.maxQueuedEvents == (try cat("max_queued_events")))
        #expect(limits.maxUserInstances == (try cat("max_user_instances")))
        #expect((limits.maxQueuedEvents ?? 0) > 1)
        let dir = try TemporaryDirectory()
        try Data("1234\n".utf8).write(to: dir.child("max_user_watches"))
        #expect(InotifyLimits.current(procDirectory: dir.url) == InotifyLimits(maxUserWatches: 1234, maxUserInstances: nil, maxQueuedEvents: nil))
    }
}

extension WatchEvent {
    /// The file name of a `.changed` event (nil for the other kinds).
    var changedName: String? {
        if case .changed(_, let name) = self { name } else { nil }
    }
}
