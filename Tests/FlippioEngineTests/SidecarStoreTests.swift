import Foundation
import Synchronization
import Testing
import TestSupport
@testable import FlippioEngine

/// A sidecar with dates on whole milliseconds (the precision the JSON keeps).
func sampleSidecar(state: Sidecar.SyncState = .clean, hash: String = "aa") -> Sidecar {
    let origin = Sidecar.Origin(platform: .android, deviceID: "emulator-5554", deviceModel: "Pixel 7",
                                appID: "com.example.notes", remotePath: "/data/data/com.example.notes/databases/notes.db",
                                access: .runAs)
    var sidecar = Sidecar(origin: origin, pulledAt: Date(timeIntervalSince1970: 1_700_000_000.125),
                          fingerprintAtPull: DeviceFingerprint(mainHash: "m", walHash: "w"), contentHash: hash)
    sidecar.state = state
    sidecar.lastError = .init(code: .deviceOffline, message: "offline", remedy: "plug it in",
                              at: Date(timeIntervalSince1970: 1_700_000_100.5))  // dyadic fractions: milliseconds survive the JSON exactly
    sidecar.recordPush(.init(at: Date(timeIntervalSince1970: 1_700_000_200.75), contentHash: hash, bytes: 4096,
                             durationMilliseconds: 12, changedTables: ["notes": "3 → 4"]))
    return sidecar
}

@Suite("SidecarStore")
struct SidecarStoreTests {
    private func database(in dir: TemporaryDirectory) -> URL {
        let db = dir.child("x.db")
        makeFile(atPath: db.path, contents: Data())
        return db
    }

    @Test func roundTrip_prettySortedISO8601() async throws {
        let dir = try TemporaryDirectory()
        let db = database(in: dir)
        let sidecar = sampleSidecar()
        try await SidecarStore().write(sidecar, forDatabase: db)

        #expect(try await SidecarStore().read(forDatabase: db) == sidecar)
        #expect(try SidecarStore.load(forDatabase: db) == sidecar)
        let text = try String(contentsOf: Sidecar.url(forDatabase: db), encoding: .utf8)
        #expect(text.contains("\"pulledAt\" : \"2023-11-14T22:13:20.125Z\""))
        #expect(text.contains("\"remotePath\" : \"/data/data/com.example.notes/databases/notes.db\""), "slashes not escaped")
        let keys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { $0.split(separator: "\"")[1] }
        #expect(keys == keys.sorted(), "sorted keys")
        #expect(keys.first == "contentHashScheme", "a new sidecar records how its content hashes were made")
        // No temp files left behind.
        #expect(listing(dir.url) == ["x.db", "x.db.flippio.json"])
    }

    @Test func read_acceptsHandEditedDatesWithoutFraction() async throws {
        let dir = try TemporaryDirectory()
        let db = database(in: dir)
        try await SidecarStore().write(sampleSidecar(), forDatabase: db)
        let url = Sidecar.url(forDatabase: db)
        let text = try String(contentsOf: url, encoding: .utf8).replacingOccurrences(of: "20.125Z", with: "20Z")
        try text.write(to: url, atomically: false, encoding: .utf8)
        #expect(try SidecarStore.load(forDatabase: db).pulledAt == Date(timeIntervalSince1970: 1_700_000_000))
    }

    @Test func read_missingSidecar_isNotTracked() async throws {
        let dir = try TemporaryDirectory()
        let error = await #expect(throws: FlippioError.self) { try await SidecarStore().read(forDatabase: dir.child("x.db")) }
        #expect(error?.code == .notTracked)
        #expect(error?.message.contains(dir.child("x.db").path) == true)
    }

