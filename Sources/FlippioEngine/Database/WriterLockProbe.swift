import Foundation
import GRDB
import GRDBSQLite
#if canImport(Glibc)
import Glibc
#endif

/// Tells whether another process holds a write transaction on a database, without taking any
/// lock, without waiting, and without opening the database or its side files.
///
/// SQLite's unix VFS locks byte ranges with POSIX `fcntl` locks
/// (<https://www.sqlite.org/lockingv3.html>, `os_unix.c`):
///
/// - rollback-journal mode: a writer holds the RESERVED byte (offset 0x40000001 of the database
///   file) from `BEGIN IMMEDIATE` or its first write until commit or rollback; on its way to
///   EXCLUSIVE it adds a write lock on the PENDING byte (0x40000000) and on the SHARED range
///   (0x40000002…+510), and keeps RESERVED. A read lock on PENDING alone is a reader acquiring
///   its SHARED lock, not a writer.
/// - WAL mode: a writer holds an exclusive lock on `WAL_WRITE_LOCK`, byte 120 of the `-shm` file
///   (the wal-index lock area starts at 120), from its first write until commit or rollback.
///
/// Linux lists every such lock, with the inode it is on, in `/proc/locks`. Reading that table
/// only needs `stat` of the database and its `-shm` for their device and inode numbers: no file
/// descriptor on the database is opened (closing one would drop SQLite's own locks in this
/// process). When `/proc/locks` cannot be read, the probe falls back to SQLite's own
/// `xCheckReservedLock` on the pooled connection (an `F_GETLK` on the RESERVED byte), which
/// covers rollback mode only.
enum WriterLockProbe {
    static let pendingByte: UInt64 = 0x4000_0000
    static let reservedByte: UInt64 = pendingByte + 1
    static let sharedFirst: UInt64 = pendingByte + 2
    static let sharedSize: UInt64 = 510
    static let walWriteLockByte: UInt64 = 120

    /// One held (not waited-for) POSIX or OFD lock from `/proc/locks`.
    struct HeldLock: Equatable {
        var isWrite: Bool
        var pid: Int32
        var major: UInt32
        var minor: UInt32
        var inode: UInt64
        var start: UInt64
        var end: UInt64   // inclusive; UInt64.max for EOF

        func covers(_ offset: UInt64) -> Bool { start <= offset && offset <= end }
        func overlaps(_ first: UInt64, _ last: UInt64) -> Bool { start <= last && first <= end }
    }

    /// Parses the text of `/proc/locks`; lines for blocked requests (`->`) and other lock kinds are skipped.
    ///
    /// A line reads `1: POSIX  ADVISORY  WRITE 5879 fe:00:5350731 1073741825 1073741825`.
    static func parse(_ text: String) -> [HeldLock] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 8, f[1] != "->", f[1] == "POSIX" || f[1] == "OFDLCK" else { return nil }
            let id = f[5].split(separator: ":")
            guard id.count == 3, let major = UInt32(id[0], radix: 16), let minor = UInt32(id[1], radix: 16),
                  let inode = UInt64(id[2]), let start = UInt64(f[6]) else { return nil }
            let end = f[7] == "EOF" ? UInt64.max : (UInt64(f[7]) ?? UInt64.max)
            return HeldLock(isWrite: f[3] == "WRITE", pid: Int32(f[4]) ?? -1, major: major, minor: minor,
                            inode: inode, start: start, end: end)
        }
    }

    /// The locks currently held on the system, or nil when `/proc/locks` cannot be read.
    static func heldLocks() -> [HeldLock]? {
        // /proc/locks is a kernel table, not a database file: reading it through Foundation is safe.
        guard let data = FileManager.default.contents(atPath: "/proc/locks") else { return nil }
        return parse(String(decoding: data, as: UTF8.self))
    }

    /// Whether `locks` show a write transaction on the database `path` (rollback or WAL mode).
    static func writerActive(path: String, locks: [HeldLock]) -> Bool {
        if let db = FileIdentity(path: path) {
            let onDB = locks.filter { db.matches(major: $0.major, minor: $0.minor, inode: $0.inode) }
            if onDB.contains(where: { lock in
                lock.covers(reservedByte)
                    || (lock.isWrite && lock.covers(pendingByte))
                    || (lock.isWrite && lock.overlaps(sharedFirst, sharedFirst + sharedSize - 1))
            }) {
                return true
            }
        }
        if let shm = FileIdentity(path: path + "-shm") {
            return locks.contains { lock in
                lock.isWrite && lock.covers(walWriteLockByte) && shm.matches(major: lock.major, minor: lock.minor, inode: lock.inode)
            }
        }
        return false
    }

    /// SQLite's own RESERVED-lock test on the connection's file descriptor (rollback mode only).
    static func reservedLockHeld(_ db: Database) -> Bool {
        var file: UnsafeMutablePointer<sqlite3_file>? = nil
        guard sqlite3_file_control(db.sqliteConnection, "main", SQLITE_FCNTL_FILE_POINTER, &file) == SQLITE_OK,
              let file, let check = file.pointee.pMethods?.pointee.xCheckReservedLock else { return false }
        var reserved: Int32 = 0
        guard check(file, &reserved) == SQLITE_OK else { return false }
        return reserved != 0
    }
}

/// A file's device and inode, from `stat` (which opens nothing).
struct FileIdentity: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64

    init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// glibc's `major()`/`minor()` encoding of `dev_t`.
    var major: UInt32 { UInt32(((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))) }
    var minor: UInt32 { UInt32((device & 0xff) | ((device >> 12) & ~UInt64(0xff))) }

    func matches(major: UInt32, minor: UInt32, inode: UInt64) -> Bool {
        self.inode == inode && self.major == major && self.minor == minor
    }
}
