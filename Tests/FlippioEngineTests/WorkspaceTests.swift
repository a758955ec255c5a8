import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// A remote database for the workspace tests.
func remote(_ path: String, device: String = "emulator-5554", app: String = "com.example.notes",
            platform: Platform = .android) -> RemoteDatabase {
    RemoteDatabase(platform: platform, deviceID: device, appID: app, path: path, access: .runAs)
}

/// Creates (or truncates) a file with `contents`.
func makeFile(atPath path: String, contents: Data?) {
    _ = FileManager.default.createFile(atPath: path, contents: contents)
}

/// Every file and folder under `url`, relative, sorted (symlinks listed, not followed).
func listing(_ url: URL) -> [String] {
    guard let enumerator = FileManager.default.enumerator(atPath: url.path) else { return [] }
    return (enumerator.allObjects as? [String] ?? []).sorted()
}

@Suite("Workspace")
struct WorkspaceTests {
    // MARK: - Default root

    @Test func defaultRoot_prefersFlippioWorkspace() {
        let root = Workspace.defaultRoot(environment: ["FLIPPIO_WORKSPACE": "/srv/ws", "XDG_DATA_HOME": "/x", "HOME": "/home/a"])
        #expect(root.path == "/srv/ws")
    }

    @Test func defaultRoot_usesXDGDataHome() {
        let root = Workspace.defaultRoot(environment: ["XDG_DATA_HOME": "/data/xdg", "HOME": "/home/a"])
        #expect(root.path == "/data/xdg/flippio")
    }

