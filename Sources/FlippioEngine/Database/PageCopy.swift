import CSQLiteSession
import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// A page-for-page copy of a rollback-journal database, read through SQLite's own file handle
/// while the connection holds a read transaction, written with the header SQLite's backup API
/// would give the copy.
///
/// Why not the backup API itself: it moves the file one page at a time through two pagers (a
/// page cache on each side: 51,000 writes of 4 KiB for 200 MB); reading the same bytes 2 MiB at a
/// time and writing them out takes ~85 ms, and the bytes in hand are hashed (``HashingPipeline``)
/// and compared with the base (``PageDelta/Comparer``) on the way. Why it is as safe:
///
/// - **Consistent.** In rollback-journal mode SQLite writes the main file only under an EXCLUSIVE
///   lock, which no writer gets while a reader holds SHARED: the read transaction keeps every
///   SQLite writer out of the file for the whole copy, and opening it rolls back a hot journal a
///   crashed writer left. A WAL database is not copied this way (committed pages may be in the
///   `-wal`, and a checkpoint may write the main file under a reader): ``copy(_:to:comparingWith:)``
///   returns nil and the caller uses the backup API.
/// - **No lock is dropped.** The bytes are read with the VFS's `xRead` on the connection's own
///   handle (`SQLITE_FCNTL_FILE_POINTER`), never through a second descriptor, whose `close` would
///   drop every POSIX lock the process holds on the file, SQLite's included. (With the pool's
///   `mmap_size` of 0, Debian's default, `xRead` is a `pread`: a file cut short by another program
///   is a short read and a retried copy, never a SIGBUS.)
/// - **The same bytes.** The copy of an unchanged database must hash the same whichever way it
///   was made (the content identity of every snapshot depends on it). The backup API copies every
///   page as it is, then its commit to the new file sets five header fields: the file change
///   counter (24) and version-valid-for number (92) to 1, the in-header page count (28), the
///   schema cookie (40) to 1 (the empty file's 0 plus one), and `SQLITE_VERSION_NUMBER` (96).
///   This copy sets the same five to the same values; a test compares both copies byte for byte.
///
/// Files it declines (nil), to be copied by the backup API: WAL mode, a page count in the header
/// that does not match the file's size, 1 GiB or more (the backup API skips the page holding the
/// lock byte at offset 2³⁰), an unknown header.
enum PageCopy {
    /// Files from this size on hold SQLite's lock-byte page, which the backup API does not copy.
    static let lockBytePageOffset: Int64 = 1 << 30

    /// What a copy wrote.
    struct Copied: Sendable, Equatable {
        /// The copy's size in bytes.
        var size: Int64
        /// ``ContentHash/sha256(databaseAt:)`` of the copy; nil when it was not asked for.
        var contentHash: String?
        /// ``ContentHash/sha256(fileAt:)`` of the copy.
        var fileHash: String
        /// The copy's pages compared with the base given, when it has the same page size.
        var comparison: PageDelta.Comparison?
    }

    /// Copies the main file of the database `connection` is connected to into the new file
    /// `destination`, and hashes the copy on the way (both hashes, each on a thread of its own,
    /// from the bytes in memory: no second read of the copy).
    ///
    /// - returns: the copy's size and hashes, or nil when the database is not one this copy makes
    ///   (see ``PageCopy``); `destination` is then not created.
    /// - throws: a `DatabaseError` from SQLite (busy, I/O), ``FlippioError/Code/workspaceWriteFailed``.
    ///
    /// With `base` (a base copy, never a live file), the copy's pages are compared with it on the
    /// way too, for a page delta (``PageDelta/init(_:targetSize:)``) without another read.
    /// With `hashingContent` false only the plain hash is computed (the caller hashes the content
    /// later, from the copy).
    static func copy(_ connection: DatabaseQueue, to destination: URL, comparingWith base: URL? = nil,
                     hashingContent: Bool = true) throws -> Copied? {
        try connection.read { db in
            // A statement reading the schema takes the SHARED lock, which the read transaction
            // then keeps until it ends (after the last byte is read).
            _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master")
            return try copyLocked(db, to: destination, comparingWith: base, hashingContent: hashingContent)
        }
    }