    @Test func corruptSidecar_isReported_andNotOverwritten() async throws {
        let dir = try TemporaryDirectory()
        let db = database(in: dir)
        let url = Sidecar.url(forDatabase: db)
        let corrupt = Data("{\"schemaVersion\": 1, \"origin\": ".utf8)
        try corrupt.write(to: url)
        let store = SidecarStore()

        let readError = await #expect(throws: FlippioError.self) { try await store.read(forDatabase: db) }
        #expect(readError?.code == .sidecarUnreadable)
        #expect(readError?.message.contains(url.path) == true)
        #expect(readError?.remedy?.contains("flippio forget") == true)

        let writeError = await #expect(throws: FlippioError.self) { try await store.write(sampleSidecar(), forDatabase: db) }
        #expect(writeError?.code == .sidecarUnreadable)
        #expect(try Data(contentsOf: url) == corrupt, "kept as it was")

        try await store.write(sampleSidecar(), forDatabase: db, replacingUnreadable: true)
        #expect(try await store.read(forDatabase: db) == sampleSidecar())
    }

    @Test func wrongShape_namesTheProblem() async throws {
        let dir = try TemporaryDirectory()
        let db = database(in: dir)
        try Data("{\"schemaVersion\": 1}".utf8).write(to: Sidecar.url(forDatabase: db))
        let error = #expect(throws: FlippioError.self) { try SidecarStore.load(forDatabase: db) }
        #expect(error?.code == .sidecarUnreadable)
        #expect(error?.message.contains("missing key") == true, "\(String(describing: error))")
    }

    @Test func newerSchema_isTooNew_andNotOverwritten() async throws {
        let dir = try TemporaryDirectory()
        let db = database(in: dir)
        let url = Sidecar.url(forDatabase: db)
        let future = Data("{\"schemaVersion\": 99, \"somethingNew\": true}".utf8)
        try future.write(to: url)
        let store = SidecarStore()
        let error = await #expect(throws: FlippioError.self) { try await store.read(forDatabase: db) }
        #expect(error?.code == .sidecarTooNew)
        #expect(error?.remedy?.contains("Upgrade flippio") == true)
        let writeError = await #expect(throws: FlippioError.self) { try await store.write(sampleSidecar(), forDatabase: db) }
        #expect(writeError?.code == .sidecarTooNew)
        #expect(try Data(contentsOf: url) == future)
    }

    @Test func loadSummaries_readsEverySidecar_inOrder_eachWithItsOwnError() async throws {
        let dir = try TemporaryDirectory()
        var databases: [URL] = []
        for index in 0..<40 {
            let db = dir.child("db\(index).db")
            makeFile(atPath: db.path, contents: Data())
            var sidecar = sampleSidecar(state: index == 5 ? .conflict : .clean)
            sidecar.origin.remotePath = "/data/data/com.example.notes/databases/db\(index).db"
            sidecar.follow = index == 6 ? false : nil
            try await SidecarStore().write(sidecar, forDatabase: db)
            databases.append(db)
        }
        try Data("{".utf8).write(to: Sidecar.url(forDatabase: databases[7]))
        try Data("{\"schemaVersion\": 99}".utf8).write(to: Sidecar.url(forDatabase: databases[21]))
        databases.insert(dir.child("missing.db"), at: 30)

        let results = await SidecarStore.loadSummaries(forDatabases: databases, concurrency: 3)
        #expect(results.count == databases.count)
        for (database, result) in zip(databases, results) {
            let name = database.deletingPathExtension().lastPathComponent
            switch (name, result) {
            case ("db7", .failure(let error)): #expect(error.code == .sidecarUnreadable)
            case ("db21", .failure(let error)): #expect(error.code == .sidecarTooNew)
            case ("missing", .failure(let error)): #expect(error.code == .notTracked)
            case (_, .success(let summary)):
                #expect(summary.origin.remotePath.hasSuffix("/\(name).db"), "in the order asked")
                #expect(summary.state == (name == "db5" ? .conflict : .clean))
                #expect(summary.follow == (name == "db6" ? false : nil))
            case (_, .failure(let error)): Issue.record("\(name): \(error)")
            }
        }
    }

