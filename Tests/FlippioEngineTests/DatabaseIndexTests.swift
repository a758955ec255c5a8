import Foundation
import Testing
@testable import FlippioEngine

@Suite("DatabaseIndex")
struct DatabaseIndexTests {
    let root = URL(fileURLWithPath: "/ws")
    var folder: URL { root.appendingPathComponent("emulator-5554/com.example/data/databases", isDirectory: true) }
    var db: URL { folder.appendingPathComponent("notes.db", isDirectory: false) }

    func index() -> DatabaseIndex {
        var index = DatabaseIndex(stateDirectory: Workspace(root: root).stateDirectory)
        index.track(db)
        index.track(folder.appendingPathComponent("other.sqlite"))
        return index
    }

    @Test(arguments: ["notes.db", "notes.db-wal", "notes.db-journal"])
    func familyMembers_mapToTheDatabase(_ name: String) {
        #expect(index().classify(directory: folder, name: name) == .database(db))
    }

    @Test(arguments: [
        "notes.db-shm",                              // written by reads in WAL mode
        ".notes.db.flippio.json.tmp-k3j2",          // our own sidecar temp file
        "notes.device-20240101T120000.db",           // a conflict copy
        "notes.db.tmp", ".notes.db.swp", "notes.db~", // editors' temp files before their rename
        "notes", "unrelated.db", "notes.db-mjA1B2C3", // SQLite super-journal, unrelated files
    ])
    func notTheUsersEdit_isIgnored(_ name: String) {
        #expect(index().classify(directory: folder, name: name) == .ignored)
    }

    @Test func sidecars_signalTheirDatabase_trackedOrNot() {
        let index = index()
        #expect(index.classify(directory: folder, name: "notes.db.flippio.json") == .sidecar(db))
        #expect(index.classify(directory: folder, name: "new.db.flippio.json") == .sidecar(folder.appendingPathComponent("new.db")))
        #expect(index.classify(directory: folder, name: ".flippio.json") == .ignored)
    }

    @Test func stateFolder_isAlwaysIgnored() {
        var index = index()
        let snapshots = root.appendingPathComponent(".flippio/snapshots")
        index.track(snapshots.appendingPathComponent("notes.db"))
        #expect(index.classify(directory: snapshots, name: "notes.db") == .ignored)
        #expect(index.classify(directory: root.appendingPathComponent(".flippio"), name: "x.db.flippio.json") == .ignored)
        // Only the state folder itself: a sibling whose name starts the same is not it.
        #expect(index.classify(directory: root.appendingPathComponent(".flippio-other"), name: "x.db.flippio.json")
            == .sidecar(root.appendingPathComponent(".flippio-other/x.db", isDirectory: false)))
    }

    @Test func sameNameInAnotherFolder_isNotTheDatabase() {
        #expect(index().classify(directory: root, name: "notes.db") == .ignored)
        #expect(index().classify(directory: folder.appendingPathComponent("sub"), name: "notes.db-wal") == .ignored)
    }

    @Test func directoryKeys_ignoreTrailingSlashAndDots() {
        let index = index()
        let spelled = URL(fileURLWithPath: "/ws/emulator-5554/./com.example/data/databases/", isDirectory: true)
        #expect(index.classify(directory: spelled, name: "notes.db-wal") == .database(db))
    }

    @Test func untrack_forgetsTheDatabaseAndEmptyFolders() {
        var index = index()
        #expect(index.directories == [folder])
        #expect(index.databases == [db, folder.appendingPathComponent("other.sqlite")])
        index.untrack(db)
        #expect(!index.contains(db))
        #expect(index.classify(directory: folder, name: "notes.db-wal") == .ignored)
        #expect(index.classify(directory: folder, name: "other.sqlite-journal") == .database(folder.appendingPathComponent("other.sqlite")))
        index.untrack(folder.appendingPathComponent("other.sqlite"))
        #expect(index.directories.isEmpty)
    }

    @Test func folderPaths_asTheWatcherReportsThem_classifyLikeURLs() {
        let index = index()
        for name in ["notes.db", "notes.db-wal", "notes.db-journal", "notes.db-shm", "notes.db.flippio.json",
                     "new.db.flippio.json", ".notes.db.flippio.json.tmp-k3j2", "other.sqlite-journal", "unrelated.db"] {
            #expect(index.classify(directory: folder.path, name: name) == index.classify(directory: folder, name: name), "\(name)")
        }
        #expect(index.classify(directory: folder.path, name: "notes.db-wal") == .database(db))
        #expect(index.classify(directory: root.appendingPathComponent(".flippio/snapshots").path, name: "notes.db") == .ignored)
    }

    @Test func aTrackedName_winsOverTheFamilyOfAnother_andTheFamilyComesBackWhenItGoes() {
        // Room names databases without an extension: `cache` and `cache-wal` can both be databases.
        var index = DatabaseIndex()
        let plain = folder.appendingPathComponent("cache"), walNamed = folder.appendingPathComponent("cache-wal")
        index.track(walNamed)
        index.track(plain)
        #expect(index.classify(directory: folder.path, name: "cache-wal") == .database(walNamed))
        #expect(index.classify(directory: folder.path, name: "cache-journal") == .database(plain))
        #expect(index.classify(directory: folder.path, name: "cache-wal-journal") == .database(walNamed))
        #expect(index.classify(directory: folder.path, name: "cache-wal.flippio.json") == .sidecar(walNamed))
        index.untrack(walNamed)
        #expect(index.classify(directory: folder.path, name: "cache-wal") == .database(plain))
        #expect(index.classify(directory: folder.path, name: "cache-wal-journal") == .ignored)
        index.track(walNamed)
        index.untrack(plain)
        #expect(index.classify(directory: folder.path, name: "cache-wal") == .database(walNamed))
        #expect(index.classify(directory: folder.path, name: "cache-journal") == .ignored)
        #expect(index.classify(directory: folder.path, name: "cache.flippio.json") == .sidecar(plain))  // untracked: still a sidecar
    }

    @Test func aThousandDatabases_stayConstantTimePerLookup() {
        // Not a timing test: checks every lookup of a large index is right (the dictionary does the O(1)).
        var index = DatabaseIndex()
        let dbs = (0..<1000).map { folder.appendingPathComponent("d\($0 % 10)/db\($0).db") }
        for db in dbs { index.track(db) }
        for db in dbs {
            #expect(index.classify(directory: db.deletingLastPathComponent(), name: db.lastPathComponent + "-wal") == .database(db))
        }
        #expect(index.directories.count == 10)
    }
}
