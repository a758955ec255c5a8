import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("ContentIdentity")
struct ContentIdentityTests {
    @Test func walReopen_changesHeaderBytesOnly_andIsTheSameContent() throws {
        let dir = try TemporaryDirectory("identity")
        let pushed = try MergeFixtures.openHelper(dir.child("pushed.db"))
        let device = try MergeFixtures.copy(pushed, "device.db")
        // The app opens its database in WAL mode and only reads.
        try Shell.sqlite(device, "PRAGMA journal_mode=WAL; SELECT count(*) FROM contacts;")
        let (a, b) = (try Data(contentsOf: pushed), try Data(contentsOf: device))
        #expect(a[18] == 1 && b[18] == 2, "bytes 18–19 differ")
        #expect(try ContentHash.sha256(fileAt: pushed) != ContentHash.sha256(fileAt: device))
        #expect(try ContentIdentity.samePages(pushed, device))
        #expect(try ContentIdentity.hash(ofDatabaseAt: pushed) == ContentIdentity.hash(ofDatabaseAt: device))
        #expect(try ContentIdentity.sameContent(pushed, device))
    }

    @Test func aNoOpWrite_changesTheChangeCounterOnly_andKeepsTheHash() throws {
        let dir = try TemporaryDirectory("identity-counter")
        let a = try MergeFixtures.openHelper(dir.child("a.db"))
        let b = try MergeFixtures.copy(a, "b.db")
        try Shell.sqlite(b, "UPDATE contacts SET name = name;")
        #expect(try ContentHash.sha256(fileAt: a) != ContentHash.sha256(fileAt: b))
        #expect(try ContentIdentity.hash(ofDatabaseAt: a) == ContentIdentity.hash(ofDatabaseAt: b))
    }

    @Test func vacuum_movesPagesButIsTheSameContent() throws {
        let dir = try TemporaryDirectory("identity-vacuum")
        let a = try MergeFixtures.room(dir.child("a.db"), notes: 200)
        try Shell.sqlite(a, "DELETE FROM notes WHERE id % 3 = 0;")
        let b = try MergeFixtures.copy(a, "b.db")
        try Shell.sqlite(b, "VACUUM;")
        #expect(try !ContentIdentity.samePages(a, b))
        #expect(try ContentIdentity.hash(ofDatabaseAt: a) != ContentIdentity.hash(ofDatabaseAt: b))
        #expect(try ContentIdentity.sameContent(a, b))
    }

    @Test(arguments: [
        "UPDATE contacts SET phone = '1' WHERE _id = 1",
        "INSERT INTO log VALUES (3, 'x')",
        "DELETE FROM log WHERE at = 1; INSERT INTO log VALUES (1, 'start')",  // same rows: not a change
        "INSERT INTO log VALUES (2, 'sync')",  // a duplicate row in a key-less table is a change
        "UPDATE settings SET value = 8 WHERE key = 'volume'",
        "PRAGMA user_version = 13",
        "CREATE INDEX contacts_phone ON contacts(phone)",
    ])
    func contentChanges(sql: String) throws {
        let dir = try TemporaryDirectory("identity-change")
        let a = try MergeFixtures.openHelper(dir.child("a.db"))
        let b = try MergeFixtures.copy(a, "b.db")
        try Shell.sqlite(b, sql)
        let same = sql.hasPrefix("DELETE FROM log WHERE at = 1")
        #expect(try ContentIdentity.sameContent(a, b) == same, "\(sql)")
    }

    @Test func aNonDatabaseIsNotSQLite_aMissingFileIsDatabaseMissing() throws {
        let dir = try TemporaryDirectory("identity-errors")
        let a = try MergeFixtures.openHelper(dir.child("a.db"))
        let text = dir.child("text.db")
        try Data("run-as: package not debuggable: com.example\n".utf8).write(to: text)
        #expect(throws: FlippioError.self) { try ContentIdentity.hash(ofDatabaseAt: text) }
        let missing = try #require(throws: FlippioError.self) { try ContentIdentity.sameContent(a, dir.child("nope.db")) }
        #expect(missing.code == .databaseMissing)
    }

    /// The file hash is what `sha256sum` on a device prints for the same bytes, and the content
    /// hash is `sha256sum` of the bytes with the volatile header ranges zeroed: both computed
    /// side by side over a file of several reads (5 MB), the last one short.
    @Test func bothHashesOfAFileOfSeveralReads_areWhatSha256sumPrints() throws {
        let dir = try TemporaryDirectory("identity-sha")
        let db = try MergeFixtures.blobs(dir.child("big.db"), rows: 1500, bytes: 4000)
        var bytes = try Data(contentsOf: db)
        #expect(bytes.count > 5 << 20 && bytes.count % (1 << 20) != 0)
        let hashes = try ContentHash.hashes(ofDatabaseAt: db)
        #expect(hashes.file == (try Self.sha256sum(db)))
        for range in ContentHash.volatileHeaderRanges { bytes.replaceSubrange(range, with: repeatElement(0, count: range.count)) }
        let masked = dir.child("masked.bin")
        try bytes.write(to: masked)
        #expect(hashes.content == (try Self.sha256sum(masked)))
        #expect(hashes.content == (try ContentHash.sha256(databaseAt: db)))
        #expect(hashes.file == (try ContentHash.sha256(fileAt: db)))
    }

    static func sha256sum(_ file: URL) throws -> String {
        let tool = try #require(Products.systemTool("sha256sum"))
        let result = try Shell.run(tool, [file.path])
        return String(result.out.prefix(64))
    }
}