    /// The agent records a write's digest before its rename; until the rename lands the file still
    /// holds the write before, and a look then must see our own write, not another process's (it
    /// would adopt a state the agent had left). Anything else on disk is another process's.
    @Test func diskState_ownsTheWriteBeforeTheOneInFlight_notAnOlderOneNorAForeignOne() async throws {
        let dir = try TemporaryDirectory()
        let db = database(in: dir)
        let url = Sidecar.url(forDatabase: db)
        let store = SidecarStore()
        var first = sampleSidecar(state: .clean, hash: "a1")
        try await store.write(first, forDatabase: db)
        let firstBytes = try Data(contentsOf: url)
        first.state = .dirty
        try await store.write(first, forDatabase: db)
        let secondBytes = try Data(contentsOf: url)
        #expect(store.diskState(forDatabase: db) == .ownWrite)

        // As if the second write's rename had not landed yet: the file holds the first.
        try firstBytes.write(to: url)
        #expect(store.diskState(forDatabase: db) == .ownWrite)

        // A third write: the first is now two writes back, so the same bytes are someone else's.
        first.state = .pushing
        try await store.write(first, forDatabase: db)
        try firstBytes.write(to: url)
        #expect(store.diskState(forDatabase: db) == .changed(sampleSidecar(state: .clean, hash: "a1")))
        try secondBytes.write(to: url)
        #expect(store.diskState(forDatabase: db) == .ownWrite)

        var foreign = first
        foreign.state = .conflict
        try SidecarFile.write(foreign, to: url, replacingUnreadable: false)
        #expect(store.diskState(forDatabase: db) == .changed(foreign))
    }

    @Test func enqueue_coalesces_toTheNewestPendingWrite() async throws {
        let dir = try TemporaryDirectory()
        let db = database(in: dir)
        let store = SidecarStore()
        let queue = store.writeQueue
        queue.holdForTesting()  // the drainer cannot start: every submission stays pending
        for i in 0..<100 { store.enqueue(sampleSidecar(hash: "h\(i)"), forDatabase: db) }
        #expect(try await store.read(forDatabase: db).localContentHash == "h99", "read-your-writes")
        #expect(!FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: db).path))
        queue.releaseForTesting()
        await store.flush()
        #expect(try SidecarStore.load(forDatabase: db).localContentHash == "h99")
        #expect(queue.writesPerformed == 1)
    }

    @Test func awaitedWrites_keepOrder_andFlushWaitsForEnqueued() async throws {
        let dir = try TemporaryDirectory()
        let store = SidecarStore()
        let databases = (0..<20).map { dir.child("db\($0).db") }
        for (i, db) in databases.enumerated() { store.enqueue(sampleSidecar(hash: "e\(i)"), forDatabase: db) }
        await store.flush()
        for (i, db) in databases.enumerated() {
            #expect(try SidecarStore.load(forDatabase: db).localContentHash == "e\(i)")
        }
        for i in 0..<5 { try await store.write(sampleSidecar(hash: "w\(i)"), forDatabase: databases[0]) }
        #expect(try SidecarStore.load(forDatabase: databases[0]).localContentHash == "w4")
    }

