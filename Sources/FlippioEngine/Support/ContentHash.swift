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

    /// Hex of a digest computed elsewhere (e.g. read back through a mount).
    static func sha256Hex(_ digest: SHA256.Digest) -> String { hex(digest) }

    private static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
