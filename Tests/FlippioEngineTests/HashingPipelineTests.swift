@testable import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Both hashes of a stream, computed by two threads while it is produced, must be those of the
/// whole stream however it was cut.
@Suite("HashingPipeline")
struct HashingPipelineTests {
    /// Hands `bytes` over in pieces of the given sizes (cycled); returns both hashes (the content
    /// hash nil when not asked for).
    static func hashes(_ bytes: [UInt8], pieces: [Int], hashingContent: Bool = true) -> (content: String?, file: String) {
        let pipeline = HashingPipeline(hashingContent: hashingContent)
        var offset = 0, piece = 0
        while offset < bytes.count {
            let count = min(pieces[piece % pieces.count], bytes.count - offset, pipeline.chunkSize)
            let buffer = pipeline.nextBuffer()
            bytes[offset..<offset + count].withUnsafeBytes { buffer.copyMemory(from: $0) }
            pipeline.hash(count)
            offset += count
            piece += 1
        }
        return pipeline.finish()
    }

    @Test(arguments: [[2 << 20], [100, 7, 1 << 20], [1, 99, 3000], [5_000_000]])
    func theHashesAreThoseOfTheWholeStreamHoweverItIsCut(pieces: [Int]) throws {
        let dir = try TemporaryDirectory("flippio-hashing")
        var random = SplitMix64(seed: UInt64(pieces.reduce(0, +)))
        // Over two buffers' worth, not a whole number of them.
        let words = (0..<(5_000_123 / 8 + 1)).map { _ in random.next() }
        let bytes = Array(words.withUnsafeBytes { $0.prefix(5_000_123) })
        let file = dir.child("stream.db")
        try Data(bytes).write(to: file)

        let hashes = Self.hashes(bytes, pieces: pieces)
        #expect(hashes.file == (try ContentHash.sha256(fileAt: file)))
        #expect(hashes.content == (try ContentHash.sha256(databaseAt: file)), "the header's volatile bytes masked")
        #expect(hashes.content != hashes.file)
    }

    @Test func withoutTheContentHashOneHasherGivesTheWholeStreamsFileHash() throws {
        let dir = try TemporaryDirectory("flippio-hashing")
        var random = SplitMix64(seed: 42)
        // More buffers than the ring holds: the producer waits for the one hasher, never for a second.
        let words = (0..<(9_437_185 / 8 + 1)).map { _ in random.next() }
        let bytes = Array(words.withUnsafeBytes { $0.prefix(9_437_185) })
        let file = dir.child("stream.db")
        try Data(bytes).write(to: file)

        let hashes = Self.hashes(bytes, pieces: [1 << 20, 3], hashingContent: false)
        #expect(hashes.file == (try ContentHash.sha256(fileAt: file)))
        #expect(hashes.content == nil)
    }

    @Test func aStreamShorterThanTheHeaderAndAnEmptyOneAreHashedToo() throws {
        let dir = try TemporaryDirectory("flippio-hashing")
        for bytes in [[UInt8](repeating: 7, count: 30), []] {
            let file = dir.child("short-\(bytes.count)")
            try Data(bytes).write(to: file)
            let hashes = Self.hashes(bytes, pieces: [10])
            #expect(hashes.file == (try ContentHash.sha256(fileAt: file)))
            #expect(hashes.content == (try ContentHash.sha256(databaseAt: file)))
        }
    }

    @Test func finishingWithABufferTakenButNotHandedOverEndsTheThreads() {
        // A copy that fails after taking a buffer still calls finish() (in a defer): it must return.
        let pipeline = HashingPipeline()
        let buffer = pipeline.nextBuffer()
        buffer[0] = 1
        pipeline.hash(1)
        _ = pipeline.nextBuffer()
        let first = pipeline.finish()
        #expect(first.file == ContentHash.sha256(Data([1])))
        #expect(pipeline.finish() == first, "a second finish() returns the same")
    }
}
