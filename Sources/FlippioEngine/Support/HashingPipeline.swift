import Crypto
import Dispatch
import Foundation
import Synchronization

/// Both hashes of a stream of chunks (``ContentHash/sha256(databaseAt:)`` and the plain SHA-256),
/// or the plain one alone, computed on a thread each while the producer fills the next chunk.
///
/// A copy that is hashed afterwards reads every byte twice more (once per hash); hashing the
/// chunks the copy already holds in memory costs no read at all, and the two SHA-256 passes run
/// beside the copy instead of after it. At 200 MB: copy 85 ms, each hash ~140 ms.
///
/// The producer takes a buffer, fills it, hands it over, and so on; the buffers are a ring of a
/// few chunks, so the producer waits only when it is that far ahead of the slower hasher:
///
/// ```swift
/// let pipeline = HashingPipeline()
/// defer { pipeline.finish() }          // also on an error: the threads end
/// let buffer = pipeline.nextBuffer()
/// let count = read(into: buffer)
/// pipeline.hash(count)
/// let (content, file) = pipeline.finish()
/// ```
///
/// Without the content hash (`HashingPipeline(hashingContent: false)`) one hasher runs: the push
/// of a snapshot needs only the plain hash before the device checks its copy, and the content
/// hash is computed afterwards, off the push's path (``Snapshotter/defersContentHash``).
///
/// Not for concurrent producers: one thread calls ``nextBuffer()``, ``hash(_:)`` and ``finish()``.
/// The hashers are plain threads, not Dispatch work items: a hasher must run while the producer
/// waits for it, which a pool as wide as the cores (two here) does not promise.
final class HashingPipeline: @unchecked Sendable {
    /// The size of each buffer.
    let chunkSize = 2 << 20
    private static let slotCount = 4
    private static let contentHasher = 0, fileHasher = 1

    private let buffers: [UnsafeMutableRawBufferPointer]
    /// Bytes handed over in each slot; 0 ends the stream.
    private let lengths: UnsafeMutablePointer<Int>
    /// `ready[hasher][slot]`: the slot holds a chunk that hasher has not hashed yet.
    private let ready: [[DispatchSemaphore]]
    /// `free[hasher][slot]`: that hasher is done with the slot.
    private let free: [[DispatchSemaphore]]
    private let exited = DispatchSemaphore(value: 0)
    /// Each hasher's result, written before it signals ``exited`` (both threads write it: a lock,
    /// not a plain array, which two simultaneous writes would race on).
    private let results = Mutex<[String?]>([nil, nil])
    /// The hashers running: the file hasher, and the content hasher unless it was not asked for.
    private let hashers: [Int]

    // The producer's state.
    private var handedOver = 0
    private var taken: Int?
    private var finished = false

    init(hashingContent: Bool = true) {
        hashers = hashingContent ? [Self.contentHasher, Self.fileHasher] : [Self.fileHasher]
        buffers = (0..<Self.slotCount).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 4096) }
        lengths = .allocate(capacity: Self.slotCount)
        lengths.initialize(repeating: 0, count: Self.slotCount)
        ready = (0..<2).map { _ in (0..<Self.slotCount).map { _ in DispatchSemaphore(value: 0) } }
        free = (0..<2).map { _ in (0..<Self.slotCount).map { _ in DispatchSemaphore(value: 1) } }
        for hasher in hashers {
            let thread = Thread { [self] in run(hasher) }
            thread.name = "flippio.hash"
            thread.start()
        }
    }

    /// The buffer to fill with the next chunk (up to ``chunkSize`` bytes); waits until both
    /// hashers are done with it.
    func nextBuffer() -> UnsafeMutableRawBufferPointer {
        precondition(taken == nil && !finished, "HashingPipeline: a buffer is taken twice, or after finish()")
        let slot = handedOver % Self.slotCount
        for hasher in hashers { free[hasher][slot].wait() }
        taken = slot
        return buffers[slot]
    }

    /// Hands the first `count` bytes (more than 0) of the buffer ``nextBuffer()`` gave to both hashers.
    func hash(_ count: Int) {
        guard let slot = taken, count > 0 else { preconditionFailure("HashingPipeline: nothing to hand over") }
        hand(slot, count)
    }

    /// Ends the stream, waits for the hashers and frees the buffers; the hashes of everything
    /// handed over (the content hash nil when it was not asked for). Later calls return the same.
    @discardableResult
    func finish() -> (content: String?, file: String) {
        if !finished {
            if taken == nil { _ = nextBuffer() }
            hand(taken!, 0)
            finished = true
            for _ in hashers { exited.wait() }
            for buffer in buffers { buffer.deallocate() }
            lengths.deallocate()
        }
        return results.withLock { ($0[Self.contentHasher], $0[Self.fileHasher] ?? "") }
    }

    private func hand(_ slot: Int, _ count: Int) {
        lengths[slot] = count
        for hasher in hashers { ready[hasher][slot].signal() }
        handedOver += 1
        taken = nil
    }

    private func run(_ hasher: Int) {
        var sha = SHA256()
        var chunk = 0
        // The content hash masks the header's volatile bytes, wherever the chunks cut it: the
        // first bytes are held back until the header is whole (or the stream ends), then masked
        // as ``ContentHash`` masks a file's first read.
        var header: [UInt8]? = hasher == Self.contentHasher ? [] : nil
        func flushHeader() {
            guard let bytes = header else { return }
            sha.update(data: ContentIdentity.masked(Data(bytes)))
            header = nil
        }
        while true {
            let slot = chunk % Self.slotCount
            ready[hasher][slot].wait()
            let count = lengths[slot]
            if count == 0 {
                free[hasher][slot].signal()
                break
            }
            var bytes = UnsafeRawBufferPointer(rebasing: buffers[slot][0..<count])
            if let held = header {
                // The other hasher reads the same bytes: mask a copy, never the buffer.
                let take = min(SQLiteHeader.length - held.count, bytes.count)
                header! += bytes.prefix(take)
                bytes = UnsafeRawBufferPointer(rebasing: bytes[take...])
                if header!.count == SQLiteHeader.length { flushHeader() }
            }
            sha.update(bufferPointer: bytes)
            free[hasher][slot].signal()
            chunk += 1
        }
        flushHeader()
        let digest = ContentHash.hex(sha.finalize())
        results.withLock { $0[hasher] = digest }
        exited.signal()
    }
}
