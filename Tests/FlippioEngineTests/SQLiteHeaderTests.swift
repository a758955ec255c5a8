import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("SQLiteHeader")
struct SQLiteHeaderTests {
    @Test func readsARollbackDatabaseMadeBySqlite3() throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"))
        let header = try SQLiteHeader.read(fileAt: db)
        #expect(header.pageSize == 4096)
        #expect(!header.isWAL)
        #expect(header.writeVersion == 1 && header.readVersion == 1)
        #expect(header.pageCount == 2)
    }

    @Test func readsAWALDatabase() throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), mode: "wal")
        #expect(try SQLiteHeader.read(fileAt: db).isWAL)
    }

    @Test func decodesA64KPageSize() throws {
        let dir = try TemporaryDirectory()
        let db = dir.child("big-pages.db")
        try Shell.sqlite(db, "PRAGMA page_size=65536; CREATE TABLE t(x);")
        #expect(try SQLiteHeader.read(fileAt: db).pageSize == 65536)
    }

    @Test func textThatArrivedInAPulledStreamIsNotSQLiteAndIsQuoted() throws {
        let dir = try TemporaryDirectory()
        let file = dir.child("app.db")
        try Data("run-as: package not debuggable: com.example.app\nmore text\n".utf8).write(to: file)
        let error = try #require(throws: FlippioError.self) { try SQLiteHeader.read(fileAt: file) }
        #expect(error.code == .notSQLite)
        #expect(error.message.contains(file.path))
        #expect(error.message.contains("run-as: package not debuggable: com.example.app"))
        #expect(!error.message.contains("more text"))
        #expect(error.context["text"] == "run-as: package not debuggable: com.example.app")
    }

    @Test func emptyBinaryAndTruncatedFilesAreNotSQLite() throws {
        let dir = try TemporaryDirectory()
        let empty = dir.child("empty.db")
        try Data().write(to: empty)
        let binary = dir.child("binary.db")
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) } + [0, 0xff, 0xfe]).write(to: binary)
        let real = try DBFixtures.makeDatabase(dir.child("real.db"))
        let truncated = dir.child("truncated.db")
        try Data(try Data(contentsOf: real).prefix(60)).write(to: truncated)

        for file in [empty, binary, truncated] {
            let error = try #require(throws: FlippioError.self) { try SQLiteHeader.read(fileAt: file) }
            #expect(error.code == .notSQLite)
            #expect(error.message.contains(file.path))
            #expect(error.context["text"] == nil, "binary bytes are not quoted as text")
        }
    }

    @Test func anInvalidPageSizeIsRejected() throws {
        let dir = try TemporaryDirectory()
        let db = try DBFixtures.makeDatabase(dir.child("x.db"))
        var bytes = try Data(contentsOf: db)
        bytes[16] = 0x03; bytes[17] = 0x00   // 768: not a power of two
        expectFlippioError(.notSQLite) { try SQLiteHeader(bytes: bytes, file: "x.db") }
        bytes[16] = 0x00; bytes[17] = 0x80   // 128: too small
        expectFlippioError(.notSQLite) { try SQLiteHeader(bytes: bytes, file: "x.db") }
    }

    @Test func aMissingFileIsDatabaseMissing() throws {
        let dir = try TemporaryDirectory()
        expectFlippioError(.databaseMissing) { try SQLiteHeader.read(fileAt: dir.child("none.db")) }
    }
}
