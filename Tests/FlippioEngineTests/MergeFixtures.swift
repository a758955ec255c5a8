import FlippioEngine
import Foundation
import TestSupport

/// Databases written by the real sqlite3 CLI in the shapes real apps use: the material of the
/// merge, changeset, content-identity and page-delta tests.
enum MergeFixtures {
    /// A Room database (Android Jetpack): AUTOINCREMENT + sqlite_sequence, an external-content
    /// FTS4 table kept by Room's triggers, a foreign key, room_master_table, android_metadata,
    /// WAL mode, user_version.
    static func room(_ url: URL, notes: Int = 3) throws -> URL {
        try Shell.sqlite(url, """
            PRAGMA journal_mode=WAL;
            CREATE TABLE android_metadata (locale TEXT);
            INSERT INTO android_metadata VALUES('en_US');
            CREATE TABLE IF NOT EXISTS `folders` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `name` TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS `notes` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, `title` TEXT NOT NULL, `body` TEXT, `folderId` INTEGER, FOREIGN KEY(`folderId`) REFERENCES `folders`(`id`) ON UPDATE NO ACTION ON DELETE CASCADE);
            CREATE INDEX IF NOT EXISTS `index_notes_folderId` ON `notes` (`folderId`);
            CREATE VIRTUAL TABLE IF NOT EXISTS `notes_fts` USING FTS4(`title` TEXT NOT NULL, `body` TEXT, content=`notes`);
            CREATE TRIGGER IF NOT EXISTS room_fts_content_sync_notes_fts_BEFORE_UPDATE BEFORE UPDATE ON `notes` BEGIN DELETE FROM `notes_fts` WHERE `docid`=OLD.`rowid`; END;
            CREATE TRIGGER IF NOT EXISTS room_fts_content_sync_notes_fts_BEFORE_DELETE BEFORE DELETE ON `notes` BEGIN DELETE FROM `notes_fts` WHERE `docid`=OLD.`rowid`; END;
            CREATE TRIGGER IF NOT EXISTS room_fts_content_sync_notes_fts_AFTER_UPDATE AFTER UPDATE ON `notes` BEGIN INSERT INTO `notes_fts`(`docid`, `title`, `body`) VALUES (NEW.`rowid`, NEW.`title`, NEW.`body`); END;
            CREATE TRIGGER IF NOT EXISTS room_fts_content_sync_notes_fts_AFTER_INSERT AFTER INSERT ON `notes` BEGIN INSERT INTO `notes_fts`(`docid`, `title`, `body`) VALUES (NEW.`rowid`, NEW.`title`, NEW.`body`); END;
            CREATE TABLE room_master_table (id INTEGER PRIMARY KEY,identity_hash TEXT);
            INSERT OR REPLACE INTO room_master_table (id,identity_hash) VALUES(42, '5a8c3b0f1e2d');
            PRAGMA user_version=3;
            INSERT INTO folders(name) VALUES ('inbox'), ('archive');
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < \(notes))
            INSERT INTO notes(title, body, folderId) SELECT 'note ' || i, 'body of note ' || i, 1 FROM c;
            """)
        return url
    }

    /// A Core Data store (iOS): Z_PK/Z_ENT/Z_OPT columns, Z_PRIMARYKEY counters, Z_METADATA,
    /// Z_MODELCACHE, WAL mode.
    static func coreData(_ url: URL) throws -> URL {
        try Shell.sqlite(url, """
            PRAGMA journal_mode=WAL;
            CREATE TABLE ZITEM ( Z_PK INTEGER PRIMARY KEY, Z_ENT INTEGER, Z_OPT INTEGER, ZDONE INTEGER, ZTIMESTAMP TIMESTAMP, ZTITLE VARCHAR, ZPHOTO BLOB );
            CREATE TABLE Z_PRIMARYKEY (Z_ENT INTEGER PRIMARY KEY, Z_NAME VARCHAR, Z_SUPER INTEGER, Z_MAX INTEGER);
            CREATE TABLE Z_METADATA (Z_VERSION INTEGER PRIMARY KEY, Z_UUID VARCHAR(255), Z_PLIST BLOB);
            CREATE TABLE Z_MODELCACHE (Z_CONTENT BLOB);
            INSERT INTO Z_PRIMARYKEY VALUES (1, 'Item', 0, 3);
            INSERT INTO Z_METADATA VALUES (1, 'C6A1C2E4-1111-2222-3333-444455556666', X'62706c6973743030');
            INSERT INTO Z_MODELCACHE VALUES (X'00010203');
            INSERT INTO ZITEM VALUES (1, 1, 1, 0, 700000000.5, 'milk', NULL), (2, 1, 1, 0, 700000001.0, 'eggs', X'ffd8ffe0'), (3, 1, 1, 1, 700000002.0, 'bread', NULL);
            """)
        return url
    }

    /// A plain SQLiteOpenHelper database (rollback journal), with a key-less log table, a
    /// WITHOUT ROWID table, BLOBs and NULLs.
    static func openHelper(_ url: URL) throws -> URL {
        try Shell.sqlite(url, """
            CREATE TABLE android_metadata (locale TEXT);
            INSERT INTO android_metadata VALUES('en_US');
            CREATE TABLE contacts (_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, phone TEXT, avatar BLOB);
            CREATE TABLE settings (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
            CREATE TABLE log (at INTEGER, message TEXT);
            INSERT INTO contacts VALUES (1, 'Ada', '555-0100', X'89504e47'), (2, 'Brian', NULL, NULL), (3, 'Chen', '555-0102', X'');
            INSERT INTO settings VALUES ('theme', 'dark'), ('volume', 7), ('ratio', 0.5);
            INSERT INTO log VALUES (1, 'start'), (2, 'sync');
            PRAGMA user_version=12;
            """)
        return url
    }

    /// Base, local and device copies of a fixture in a fresh folder (local is the live file in
    /// the applier's tests).
    struct Trio {
        let dir: TemporaryDirectory
        let base: URL
        let local: URL
        let device: URL

        init(_ make: (URL) throws -> URL) throws {
            dir = try TemporaryDirectory("merge")
            base = try make(dir.child("base.db"))
            local = try MergeFixtures.copy(base, "local.db")
            device = try MergeFixtures.copy(base, "device.db")
        }
    }

    /// A table `t(id, payload)` of `rows` random blobs of `bytes` each (with 4,000-byte blobs, one
    /// row per 4 KiB page): a database of a chosen size, for the page-delta and hashing tests.
    static func blobs(_ url: URL, rows: Int, bytes: Int) throws -> URL {
        try Shell.sqlite(url, """
            CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < \(rows))
            INSERT INTO t SELECT i, randomblob(\(bytes)) FROM c;
            """)
        return url
    }

    /// A copy of `url` at `name` beside it (the file must not be open for writing).
    static func copy(_ url: URL, _ name: String) throws -> URL {
        let target = url.deletingLastPathComponent().appendingPathComponent(name)
        try FileManager.default.copyItem(at: url, to: target)
        return target
    }

    /// What sqlite3 prints for `sql` (list mode, `|` between columns), trimmed.
    static func query(_ url: URL, _ sql: String) throws -> String {
        try Shell.sqlite(url, sql).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
