import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("ThreeWayMerge")
struct ThreeWayMergeTests {
    // MARK: - Merging

    @Test func roomDisjointEdits_bothSidesRowsAreInTheMergedFile_andItPassesQuickCheck() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.room($0) }
        // The app inserts a row and updates another; the desktop updates a third and inserts one.
        try Shell.sqlite(trio.device, "INSERT INTO notes(title, body, folderId) VALUES ('from app', 'app body', 2); UPDATE notes SET body = 'app edit' WHERE id = 1;")
        try Shell.sqlite(trio.local, "UPDATE notes SET title = 'desk title' WHERE id = 3; INSERT INTO notes(title, body, folderId) VALUES ('from desk', 'desk body', 1);")

        let result = try trio.mergedResult()
        #expect(result.rowsFromDevice == 2)
        #expect(result.rowsFromDesktop == 2)
        // Both inserted id 4: the desktop's row moved to the next id, nothing refers to notes.
        #expect(result.rekeyedRows.map { "\($0.table).\($0.column) \($0.from)→\($0.to)" } == ["notes.id 4→5"])

        let m = trio.merged
        #expect(try MergeFixtures.query(m, "PRAGMA quick_check") == "ok")
        #expect(try MergeFixtures.query(m, "SELECT id, title, body FROM notes ORDER BY id") == """
            1|note 1|app edit
            2|note 2|body of note 2
            3|desk title|body of note 3
            4|from app|app body
            5|from desk|desk body
            """)
        #expect(try MergeFixtures.query(m, "SELECT seq FROM sqlite_sequence WHERE name = 'notes'") == "5")
        // The FTS index follows the merged content (its shadow tables were rebuilt, not diffed).
        #expect(try MergeFixtures.query(m, "SELECT docid FROM notes_fts WHERE notes_fts MATCH 'desk' ORDER BY docid") == "3\n5")
        #expect(try MergeFixtures.query(m, "SELECT docid FROM notes_fts WHERE notes_fts MATCH 'app' ORDER BY docid") == "1\n4")
        try Shell.sqlite(m, "INSERT INTO notes_fts(notes_fts) VALUES('integrity-check');")
        #expect(try MergeFixtures.query(m, "PRAGMA journal_mode") == "wal", "the device's journal mode is kept")
        #expect(!FileManager.default.fileExists(atPath: m.path + "-wal"))
    }

    @Test func identicalChangesOnBothSides_areNotAConflict() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        let same = "UPDATE contacts SET phone = '555-9999' WHERE _id = 2; DELETE FROM contacts WHERE _id = 3; INSERT INTO settings VALUES ('lang', 'fr');"
        try Shell.sqlite(trio.device, same)
        try Shell.sqlite(trio.local, same + "UPDATE settings SET value = 'light' WHERE key = 'theme';")
        let result = try trio.mergedResult()
        #expect(result.rowsFromDesktop == 1)
        #expect(try MergeFixtures.query(trio.merged, "SELECT key, value FROM settings ORDER BY key") == "lang|fr\nratio|0.5\ntheme|light\nvolume|7")
        #expect(try MergeFixtures.query(trio.merged, "SELECT count(*) FROM contacts") == "2")
    }

    @Test func sameRowUpdatedDifferently_isAConflictWithTheThreeVersions_andNothingIsWritten() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.device, "UPDATE contacts SET phone = 'device' WHERE _id = 1; INSERT INTO settings VALUES ('x', 1);")
        // A different column of the same row: still the same row changed on both sides.
        try Shell.sqlite(trio.local, "UPDATE contacts SET name = 'Ada L.' WHERE _id = 1;")
        let conflict = try trio.conflict()
        #expect(conflict.schema == nil)
        let row = try #require(conflict.rows.first)
        #expect(conflict.rows.count == 1)
        #expect(row.kind == .updatedOnBothSides)
        #expect(row.table == "contacts")
        #expect(row.primaryKey == [ColumnValue(column: "_id", value: .integer(1))])
        #expect(row.base?.first { $0.column == "phone" }?.value == .text("555-0100"))
        #expect(row.local?.first { $0.column == "name" }?.value == .text("Ada L."))
        #expect(row.device?.first { $0.column == "phone" }?.value == .text("device"))
        #expect(row.device?.first { $0.column == "avatar" }?.value == .blob(Data([0x89, 0x50, 0x4e, 0x47])))
        #expect(!FileManager.default.fileExists(atPath: trio.merged.path))
        #expect(conflict.explanation.contains("contacts"))
    }

    @Test func aConflictRoundTripsThroughJSON_forSidecarsAndStatus() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.device, "UPDATE contacts SET avatar = X'0102', phone = NULL WHERE _id = 1;")
        try Shell.sqlite(trio.local, "UPDATE contacts SET avatar = X'0304' WHERE _id = 1;")
        let conflict = try trio.conflict()
        let json = try JSONEncoder().encode(conflict)
        #expect(try JSONDecoder().decode(MergeConflict.self, from: json) == conflict)
        #expect(String(decoding: json, as: UTF8.self).contains("\"updated-on-both-sides\""))
    }

    @Test func anOutputThatIsAnInput_isRefused_andTheInputIsUntouched() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        let before = try Data(contentsOf: trio.device)
        let error = try #require(throws: FlippioError.self) {
            try ThreeWayMerge.merge(base: trio.base, local: trio.local, device: trio.device, into: trio.device)
        }
        #expect(error.code == .invalidArgument)
        #expect(try Data(contentsOf: trio.device) == before)
    }

    @Test func deleteVersusUpdate_andInsertInsertOnATextKey_areConflicts() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.device, "UPDATE contacts SET phone = 'new' WHERE _id = 2; DELETE FROM contacts WHERE _id = 3; INSERT INTO settings VALUES ('lang', 'de');")
        try Shell.sqlite(trio.local, "DELETE FROM contacts WHERE _id = 2; UPDATE contacts SET phone = 'x' WHERE _id = 3; INSERT INTO settings VALUES ('lang', 'fr');")
        let kinds = Dictionary(try trio.conflict().rows.map { ("\($0.table) \($0.primaryKey.first!.value)", $0) }, uniquingKeysWith: { a, _ in a })
        #expect(kinds["contacts 2"]?.kind == .deletedLocallyUpdatedOnDevice)
        #expect(kinds["contacts 2"]?.local == nil)
        #expect(kinds["contacts 3"]?.kind == .updatedLocallyDeletedOnDevice)
        #expect(kinds["contacts 3"]?.device == nil)
        #expect(kinds["settings 'lang'"]?.kind == .insertedOnBothSides)
        #expect(kinds["settings 'lang'"]?.base == nil)
        #expect(kinds.count == 3)
    }

    @Test func preferLocal_resolvesOnlyTheConflictingRows_andKeepsBothSidesOtherRows() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.device, "UPDATE contacts SET phone = 'device' WHERE _id = 1; UPDATE contacts SET phone = 'dev2' WHERE _id = 2; DELETE FROM contacts WHERE _id = 3;")
        try Shell.sqlite(trio.local, "UPDATE contacts SET phone = 'local' WHERE _id = 1; UPDATE settings SET value = 9 WHERE key = 'volume'; UPDATE contacts SET name = 'C.' WHERE _id = 3;")
        let local = try trio.mergedResult(prefer: .local)
        #expect(Set(local.resolvedConflicts.map(\.kind)) == [.updatedOnBothSides, .updatedLocallyDeletedOnDevice])
        #expect(try MergeFixtures.query(trio.merged, "SELECT _id, name, phone FROM contacts ORDER BY _id") == "1|Ada|local\n2|Brian|dev2\n3|C.|555-0102")
        #expect(try MergeFixtures.query(trio.merged, "SELECT value FROM settings WHERE key = 'volume'") == "9")

        _ = try trio.mergedResult(prefer: .device)
        #expect(try MergeFixtures.query(trio.merged, "SELECT _id, name, phone FROM contacts ORDER BY _id") == "1|Ada|device\n2|Brian|dev2")
        #expect(try MergeFixtures.query(trio.merged, "SELECT value FROM settings WHERE key = 'volume'") == "9")
        #expect(try MergeFixtures.query(trio.merged, "PRAGMA quick_check") == "ok")
    }

    @Test func schemaChangeOnTheDevice_isAnExplainedSchemaConflict() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.room($0) }
        try Shell.sqlite(trio.device, "ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0; PRAGMA user_version=4;")
        try Shell.sqlite(trio.local, "UPDATE notes SET title = 'x' WHERE id = 1;")
        let conflict = try trio.conflict()
        let schema = try #require(conflict.schema)
        #expect(schema.deviceChanges.contains("table notes changed"))
        #expect(schema.deviceChanges.contains("user_version 3 → 4"))
        #expect(schema.localChanges.isEmpty)
        #expect(conflict.explanation.contains("migration"))
        #expect(!FileManager.default.fileExists(atPath: trio.merged.path))
    }

    @Test func foreignKeyViolationInTheMergedResult_isAConflict() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.room($0) }
        // The app deletes folder 2 (no note in it yet); the desktop files a note into folder 2.
        try Shell.sqlite(trio.device, "DELETE FROM folders WHERE id = 2;")
        try Shell.sqlite(trio.local, "UPDATE notes SET folderId = 2 WHERE id = 2;")
        let conflict = try trio.conflict()
        let row = try #require(conflict.rows.first)
        #expect(row.kind == .foreignKeyViolation)
        #expect(row.table == "notes")
        #expect(row.primaryKey == [ColumnValue(column: "id", value: .integer(2))])
    }

    @Test func uniqueConstraintBrokenByTheMerge_isAConflict() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.device, "UPDATE contacts SET name = 'Dana' WHERE _id = 1;")
        try Shell.sqlite(trio.local, "UPDATE contacts SET name = 'Dana' WHERE _id = 2;")
        let row = try #require(try trio.conflict().rows.first)
        #expect(row.kind == .constraintViolation)
        #expect(row.primaryKey == [ColumnValue(column: "_id", value: .integer(2))])
    }

    @Test func rowsStillInTheDevicesWAL_countAsContent_andAreInTheMerge() async throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.room($0) }
        // The app holds its database open; its last commit is still in the -wal.
        let app = try SQLiteSession(trio.device)
        defer { app.close() }
        try await app.execute("PRAGMA wal_autocheckpoint=0; INSERT INTO folders(name) VALUES ('in the wal');")
        let device = trio.dir.child("pulled.db")
        try FileManager.default.copyItem(at: trio.device, to: device)
        try FileManager.default.copyItem(atPath: trio.device.path + "-wal", toPath: device.path + "-wal")
        #expect(try !ContentIdentity.sameContent(trio.base, device))

        try Shell.sqlite(trio.local, "UPDATE notes SET title = 'desk' WHERE id = 1;")
        guard case .merged = try ThreeWayMerge.merge(base: trio.base, local: trio.local, device: device, into: trio.merged) else {
            Issue.record("expected a merge"); return
        }
        #expect(try MergeFixtures.query(trio.merged, "SELECT name FROM folders WHERE id = 3") == "in the wal")
        #expect(try MergeFixtures.query(trio.merged, "SELECT title FROM notes WHERE id = 1") == "desk")
    }

    // MARK: - Key-less tables and framework tables

    @Test func keylessTableChangedOnOneSide_isTakenWhole_changedOnBoth_isAConflict() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.local, "INSERT INTO log VALUES (3, 'desk'); DELETE FROM log WHERE at = 1;")
        try Shell.sqlite(trio.device, "UPDATE contacts SET phone = NULL WHERE _id = 1;")
        _ = try trio.mergedResult()
        #expect(try MergeFixtures.query(trio.merged, "SELECT at, message FROM log ORDER BY at") == "2|sync\n3|desk")
        #expect(try MergeFixtures.query(trio.merged, "SELECT phone IS NULL FROM contacts WHERE _id = 1") == "1")

        try Shell.sqlite(trio.device, "INSERT INTO log VALUES (4, 'app');")
        let row = try #require(try trio.conflict().rows.first)
        #expect(row.kind == .keylessTableChangedOnBothSides)
        #expect(row.table == "log")
    }

    @Test func coreData_primaryKeyCountersTakeTheMax_andTheDevicesMetadataWins() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.coreData($0) }
        try Shell.sqlite(trio.device, """
            INSERT INTO ZITEM VALUES (4, 1, 1, 0, 700000010.0, 'app item', NULL), (5, 1, 1, 0, 700000011.0, 'app item 2', NULL);
            UPDATE Z_PRIMARYKEY SET Z_MAX = 5 WHERE Z_ENT = 1;
            UPDATE Z_METADATA SET Z_PLIST = X'aa'; UPDATE Z_MODELCACHE SET Z_CONTENT = X'bb';
            """)
        try Shell.sqlite(trio.local, """
            UPDATE ZITEM SET ZTITLE = 'oat milk', Z_OPT = 2 WHERE Z_PK = 1;
            UPDATE Z_PRIMARYKEY SET Z_MAX = 4 WHERE Z_ENT = 1;
            UPDATE Z_METADATA SET Z_PLIST = X'cc'; UPDATE Z_MODELCACHE SET Z_CONTENT = X'dd';
            """)
        _ = try trio.mergedResult()
        let m = trio.merged
        #expect(try MergeFixtures.query(m, "SELECT Z_MAX FROM Z_PRIMARYKEY WHERE Z_ENT = 1") == "5")
        #expect(try MergeFixtures.query(m, "SELECT hex(Z_PLIST) FROM Z_METADATA") == "AA")
        #expect(try MergeFixtures.query(m, "SELECT hex(Z_CONTENT) FROM Z_MODELCACHE") == "BB")
        #expect(try MergeFixtures.query(m, "SELECT Z_PK, ZTITLE, Z_OPT FROM ZITEM ORDER BY Z_PK") == "1|oat milk|2\n2|eggs|1\n3|bread|1\n4|app item|1\n5|app item 2|1")
    }

    @Test func roomMetadataAndSequence_deviceWinsAndMax() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.room($0) }
        try Shell.sqlite(trio.device, "UPDATE room_master_table SET identity_hash = 'device'; UPDATE android_metadata SET locale = 'fr_FR';")
        try Shell.sqlite(trio.local, "UPDATE room_master_table SET identity_hash = 'local'; UPDATE android_metadata SET locale = 'de_DE'; INSERT INTO folders(name) VALUES ('work'); DELETE FROM folders WHERE id = 3;")
        _ = try trio.mergedResult()
        #expect(try MergeFixtures.query(trio.merged, "SELECT identity_hash FROM room_master_table") == "device")
        #expect(try MergeFixtures.query(trio.merged, "SELECT locale FROM android_metadata") == "fr_FR")
        // The desktop's AUTOINCREMENT counter moved on (3) though the row is gone: ids are not reused.
        #expect(try MergeFixtures.query(trio.merged, "SELECT seq FROM sqlite_sequence WHERE name = 'folders'") == "3")
    }

    // MARK: - Scale

    @Test func aHundredThousandRowChangeSetMerges() throws {
        let trio = try MergeFixtures.Trio { url in
            try Shell.sqlite(url, """
                CREATE TABLE items(id INTEGER PRIMARY KEY, n INTEGER, label TEXT);
                WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000)
                INSERT INTO items SELECT i, i, 'item' FROM c;
                """)
            return url
        }
        try Shell.sqlite(trio.local, "UPDATE items SET n = n + 1;")
        try Shell.sqlite(trio.device, "INSERT INTO items VALUES (100001, 0, 'app');")
        let result = try trio.mergedResult()
        #expect(result.rowsFromDesktop == 100_000)
        #expect(result.rowsFromDevice == 1)
        #expect(try MergeFixtures.query(trio.merged, "SELECT sum(n) - (100000 * 100001 / 2), count(*) FROM items") == "100000|100001")
    }
}

extension MergeFixtures.Trio {
    var merged: URL { dir.child("merged.db") }

    func merge(prefer: ThreeWayMerge.Preference? = nil) throws -> ThreeWayMerge.Outcome {
        try ThreeWayMerge.merge(base: base, local: local, device: device, into: merged, prefer: prefer)
    }

    func mergedResult(prefer: ThreeWayMerge.Preference? = nil) throws -> ThreeWayMerge.Result {
        switch try merge(prefer: prefer) {
        case .merged(let result): return result
        case .conflict(let conflict): throw ShellError("unexpected conflict: \(conflict)")
        }
    }

    func conflict() throws -> MergeConflict {
        switch try merge() {
        case .merged: throw ShellError("expected a conflict")
        case .conflict(let conflict): return conflict
        }
    }
}