    private static func copyLocked(_ db: Database, to destination: URL, comparingWith base: URL?,
                                   hashingContent: Bool) throws -> Copied? {
        guard let handle = db.sqliteConnection else { return nil }
        var fileSize: Int64 = 0
        guard fl_main_file_size(handle, &fileSize) == FL_SQLITE_OK,
              fileSize >= Int64(SQLiteHeader.length), fileSize < lockBytePageOffset else { return nil }
        let pipeline = HashingPipeline(hashingContent: hashingContent)
        defer { pipeline.finish() }
        func read(_ count: Int, at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
            let rc = fl_main_file_read(handle, buffer.baseAddress!, Int32(count), offset)
            guard rc == FL_SQLITE_OK else {
                throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: "reading the database file at \(offset)")
            }
        }

        var buffer = pipeline.nextBuffer()
        let firstCount = Int(min(Int64(pipeline.chunkSize), fileSize))
        try read(firstCount, at: 0, into: buffer)
        guard let pageCount = pageCount(header: UnsafeRawBufferPointer(buffer), fileSize: fileSize) else { return nil }
        setBackupHeader(buffer, pageCount: pageCount)
        // The comparison runs here, beside the hashers: they are the slower part.
        let pageSize = Int(fileSize / Int64(pageCount))
        var comparer = base.flatMap { base in
            (try? SQLiteHeader.read(fileAt: base).pageSize) == pageSize ? try? PageDelta.Comparer(base: base, pageSize: pageSize) : nil
        }

        let fd = open(destination.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: destination.path, errno: errno) }
        var closed = false
        defer { if !closed { close(fd) } }
        var offset: Int64 = 0
        while offset < fileSize {
            let count = Int(min(Int64(pipeline.chunkSize), fileSize - offset))
            if offset > 0 {
                buffer = pipeline.nextBuffer()
                try read(count, at: offset, into: buffer)
            }
            var written = 0
            while written < count {
                let n = pwrite(fd, buffer.baseAddress! + written, count - written, off_t(offset) + off_t(written))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw FlippioError.workspaceWriteFailed(path: destination.path, errno: n < 0 ? errno : EIO) }
                written += n
            }
            do {
                try comparer?.compare(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), at: offset)
            } catch {
                comparer = nil  // a base it cannot read: no comparison, the snapshot is still good
            }
            pipeline.hash(count)
            offset += Int64(count)
        }
        closed = true
        guard close(fd) == 0 else { throw FlippioError.workspaceWriteFailed(path: destination.path, errno: errno) }
        let (content, file) = pipeline.finish()
        return Copied(size: fileSize, contentHash: content, fileHash: file, comparison: comparer?.result)
    }

    /// The page count the backup API would copy, when the file is a rollback-journal database of
    /// exactly that many pages; nil otherwise.
    ///
    /// SQLite trusts the header's page count (offset 28) only when it is non-zero and the
    /// version-valid-for number (92) equals the change counter (24); otherwise the file's size.
    static func pageCount(header b: UnsafeRawBufferPointer, fileSize: Int64) -> UInt32? {
        guard b.count >= SQLiteHeader.length, Array(b[0..<16]) == SQLiteHeader.magic,
              b[18] == 1, b[19] == 1 else { return nil }
        let rawPageSize = Int(b[16]) << 8 | Int(b[17])
        let pageSize = rawPageSize == 1 ? 65536 : rawPageSize
        guard pageSize >= 512, pageSize <= 65536, pageSize & (pageSize - 1) == 0,
              fileSize % Int64(pageSize) == 0 else { return nil }
        let filePages = fileSize / Int64(pageSize)
        let headerPages = u32(b, 28)
        let headerValid = headerPages != 0 && u32(b, 24) == u32(b, 92)
        guard !headerValid || Int64(headerPages) == filePages else { return nil }
        return UInt32(filePages)
    }

    /// Sets the header fields the backup API's commit sets in a new copy (see ``PageCopy``).
    static func setBackupHeader(_ b: UnsafeMutableRawBufferPointer, pageCount: UInt32) {
        put32(b, 24, 1)
        put32(b, 28, pageCount)
        put32(b, 40, 1)
        put32(b, 92, 1)
        put32(b, 96, UInt32(fl_libversion_number()))
    }

    private static func u32(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
        UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3])
    }

    private static func put32(_ b: UnsafeMutableRawBufferPointer, _ o: Int, _ value: UInt32) {
        b[o] = UInt8(value >> 24); b[o + 1] = UInt8(value >> 16 & 0xff)
        b[o + 2] = UInt8(value >> 8 & 0xff); b[o + 3] = UInt8(value & 0xff)
    }
}
