import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// Read-only facts about an open database, shared by ``PulledDatabase`` and ``Snapshotter``.
enum DatabaseInspector {
    /// Runs `PRAGMA quick_check` and throws `.corruptDatabase` with its output unless it says "ok".
    ///
    /// - parameters:
    ///     - db: the connection.
    ///     - path: the file named in the error.
    ///     - what: how the message calls the file ("the snapshot of x.db", "x.db").
    static func quickCheck(_ db: Database, path: String, what: String) throws {
        let lines: [String]
        do {
            // At most 20 problems: enough to show, bounded for a badly damaged file.
            lines = try String.fetchAll(db, sql: "PRAGMA quick_check(20)")
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CORRUPT || error.resultCode == .SQLITE_NOTADB {
            throw corrupt(path: path, what: what, output: error.message ?? "database disk image is malformed")
        }
        guard lines == ["ok"] else {
            throw corrupt(path: path, what: what, output: lines.joined(separator: "\n"))
        }
    }

    /// Lets SQLite read a file flippio alone writes (a snapshot, a pulled copy in its staging
    /// folder) through a memory map instead of a `pread` per page: `quick_check` and the row
    /// counts of a 200 MB file took 250 ms, 45 ms mapped (most of it was system calls).
    ///
    /// - Important: never for the live local copy: a program that truncates a mapped file makes
    ///   the next read a SIGBUS, and the user's tools may rewrite their database any way they like.
    static func mapWholeFile(_ configuration: inout Configuration) {
        configuration.prepareDatabase { db in
            // SQLite caps it at its SQLITE_MAX_MMAP_SIZE (0x7fff0000 in Debian's build).
            try db.execute(sql: "PRAGMA mmap_size = 2147418112")
        }
    }

    static func corrupt(path: String, what: String, output: String) -> FlippioError {
        let excerpt = output.count > 2000 ? String(output.prefix(2000)) + "…" : output
        return FlippioError(
            .corruptDatabase, "\(what) failed SQLite's quick_check: \(excerpt)",
            remedy: "Restore a good copy (undo the last edit, or pull the database again); a corrupt database is never pushed.",
            context: ["path": path, "quickCheck": excerpt])
    }

    /// Row counts of every ordinary table (virtual tables are skipped: their module may be missing;
    /// their shadow tables are ordinary tables and are counted).
    static func tableRowCounts(_ db: Database) throws -> [String: Int] {
        let tables = try Row.fetchAll(db, sql: """
            SELECT name, sql FROM sqlite_schema
            WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
            ORDER BY name
            """)
        var counts: [String: Int] = [:]
        for row in tables {
            let name: String = row["name"]
            let sql: String = row["sql"] ?? ""
            if sql.range(of: "CREATE VIRTUAL TABLE", options: [.caseInsensitive, .anchored]) != nil { continue }
            counts[name] = try Int.fetchOne(db, sql: "SELECT count(*) FROM \(name.quotedDatabaseIdentifier)") ?? 0
        }
        return counts
    }

    /// `PRAGMA page_count` and `PRAGMA page_size`.
    static func pages(_ db: Database) throws -> (count: Int, size: Int) {
        (try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0, try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 0)
    }

    /// The size of a file in bytes, or 0 when it does not exist. (`stat` opens nothing.)
    static func fileSize(_ url: URL) -> Int64 {
        var st = stat()
        guard stat(url.path, &st) == 0 else { return 0 }
        return Int64(st.st_size)
    }

    /// The side files SQLite may keep beside `database`.
    static func sideFiles(of database: URL) -> [URL] {
        ["-wal", "-shm", "-journal"].map { URL(fileURLWithPath: database.path + $0) }
    }

    /// Starts writing a file we own to disk (an fsync on a thread of its own) and returns at once,
    /// so that the whole-file pass that comes next overlaps with the disk: the later
    /// ``syncToDisk(fileAt:)``, which is what makes the file durable, then finds little left to write.
    /// Best effort: errors are left to that later call.
    ///
    /// - Important: only for files no other process opens (a snapshot, a pulled copy in the
    ///   scratch folder), never for a live database: closing this descriptor drops the POSIX locks
    ///   this process holds on the file, which a SQLite connection here may hold at that moment.
    ///   They keep out other processes only, and no other process knows a private file.
    static func startSyncToDisk(fileAt url: URL) {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        Thread.detachNewThread {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// fsync a file we own (a snapshot or folded copy, never a live database), then its folder.
    static func syncToDisk(fileAt url: URL) throws {
        for path in [url.path, url.deletingLastPathComponent().path] {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: path, errno: errno) }
            defer { close(fd) }
            guard fsync(fd) == 0 || errno == EINVAL else {
                throw FlippioError.workspaceWriteFailed(path: path, errno: errno)
            }
        }
    }
}
