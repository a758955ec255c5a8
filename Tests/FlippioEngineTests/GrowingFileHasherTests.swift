import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

@Suite("GrowingFileHasher")
struct GrowingFileHasherTests {
    /// Bytes that differ from chunk to chunk, so a chunk hashed twice or skipped changes the hash.
    static func bytes(_ count: Int, seed: UInt8) -> Data {
        Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) })
    }

    @Test func aFileWrittenInPieces_whileItIsRead_hashesLikeTheWholeFile() async throws {
        let dir = try TemporaryDirectory()
        let file = dir.child("pulled.db")
        try Data("stale content of an earlier attempt".utf8).write(to: file)
        let hasher = try GrowingFileHasher(fileAt: file)
        // The writer opens the file as ProcessRunner does for `.file(path:)`: O_TRUNC, same inode.
        let chunks = (0..<40).map { Self.bytes(100_003, seed: UInt8($0)) }
        let fd = open(file.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        #expect(fd >= 0)
        for chunk in chunks {
            chunk.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
            try await Task.sleep(for: .microseconds(300))
        }
        close(fd)
        let expected = ContentHash.sha256(chunks.reduce(Data(), +))
        #expect(try await hasher.finish() == expected)
        #expect(try ContentHash.sha256(fileAt: file) == expected)
    }

    @Test func anEmptyTransfer_isTheHashOfNothing() async throws {
        let dir = try TemporaryDirectory()
        let file = dir.child("empty.db")
        let hasher = try GrowingFileHasher(fileAt: file)
        #expect(try await hasher.finish() == AndroidBridge.emptyHash)
    }

    @Test func aWriterThatReplacesTheFile_isHashedFromThePath() async throws {
        let dir = try TemporaryDirectory()
        let file = dir.child("pulled.db")
        let hasher = try GrowingFileHasher(fileAt: file)
        let content = Self.bytes(70_000, seed: 7)
        try content.write(to: file, options: .atomic)  // a new inode by rename
        #expect(try await hasher.finish() == ContentHash.sha256(content))
    }

    @Test func cancel_endsTheReader() async throws {
        let dir = try TemporaryDirectory()
        let hasher = try GrowingFileHasher(fileAt: dir.child("x.db"))
        hasher.cancel()
        #expect(try await hasher.finish() == AndroidBridge.emptyHash)
    }
}
