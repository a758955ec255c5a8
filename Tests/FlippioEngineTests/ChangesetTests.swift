import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("Changeset")
struct ChangesetTests {
    @Test func insertsUpdatesDeletes_withBlobsNullsAndAWithoutRowidTable_areDecoded() throws {
        let dir = try TemporaryDirectory("changeset")
        let base = try MergeFixtures.openHelper(dir.child("base.db"))
        let other = try MergeFixtures.copy(base, "other.db")
        try Shell.sqlite(other, """
            UPDATE contacts SET phone = NULL, avatar = X'00ff' WHERE _id = 1;
            DELETE FROM contacts WHERE _id = 2;
            INSERT INTO contacts VALUES (4, 'Dee', NULL, X'');
            UPDATE settings SET value = 1.25 WHERE key = 'ratio';
            INSERT INTO log VALUES (3, 'not in a changeset: no primary key');
            """)
        let changeset = try Changeset.between(base: base, and: other)
        #expect(!changeset.isEmpty)
        let byKey = Dictionary(changeset.changes.map { ("\($0.table) \($0.primaryKey.map(\.value.description).joined())", $0) },
                               uniquingKeysWith: { a, _ in a })
        #expect(byKey.count == 4)

        let update = try #require(byKey["contacts 1"])
        #expect(update.operation == .update)
        #expect(update.columns == ["_id", "name", "phone", "avatar"])
        #expect(update.primaryKey == [ColumnValue(column: "_id", value: .integer(1))])
        #expect(update.old == [.integer(1), nil, .text("555-0100"), .blob(Data([0x89, 0x50, 0x4e, 0x47]))])
        #expect(update.new == [nil, nil, .null, .blob(Data([0x00, 0xff]))])

        let delete = try #require(byKey["contacts 2"])
        #expect(delete.operation == .delete)
        #expect(delete.old == [.integer(2), .text("Brian"), .null, .null])

        let insert = try #require(byKey["contacts 4"])
        #expect(insert.operation == .insert)
        #expect(insert.new == [.integer(4), .text("Dee"), .null, .blob(Data())])

        let withoutRowid = try #require(byKey["settings 'ratio'"])
        #expect(withoutRowid.operation == .update)
        #expect(withoutRowid.new[1] == .real(1.25))
        #expect(!changeset.changes.contains { $0.table == "log" })
    }

    @Test func ftsIndexShadowTablesAreLeftOut_theContentTableIsIn() throws {
        let dir = try TemporaryDirectory("changeset-fts")
        let base = try MergeFixtures.room(dir.child("base.db"))
        let other = try MergeFixtures.copy(base, "other.db")
        try Shell.sqlite(other, "INSERT INTO notes(title, folderId) VALUES ('new', 1);")
        let tables = Set(try Changeset.between(base: base, and: other).changes.map(\.table))
        #expect(tables == ["notes"], "notes_fts_segments/_segdir/_docsize/_stat are rebuilt, not diffed; sqlite_sequence has no key")
    }

    @Test func unchangedContentGivesAnEmptyChangeset() throws {
        let dir = try TemporaryDirectory("changeset-empty")
        let base = try MergeFixtures.coreData(dir.child("base.db"))
        let other = try MergeFixtures.copy(base, "other.db")
        try Shell.sqlite(other, "UPDATE ZITEM SET ZTITLE = ZTITLE; VACUUM;")
        let changeset = try Changeset.between(base: base, and: other)
        #expect(changeset.isEmpty)
        #expect(changeset.changes.isEmpty)
    }

    @Test func aSchemaChangeThrowsSchemaChanged_aNonDatabaseThrowsNotSQLite() throws {
        let dir = try TemporaryDirectory("changeset-schema")
        let base = try MergeFixtures.openHelper(dir.child("base.db"))
        let other = try MergeFixtures.copy(base, "other.db")
        try Shell.sqlite(other, "CREATE INDEX contacts_phone ON contacts(phone);")
        let error = try #require(throws: FlippioError.self) { try Changeset.between(base: base, and: other) }
        #expect(error.code == .schemaChanged)
        #expect(error.message.contains("index contacts_phone added"))

        let text = dir.child("text.db")
        try Data("adb: error: failed to stat remote object\n".utf8).write(to: text)
        let notSQLite = try #require(throws: FlippioError.self) { try Changeset.between(base: base, and: text) }
        #expect(notSQLite.code == .notSQLite)
    }

    @Test func sqlValuesRoundTripThroughJSON_keepingTheirStorageClass() throws {
        let values: [SQLValue] = [.null, .integer(-7), .real(2.0), .real(0.1), .text("it's"), .blob(Data([0, 1, 255])), .blob(Data())]
        let json = try JSONEncoder().encode(values)
        #expect(try JSONDecoder().decode([SQLValue].self, from: json) == values)
        #expect(SQLValue.text("it's").description == "'it''s'")
        #expect(SQLValue.blob(Data([0xab])).description == "X'ab'")
    }
}
