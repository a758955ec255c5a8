import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// SHA-256 of files and bytes, as lowercase hex (the format `sha256sum` prints).
///
/// Files are read with `pread` into one buffer per pass (no `Data` per chunk): at 200 MB the
/// hashing is what a push's host side mostly costs, so it runs at the speed of the SHA-256 code.
///
/// - Important: never hash a live database file the agent keeps open in its pool: reading it
///   through a separate file descriptor and closing that descriptor drops SQLite's POSIX locks
///   for the whole process. Hash snapshots and pulled files only.
public enum ContentHash {
    /// Hex SHA-256 of `data`.
    public static func sha256(_ data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    /// Hex SHA-256 of a file's bytes.
    public static func sha256(fileAt url: URL) throws -> String {
        try sha256(of: url, maskingHeader: false)
    }

    /// The header bytes of a database file that SQLite rewrites without a change of content:
    /// the journal-mode versions (18–19), the file change counter (24–27), the version-valid-for
    /// number (92–95) and `SQLITE_VERSION_NUMBER` of the library that wrote it last (96–99).
    public static let volatileHeaderRanges: [Range<Int>] = [18..<20, 24..<28, 92..<100]

    /// Hex SHA-256 of a database file's content: its bytes with ``volatileHeaderRanges`` zeroed.
    ///
    /// The identity of what a database holds, not of how the last library wrote it: after a
    /// libsqlite3 upgrade, an unchanged database keeps its hash (a hash of the plain bytes would
    /// change with the version number at offset 96, and every database would look edited).
    /// A real change moves a page or the schema, so it changes the hash.
    public static func sha256(databaseAt url: URL) throws -> String {
        try sha256(of: url, maskingHeader: true)
    }

    /// Both hashes of a database file: its content identity (``sha256(databaseAt:)``) and the
    /// SHA-256 of its plain bytes (what `sha256sum` on a device prints for the same file, to
    /// verify a transfer).
    ///
    /// The two differ from the first block on, so they are two SHA-256 computations; one read of
    /// the file feeds both, on two threads (``HashingPipeline``, as a snapshot's copy does).
    public static func hashes(ofDatabaseAt url: URL) throws -> (content: String, file: String) {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw readError(url, errno: errno) }
        defer { close(fd) }
        let pipeline = HashingPipeline()
        defer { pipeline.finish() }
        var offset: off_t = 0
        while true {
            let buffer = pipeline.nextBuffer()
            var count: Int
            repeat { count = pread(fd, buffer.baseAddress!, buffer.count, offset) } while count < 0 && errno == EINTR
            if count < 0 { throw readError(url, errno: errno) }
            if count == 0 { break }
            pipeline.hash(count)
            offset += off_t(count)
        }
        let hashes = pipeline.finish()
        guard let content = hashes.content else { preconditionFailure("HashingPipeline() hashes the content") }
        return (content, hashes.file)
    }

    /// ``sha256(databaseAt:)`` of the file open at `fd` (read from its start with `pread`; the
    /// descriptor is not closed), for a file that may be unlinked or renamed meanwhile; `url`
    /// names it in errors.
    static func sha256(databaseIn fd: Int32, at url: URL) throws -> String {
        try sha256(fd, url, maskingHeader: true)
    }

    /// A finished digest as lowercase hex (for hashers fed piece by piece elsewhere).
    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }

    /// How much of a file one `pread` takes.
    private static let chunkSize = 1 << 20

    /// SHA-256 of the file at `url`, with ``volatileHeaderRanges`` zeroed when `maskingHeader`.
    private static func sha256(of url: URL, maskingHeader: Bool) throws -> String {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw readError(url, errno: errno) }
        defer { close(fd) }
        return try sha256(fd, url, maskingHeader: maskingHeader)
    }

    private static func sha256(_ fd: Int32, _ url: URL, maskingHeader: Bool) throws -> String {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var hasher = SHA256()
        var offset: off_t = 0
        while true {
            let count = pread(fd, buffer.baseAddress!, chunkSize, offset)
            if count < 0 {
                if errno == EINTR { continue }
                throw readError(url, errno: errno)
            }
            if count == 0 { break }
            if maskingHeader && offset == 0 {
                for range in volatileHeaderRanges where range.upperBound <= count {
                    (buffer.baseAddress! + range.lowerBound).initializeMemory(as: UInt8.self, repeating: 0, count: range.count)
                }
            }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            offset += off_t(count)
        }
        return hex(hasher.finalize())
    }

    /// The error Foundation's file APIs give for `code`: a `CocoaError` naming the file, the
    /// `POSIXError` underneath.
    private static func readError(_ url: URL, errno code: Int32) -> CocoaError {
        let kind: CocoaError.Code = switch code {
        case ENOENT: .fileReadNoSuchFile
        case EACCES, EPERM: .fileReadNoPermission
        default: .fileReadUnknown
        }
        return CocoaError(kind, userInfo: [NSFilePathErrorKey: url.path,
                                           NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)])
    }
}