    @Test func defaultRoot_fallsBackToLocalShare_andIgnoresRelativeXDG() {
        #expect(Workspace.defaultRoot(environment: ["HOME": "/home/a"]).path == "/home/a/.local/share/flippio")
        #expect(Workspace.defaultRoot(environment: ["HOME": "/home/a", "XDG_DATA_HOME": "rel/dir"]).path
            == "/home/a/.local/share/flippio")
        #expect(Workspace.defaultRoot(environment: ["HOME": "/home/a", "FLIPPIO_WORKSPACE": "~/ws"]).path == "/home/a/ws")
    }

    // MARK: - Local paths

    @Test func localURL_mirrorsDeviceAppAndRemotePath_withPrivateFolders() throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.child("ws"))
        let url = try workspace.localURL(for: remote("/data/data/com.example.notes/databases/notes.db"))
        #expect(url.path == dir.child("ws/emulator-5554/com.example.notes/data/data/com.example.notes/databases/notes.db").path)
        #expect(!FileManager.default.fileExists(atPath: url.path))
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: url.deletingLastPathComponent().path, isDirectory: &isDirectory))
        #expect(isDirectory.boolValue)
        let mode = try #require(Workspace.lstatMode(dir.child("ws/emulator-5554").path))
        #expect(mode & 0o777 == 0o700)
        // Repeated slashes are harmless; a second call finds the folders in place.
        let again = try workspace.localURL(for: remote("//data/data//com.example.notes/databases/notes.db"))
        #expect(again == url)
    }

    @Test func localURL_acceptsIOSContainerPaths_andUnicode() throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let url = try workspace.localURL(for: remote("/Documents/Müsli Notes.sqlite", device: "00008030-001A2C3E0E22802E",
                                                     app: "com.example.Notes", platform: .ios))
        #expect(url.path.hasSuffix("00008030-001A2C3E0E22802E/com.example.Notes/Documents/Müsli Notes.sqlite"))
    }

    static let hostile: [(device: String, app: String, path: String, why: String)] = [
        ("emulator-5554", "com.example", "/data/../../../etc/passwd", "dot-dot"),
        ("emulator-5554", "com.example", "../x.db", "relative dot-dot"),
        ("emulator-5554", "com.example", "/data/./x.db", "dot"),
        ("emulator-5554", "com.example", "/data/x.db/..", "trailing dot-dot"),
        ("emulator-5554", "com.example", "", "empty path"),
        ("emulator-5554", "com.example", "///", "only slashes"),
        ("emulator-5554", "com.example", "/data/x\u{0}.db", "NUL"),
        ("emulator-5554", "com.example", "/data/x\n.db", "newline"),
        ("emulator-5554", "com.example", "/data/x\u{7F}.db", "DEL"),
        ("emulator-5554", "com.example", "/data/x\u{1B}[31m.db", "escape sequence"),
        ("emulator-5554", "com.example", "/data/" + String(repeating: "a", count: 256) + ".db", "long name"),
        ("emulator-5554", "com.example", String(repeating: "/abcdefgh", count: 460) + "/x.db", "long path"),
        ("emulator-5554", "com.example", "/data/x.db.flippio.json", "sidecar name"),
        ("emulator-5554", "com.example", "/data/.x.db.flippio.json.tmp-abc", "sidecar temp name"),
        ("a/b", "com.example", "/x.db", "device id with slash"),
        ("..", "com.example", "/x.db", "device id dot-dot"),
        (".flippio", "com.example", "/x.db", "device id naming the state folder"),
        ("", "com.example", "/x.db", "empty device id"),
        ("emulator-5554", "../../etc", "/x.db", "app id with slash"),
        ("emulator-5554", ".", "/x.db", "app id dot"),
        ("emulator-5554", "com.ex\u{0}ample", "/x.db", "app id NUL"),
        ("emulator-5554", String(repeating: "p", count: 300), "/x.db", "long app id"),
    ]

    @Test(arguments: hostile)
    func localURL_refusesHostileInput(_ input: (device: String, app: String, path: String, why: String)) throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.child("ws"))
        let error = #expect(throws: FlippioError.self, "\(input.why)") {
            try workspace.localURL(for: remote(input.path, device: input.device, app: input.app))
        }
        #expect(error?.code == .unsafePath, "\(input.why)")
        #expect(error?.remedy != nil)
        #expect(error?.message.contains("\n") == false, "messages stay on one line")
        // Nothing was created for it: the workspace root holds no device folder.
        #expect(listing(dir.url).allSatisfy { $0 == "ws" }, "\(input.why): \(listing(dir.url))")
    }

    @Test func localURL_namesTheOffendingComponent() throws {
        let workspace = Workspace(root: URL(fileURLWithPath: "/nonexistent-flippio-root"))
        let error = #expect(throws: FlippioError.self) { try workspace.localURL(for: remote("/data/../x.db")) }
        #expect(error?.message.contains("\"..\"") == true)
        let deviceError = #expect(throws: FlippioError.self) { try workspace.localURL(for: remote("/x.db", device: "a/b")) }
        #expect(deviceError?.message.contains("device id \"a/b\"") == true)
    }

    @Test func localURL_refusesSymlinkedFolderInsideWorkspace_andWritesNothingOutside() throws {
        let dir = try TemporaryDirectory()
        let outside = dir.child("outside")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        let workspace = Workspace(root: dir.child("ws"))
        // A folder on the way is replaced by a symlink pointing out of the workspace.
        _ = try workspace.localURL(for: remote("/data/a.db"))
        let appFolder = dir.child("ws/emulator-5554/com.example.notes")
        try FileManager.default.removeItem(at: appFolder)
        try FileManager.default.createSymbolicLink(at: appFolder, withDestinationURL: outside)

        let error = #expect(throws: FlippioError.self) {
            try workspace.localURL(for: remote("/data/data/com.example.notes/databases/notes.db"))
        }
        #expect(error?.code == .unsafePath)
        #expect(error?.message.contains("symlink") == true)
        #expect(listing(outside).isEmpty, "nothing created outside: \(listing(outside))")
    }

    @Test func localURL_refusesSymlinkAtTheDatabaseFile() throws {
        let dir = try TemporaryDirectory()
        let target = dir.child("outside.db")
        makeFile(atPath: target.path, contents: Data("x".utf8))
        let workspace = Workspace(root: dir.child("ws"))
        let url = try workspace.localURL(for: remote("/data/x.db"))
        try FileManager.default.createSymbolicLink(at: url, withDestinationURL: target)
        let error = #expect(throws: FlippioError.self) { try workspace.localURL(for: remote("/data/x.db")) }
        #expect(error?.code == .unsafePath)
    }

    @Test func localURL_refusesAFileWhereAFolderMustBe() throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let url = try workspace.localURL(for: remote("/data/x.db"))
        makeFile(atPath: url.path, contents: Data())
        let error = #expect(throws: FlippioError.self) { try workspace.localURL(for: remote("/data/x.db/y.db")) }
        #expect(error?.code == .unsafePath)
    }

    // MARK: - Tracked databases

    @Test func trackedDatabases_findsSidecars_skipsStateFolderAndSymlinks_sorted() throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let b = try workspace.localURL(for: remote("/data/b.db"))
        let a = try workspace.localURL(for: remote("/data/a.db", app: "com.other"))
        let untracked = try workspace.localURL(for: remote("/data/c.db"))
        let hidden = try workspace.localURL(for: remote("/data/.hidden/.h.db"))
        for db in [a, b, untracked, hidden] { makeFile(atPath: db.path, contents: Data()) }
        for db in [a, b, hidden] { makeFile(atPath: Sidecar.url(forDatabase: db).path, contents: Data("{}".utf8)) }
        // Agent files that look like sidecars but are not tracked databases.
        try FileManager.default.createDirectory(at: workspace.stateDirectory.appendingPathComponent("snapshots"), withIntermediateDirectories: true)
        makeFile(atPath: workspace.stateDirectory.appendingPathComponent("snapshots/s.db.flippio.json").path, contents: Data())
        makeFile(atPath: b.deletingLastPathComponent().appendingPathComponent(".b.db.flippio.json.tmp-1").path, contents: Data())
        // A symlinked folder pointing elsewhere is not entered.
        let elsewhere = try TemporaryDirectory()
        makeFile(atPath: elsewhere.child("z.db.flippio.json").path, contents: Data())
        try FileManager.default.createSymbolicLink(at: dir.child("linked"), withDestinationURL: elsewhere.url)

        #expect(try workspace.trackedDatabases() == [hidden, b, a], "sorted by path; hidden names below the device folder count")
        #expect(try Workspace(root: dir.child("missing")).trackedDatabases() == [])
        let folders = try workspace.watchableDirectories()
        #expect(folders.first == workspace.root)
        #expect(folders.contains(b.deletingLastPathComponent()))
        #expect(!folders.contains { $0.path.hasPrefix(workspace.stateDirectory.path) || $0.path.contains("linked") })
    }

    @Test func symlinkedRoot_isTheUsersChoice_andFollowed() throws {
        let dir = try TemporaryDirectory()
        let real = dir.child("real")
        try FileManager.default.createDirectory(at: real, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: dir.child("link"), withDestinationURL: real)
        let workspace = Workspace(root: dir.child("link"))
        let db = try workspace.localURL(for: remote("/data/x.db"))
        makeFile(atPath: Sidecar.url(forDatabase: db).path, contents: Data("{}".utf8))
        #expect(try workspace.trackedDatabases() == [db])
        #expect(try workspace.watchableDirectories().first == workspace.root)
        #expect(FileManager.default.fileExists(atPath: real.appendingPathComponent("emulator-5554").path))
    }

    @Test func scan_findsFoldersDatabasesAndTemps_inOneWalk_enteringEveryFolder() throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let a = try workspace.localURL(for: remote("/data/a.db"))
        let b = try workspace.localURL(for: remote("/data/.cache/b.db"))
        for db in [a, b] {
            makeFile(atPath: db.path, contents: Data())
            makeFile(atPath: Sidecar.url(forDatabase: db).path, contents: Data("{}".utf8))
        }
        let temp = b.deletingLastPathComponent().appendingPathComponent(".b.db.flippio.json.tmp-1")
        makeFile(atPath: temp.path, contents: Data("{".utf8))
        try FileManager.default.createDirectory(at: workspace.stateDirectory.appendingPathComponent("locks"), withIntermediateDirectories: true)

        var entered: [String] = []
        let scan = try workspace.scan { entered.append($0.path) }
        #expect(scan.databases == [b, a], "sorted by path")
        #expect(scan.temporaryFiles == [temp.path])
        #expect(scan.directories.first == workspace.root)
        #expect(scan.directories.contains(b.deletingLastPathComponent()), "hidden folders below the device folder count")
        #expect(entered.sorted() == scan.directories.map(\.path).sorted(), "each folder found is entered (and watched) once")
        #expect(!entered.contains { $0.hasPrefix(workspace.stateDirectory.path) })

        // Below a folder (a new one the watcher reported), nothing hidden is skipped.
        let data = a.deletingLastPathComponent()
        let below = try workspace.scan(below: data)
        #expect(below.directories.map(\.path) == [data.path, b.deletingLastPathComponent().path])
        #expect(below.databases == [b, a])

        #expect(workspace.removeStaleTemporaryFiles(olderThan: 0, found: scan.temporaryFiles) == 1)
        #expect(!FileManager.default.fileExists(atPath: temp.path))
    }

    @Test func removeStaleTemporaryFiles_removesOnlyOldTemps() throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let db = try workspace.localURL(for: remote("/data/x.db"))
        let temp = db.deletingLastPathComponent().appendingPathComponent(".x.db.flippio.json.tmp-abc")
        let other = db.deletingLastPathComponent().appendingPathComponent(".x.db.swp")
        makeFile(atPath: temp.path, contents: Data("{".utf8))
        makeFile(atPath: other.path, contents: Data())
        #expect(workspace.removeStaleTemporaryFiles(olderThan: 60) == 0, "a fresh temp may be another process's write")
        #expect(workspace.removeStaleTemporaryFiles(olderThan: 60, now: Date().addingTimeInterval(120)) == 1)
        #expect(!FileManager.default.fileExists(atPath: temp.path))
        #expect(FileManager.default.fileExists(atPath: other.path))
    }

    // MARK: - Locks

    @Test func lock_excludesASecondHolder_untilReleased() async throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let db = try workspace.localURL(for: remote("/data/x.db"))
        let first = try workspace.lock(for: remote("/data/x.db"))
        let second = try workspace.lock(for: remote("/data/x.db"))
        let otherDatabase = try workspace.lock(for: remote("/data/y.db"))
        let sameFileOtherDevice = try workspace.lock(for: remote("/data/x.db", device: "emulator-5556"))
        #expect(first.lockFile == second.lockFile)
        #expect(first.lockFile.path.hasPrefix(workspace.stateDirectory.path))
        #expect(try first.tryAcquire())
        #expect(try !second.tryAcquire())
        #expect(try otherDatabase.tryAcquire(), "locks are per database")
        #expect(try sameFileOtherDevice.tryAcquire(), "the same path on another device is another database")
        await #expect(throws: FlippioError.self) { try await second.acquire(timeout: .milliseconds(50)) }
        first.release()
        try await second.acquire(timeout: .seconds(10))
        #expect(second.isHeld)
        #expect(!FileManager.default.fileExists(atPath: db.path), "the database file itself is never touched")
    }

    @Test func lock_excludesAnotherProcess() async throws {
        let flock = try #require(Products.systemTool("flock"))
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        let lock = try workspace.lock(for: remote("/data/x.db"))
        #expect(try lock.tryAcquire())
        #expect(try Shell.run(flock, ["-n", lock.lockFile.path, "true"]).status != 0, "held against other processes")
        lock.release()
        #expect(try Shell.run(flock, ["-n", lock.lockFile.path, "true"]).status == 0)
    }

    @Test func lock_waitingIsReleasedWhenTheHolderGoesAway() async throws {
        let dir = try TemporaryDirectory()
        let workspace = Workspace(root: dir.url)
        var holder: DatabaseLock? = try workspace.lock(for: remote("/data/x.db"))
        #expect(try holder!.tryAcquire())
        let waiter = try workspace.lock(for: remote("/data/x.db"))
        let waiting = Task { try await waiter.acquire(timeout: .seconds(20)) }
        holder = nil  // deallocation closes the descriptor: the lock is free
        try await waiting.value
        #expect(waiter.isHeld)
        _ = holder
    }
}
