import Crypto
import Foundation

/// SHA-256 of files and bytes, as lowercase hex (the format `sha256sum` prints).
///
/// - Important: never hash a live database file the agent keeps open in its pool: reading it
///   through a separate file descriptor and closing that descriptor drops SQLite's POSIX locks
///   for the whole process. Hash snapshots and pulled files only.
public enum ContentHash {
    /// Hex SHA-256 of `data`.
    public static func sha256(_ data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    /// Hex SHA-256 of a file's bytes, read in 1 MiB chunks.
    public static func sha256(fileAt url: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
        }
        return hex(hasher.finalize())
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
        try hashes(ofDatabaseAt: url).content
    }

    /// Both hashes of a database file in one read: its content identity
    /// (``sha256(databaseAt:)``) and the SHA-256 of its plain bytes (what `sha256sum` on a
    /// device prints for the same file, to verify a transfer).
    public static func hashes(ofDatabaseAt url: URL) throws -> (content: String, file: String) {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var content = SHA256()
        var file = SHA256()
        var first = true
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            file.update(data: chunk)
            content.update(data: first ? ContentIdentity.masked(chunk) : chunk)
            first = false
        }
        return (hex(content.finalize()), hex(file.finalize()))
    }

    /// A finished digest as lowercase hex (for hashers fed piece by piece elsewhere).
    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
