import FlippioEngine
import Foundation
import GRDB
import Testing
import TestSupport

@Suite("ChangesetApplier (Merge)")
struct ChangesetApplierTests {
    @Test func devicesRowsArriveInTheLiveFile_andAReaderThatHeldItOpenSeesThem() async throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.room($0) }
        try Shell.sqlite(trio.device, "INSERT INTO notes(title, body, folderId) VALUES ('from app', 'zebra', 2); UPDATE notes SET body = 'changed' WHERE id = 2; DELETE FROM notes WHERE id = 3;")
        // The desktop edited another row since the base: it stays.
        try Shell.sqlite(trio.local, "UPDATE notes SET title = 'desk' WHERE id = 1;")

        let editor = try SQLiteSession(trio.local)
        defer { editor.close() }
        #expect(try await editor.execute("SELECT count(*) FROM notes;").contains("3"))
        let inode = try FileManager.default.attributesOfItem(atPath: trio.local.path)[.systemFileNumber] as? Int

        let outcome = try ChangesetApplier().apply(base: trio.base, device: trio.device, toLiveDatabaseAt: trio.local)
        #expect(outcome == .applied(rows: 3))
        #expect(try FileManager.default.attributesOfItem(atPath: trio.local.path)[.systemFileNumber] as? Int == inode,
                "the live file is written in place, never replaced")
        let seen = try await editor.execute("SELECT id || ':' || title || ':' || body FROM notes ORDER BY id;")
        #expect(seen.contains("1:desk:body of note 1"))
        #expect(seen.contains("2:note 2:changed"))
        #expect(seen.contains("4:from app:zebra"))
        #expect(!seen.contains("3:"))
        #expect(try await editor.execute("SELECT docid FROM notes_fts WHERE notes_fts MATCH 'zebra';").contains("4"))
        #expect(try MergeFixtures.query(trio.local, "PRAGMA quick_check") == "ok")
    }

    @Test func aWriterHoldingTheLock_isWaitedFor_thenReportedAsDatabaseBusy() async throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.device, "UPDATE contacts SET phone = 'app' WHERE _id = 1;")

        let writer = try SQLiteSession(trio.local)
        try await writer.execute("BEGIN IMMEDIATE; UPDATE settings SET value = 'x' WHERE key = 'theme';")
        let applier = ChangesetApplier(busyTimeout: 0.2, attempts: 2)
        let start = ContinuousClock.now
        let error = try #require(throws: FlippioError.self) {
            try applier.apply(base: trio.base, device: trio.device, toLiveDatabaseAt: trio.local)
        }
        #expect(error.code == .databaseBusy)
        #expect(error.message.contains(trio.local.path))
        #expect(ContinuousClock.now - start >= .milliseconds(350), "both attempts waited the busy timeout")

        try await writer.execute("COMMIT;")
        #expect(try applier.apply(base: trio.base, device: trio.device, toLiveDatabaseAt: trio.local) == .applied(rows: 1))
        writer.close()
        #expect(try MergeFixtures.query(trio.local, "SELECT phone FROM contacts WHERE _id = 1") == "app")
        #expect(try MergeFixtures.query(trio.local, "SELECT value FROM settings WHERE key = 'theme'") == "x")
    }

    @Test func theSameRowEditedLocallySinceTheBase_isAConflict_andNothingIsWritten() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.openHelper($0) }
        try Shell.sqlite(trio.device, "UPDATE contacts SET phone = 'app' WHERE _id = 1; INSERT INTO log VALUES (9, 'x');")
        try Shell.sqlite(trio.local, "UPDATE contacts SET phone = 'desk' WHERE _id = 1;")
        guard case .conflict(let conflict) = try ChangesetApplier().apply(base: trio.base, device: trio.device, toLiveDatabaseAt: trio.local) else {
            Issue.record("expected a conflict"); return
        }
        #expect(conflict.rows.map(\.kind) == [.updatedOnBothSides])
        #expect(conflict.rows.first?.local?.first { $0.column == "phone" }?.value == .text("desk"))
        #expect(try MergeFixtures.query(trio.local, "SELECT count(*) FROM log") == "2", "rolled back as a whole")
    }

    @Test func afterAMerge_theLiveFileBecomesTheMergedContent() throws {
        let trio = try MergeFixtures.Trio { try MergeFixtures.room($0) }
        try Shell.sqlite(trio.device, "INSERT INTO notes(title, folderId) VALUES ('app', 1);")
        try Shell.sqlite(trio.local, "INSERT INTO notes(title, folderId) VALUES ('desk', 1);")
        let snapshot = try MergeFixtures.copy(trio.local, "snapshot.db")
        let merged = trio.dir.child("merged.db")
        guard case .merged = try ThreeWayMerge.merge(base: trio.base, local: snapshot, device: trio.device, into: merged) else {
            Issue.record("expected a merge"); return
        }
        // The desktop's row moved from id 4 to 5: bring the live file from its snapshot to the merge.
        #expect(try ChangesetApplier().apply(base: snapshot, device: merged, toLiveDatabaseAt: trio.local) == .applied(rows: 2))
        #expect(try ContentIdentity.sameContent(trio.local, merged))
    }

    @Test func throughTheCallersWriter_withForeignKeysOn_aCascadeOnTheDeviceAppliesCleanly() throws {
        let trio = try MergeFixtures.Trio {
            let base = try MergeFixtures.room($0)
            try Shell.sqlite(base, "INSERT INTO notes(title, folderId) VALUES ('in archive', 2);")
            return base
        }
        // The app deletes the folder; ON DELETE CASCADE removes its note on the device.
        try Shell.sqlite(trio.device, "PRAGMA foreign_keys = ON; DELETE FROM folders WHERE id = 2;")
        #expect(try MergeFixtures.query(trio.device, "SELECT count(*) FROM notes") == "3")

        // GRDB's default configuration enforces foreign keys: a cascade while applying would
        // delete the note before the changeset does.
        let writer = try DatabaseQueue(path: trio.local.path)
        #expect(try ChangesetApplier().apply(base: trio.base, device: trio.device, using: writer) == .applied(rows: 2))
        #expect(try writer.read { try Bool.fetchOne($0, sql: "PRAGMA foreign_keys") } == true, "restored")
        try writer.close()
        #expect(try MergeFixtures.query(trio.local, "SELECT count(*) FROM notes WHERE folderId = 2") == "0")
        #expect(try ContentIdentity.sameContent(trio.local, trio.device))
    }
}
