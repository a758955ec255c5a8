import Crypto
import Foundation
import Synchronization

/// Hashes a file while another process writes it, so that a transfer is verified without reading
/// the whole file again once it has arrived.
///
/// For a file written from offset 0 by appends only, such as `adb exec-out cat FILE > local`.
/// ``init(fileAt:)`` creates (or empties) the file *before* the writer starts, so the writer's
/// `open(O_TRUNC)` and this reader's descriptor are the same inode. A thread of its own reads what
/// has been written so far (from the page cache) and feeds SHA-256, waiting a millisecond when it
/// has caught up; ``finish()``, called once the writer has exited, reads the rest and returns the
/// hash of the file's whole content.
///
/// For example:
///
/// ```swift
/// let hasher = try GrowingFileHasher(fileAt: local)
/// let result = try await runner.run(catCommand)   // output: .file(path: local.path)
/// let sha256 = try await hasher.finish()           // what `sha256sum` prints for the same bytes
/// ```
///
/// When the file at the path is not the one followed when the writer is done (replaced by a
/// rename) or not as long as what was read, the file at the path is hashed again from the start.
///
/// - Important: call ``finish()`` (or ``cancel()``) on every path, also when the writer failed:
///   the reading thread runs until then.
final class GrowingFileHasher: Sendable {
    private struct State {
        var writerDone = false
        var result: Result<String, FlippioError>?
        var waiter: CheckedContinuation<Result<String, FlippioError>, Never>?
    }

    private let fd: Int32
    private let path: String
    private let state = Mutex(State())
    /// How long the reader waits when it has read everything written so far.
    private static let pause: useconds_t = 1000
    private static let chunkSize = 1 << 20

    /// Creates `url` empty (truncating what was there) and starts reading it as it grows.
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed`` when the file cannot be created.
    init(fileAt url: URL) throws {
        path = url.path
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: path, errno: errno) }
        self.fd = fd
        Thread.detachNewThread { [self] in read() }
    }

    deinit {
        close(fd)
    }

    /// After the writer exited: reads what is left and returns the file's SHA-256 (lowercase hex).
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed`` when the file could not be read.
    func finish() async throws -> String {
        let result = await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Result<String, FlippioError>? in
                state.writerDone = true
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        return try result.get()
    }

    /// Stops reading (the writer failed): the reading thread ends at the end of the file.
    func cancel() {
        state.withLock { $0.writerDone = true }
    }

    private func read() {
        var hasher = SHA256()
        var offset: off_t = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunkSize, alignment: 16)
        defer { buffer.deallocate() }
        var result: Result<String, FlippioError>
        while true {
            // Whether the writer had exited is read *before* the read: then an end of file is the end.
            let writerDone = state.withLock { $0.writerDone }
            let count = pread(fd, buffer.baseAddress, buffer.count, offset)
            if count > 0 {
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                offset += off_t(count)
            } else if count < 0 {
                if errno == EINTR { continue }
                result = .failure(FlippioError.workspaceWriteFailed(path: path, errno: errno))
                break
            } else if writerDone {
                result = isWholeFile(readUpTo: offset) ? .success(ContentHash.hex(hasher.finalize())) : hashAgain()
                break
            } else {
                usleep(Self.pause)
            }
        }
        let waiter = state.withLock { state -> CheckedContinuation<Result<String, FlippioError>, Never>? in
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: result)
    }

    /// Whether what was read is the file at `path` now: the same inode (a writer that replaced
    /// the file instead of writing into it, as a rename would, left this descriptor on the old
    /// one) and as many bytes.
    private func isWholeFile(readUpTo offset: off_t) -> Bool {
        var read = stat(), current = stat()
        guard fstat(fd, &read) == 0, stat(path, &current) == 0 else { return false }
        return read.st_ino == current.st_ino && read.st_dev == current.st_dev && current.st_size == offset
    }

    /// The hash of the file at `path`, read once more from the start (when the file followed is not it).
    private func hashAgain() -> Result<String, FlippioError> {
        do { return .success(try ContentHash.sha256(fileAt: URL(fileURLWithPath: path))) } catch {
            return .failure(FlippioError.workspaceWriteFailed(path: path, errno: errno == 0 ? EIO : errno))
        }
    }
}