    @Test func failedEnqueuedWrite_goesToTheErrorHandler() async throws {
        let dir = try TemporaryDirectory()
        let failures = Mutex<[FlippioError]>([])
        let store = SidecarStore { _, error in failures.withLock { $0.append(error) } }
        store.enqueue(sampleSidecar(), forDatabase: dir.child("missing-folder/x.db"))
        await store.flush()
        let recorded = failures.withLock { $0 }
        #expect(recorded.map(\.code) == [.workspaceWriteFailed])
        let error = await #expect(throws: FlippioError.self) {
            try await store.write(sampleSidecar(), forDatabase: dir.child("missing-folder/x.db"))
        }
        #expect(error?.code == .workspaceWriteFailed)
    }

    /// A crash after the temp file was written and before the rename leaves the temp file: the
    /// old sidecar stays the truth, the temp is ignored everywhere and cleaned later.
    @Test func crashBetweenTempAndRename_keepsOldSidecar_ignoresTemp() async throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let db = try workspace.localURL(for: remote("/data/x.db"))
        makeFile(atPath: db.path, contents: Data())
        let store = SidecarStore()
        try await store.write(sampleSidecar(hash: "old"), forDatabase: db)
        // What the crash leaves: a complete-or-partial temp beside the sidecar.
        let temp = db.deletingLastPathComponent().appendingPathComponent(".x.db.flippio.json.tmp-crashed")
        let newer = try SidecarStore.encode(sampleSidecar(hash: "new"))
        try newer.prefix(newer.count / 2).write(to: temp)

        #expect(try await SidecarStore().read(forDatabase: db).localContentHash == "old")
        #expect(try workspace.trackedDatabases() == [db])
        var index = DatabaseIndex(stateDirectory: workspace.stateDirectory)
        index.track(db)
        #expect(index.classify(directory: db.deletingLastPathComponent(), name: temp.lastPathComponent) == .ignored)

        try await store.write(sampleSidecar(hash: "next"), forDatabase: db)
        #expect(try SidecarStore.load(forDatabase: db).localContentHash == "next")
        #expect(workspace.removeStaleTemporaryFiles(olderThan: 0) == 1)
        #expect(listing(db.deletingLastPathComponent()) == ["x.db", "x.db.flippio.json"])
    }

    // MARK: - Full and read-only file systems (needs root to mount a tiny tmpfs)

    static var canMount: Bool {
        getuid() == 0 && Products.systemTool("mount") != nil && FileManager.default.fileExists(atPath: "/proc/filesystems")
            && ((try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8))?.contains("tmpfs") ?? false)
    }

    private func withTinyTmpfs(_ body: (URL) async throws -> Void) async throws {
        let dir = try TemporaryDirectory("flippio-tmpfs")
        let mountPoint = dir.child("mnt")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        let mount = try #require(Products.systemTool("mount"))
        let umount = try #require(Products.systemTool("umount"))
        let mounted = try Shell.run(mount, ["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mountPoint.path])
        try #require(mounted.status == 0, "mount failed: \(mounted.err)")
        defer { _ = try? Shell.run(umount, ["-l", mountPoint.path]) }
        try await body(mountPoint)
    }

    @Test(.enabled(if: canMount)) func diskFull_isWorkspaceWriteFailed_andKeepsOldSidecar() async throws {
        try await withTinyTmpfs { mnt in
            let db = mnt.appendingPathComponent("x.db")
            makeFile(atPath: db.path, contents: Data())
            let store = SidecarStore()
            try await store.write(sampleSidecar(hash: "old"), forDatabase: db)
            // Fill the file system.
            let filler = mnt.appendingPathComponent("filler")
            makeFile(atPath: filler.path, contents: nil)
            let handle = try #require(FileHandle(forWritingAtPath: filler.path))
            while (try? handle.write(contentsOf: Data(count: 4096))) != nil {}
            try? handle.close()
            var big = sampleSidecar(hash: "new")
            for i in 0..<200 { big.recordPush(.init(at: Date(), contentHash: String(repeating: "f", count: 64), bytes: Int64(i), durationMilliseconds: i)) }
            let error = await #expect(throws: FlippioError.self) { try await store.write(big, forDatabase: db) }
            #expect(error?.code == .workspaceWriteFailed)
            #expect(error?.context["errno"] == String(ENOSPC))
            #expect(try SidecarStore.load(forDatabase: db).localContentHash == "old")
            #expect(listing(mnt).filter { $0.contains(".tmp-") }.isEmpty, "temp removed")
        }
    }

    @Test(.enabled(if: canMount)) func readOnlyFileSystem_isWorkspaceWriteFailed() async throws {
        try await withTinyTmpfs { mnt in
            let db = mnt.appendingPathComponent("x.db")
            makeFile(atPath: db.path, contents: Data())
            try await SidecarStore().write(sampleSidecar(hash: "old"), forDatabase: db)
            let mount = try #require(Products.systemTool("mount"))
            let remounted = try Shell.run(mount, ["-o", "remount,ro", mnt.path])
            try #require(remounted.status == 0, "remount failed: \(remounted.err)")
            let error = await #expect(throws: FlippioError.self) { try await SidecarStore().write(sampleSidecar(hash: "new"), forDatabase: db) }
            #expect(error?.code == .workspaceWriteFailed)
            #expect(error?.context["errno"] == String(EROFS))
            #expect(error?.remedy?.contains("read-only") == true)
        }
    }
}
