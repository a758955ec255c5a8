import Glibc
import Foundation

/// The peer went away, or the server is stopping: the connection is over.
struct ConnectionClosed: Error {}

/// One accepted TCP connection, read and written with blocking POSIX calls.
///
/// Every connection is served by its own thread, so blocking is fine; ``shutdown()`` from another
/// thread (the server stopping) wakes a blocked read or write with an error.
final class SocketConnection: @unchecked Sendable {
    let fd: Int32
    private let lock = NSLock()
    private var closed = false

    init(fd: Int32) {
        self.fd = fd
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    // MARK: - Reading

    /// Reads exactly `count` bytes, or throws ``ConnectionClosed`` at end of stream.
    func readExactly(_ count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { raw in
                recv(fd, raw.baseAddress! + done, count - done, 0)
            }
            if n > 0 { done += n; continue }
            if n < 0 && errno == EINTR { continue }
            throw ConnectionClosed()
        }
        return buffer
    }

    /// Reads whatever is available (at most `max` bytes); nil at end of stream or on error.
    func readSome(max: Int = 65536) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in recv(fd, raw.baseAddress!, max, 0) }
            if n > 0 { return Array(buffer[0..<n]) }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// Reads an adb smart-socket request: four hex digits of length, then the payload.
    func readProtocolString() throws -> String {
        let header = try readExactly(4)
        guard let length = Int(String(decoding: header, as: UTF8.self), radix: 16) else {
            throw ConnectionClosed()
        }
        let payload = try readExactly(length)
        return String(decoding: payload, as: UTF8.self)
    }

    func readUInt32LE() throws -> UInt32 {
        let b = try readExactly(4)
        return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
    }

    /// Waits up to `timeoutMs` for the peer; true when it closed its side (or failed).
    ///
    /// Used by long-lived answers (track-devices, hangs) to notice a client that gave up.
    func peerClosed(waitingMs timeoutMs: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let r = poll(&pfd, 1, timeoutMs)
        if r <= 0 { return false }
        if pfd.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { return true }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
        if n > 0 {
            // Unread input (e.g. a close-stdin packet): not a close, and poll would return at once.
            usleep(useconds_t(timeoutMs) * 1000)
            return false
        }
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    }

    /// True when the peer closed its side (or the connection failed), without waiting and
    /// without reading: unread input (a close-stdin packet) does not hide the hang-up.
    func hungUp() -> Bool {
        let readHangUp: Int16 = 0x2000  // POLLRDHUP: Glibc's module leaves out this GNU flag
        var pfd = pollfd(fd: fd, events: readHangUp, revents: 0)
        guard poll(&pfd, 1, 0) > 0 else { return false }
        return pfd.revents & (readHangUp | Int16(POLLERR | POLLHUP | POLLNVAL)) != 0
    }

    // MARK: - Writing

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(raw: $0) }
    }

    func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write(raw: $0) }
    }

    func write(_ string: String) throws { try write(Array(string.utf8)) }

    func write(raw: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < raw.count {
            let n = send(fd, raw.baseAddress! + done, raw.count - done, Int32(MSG_NOSIGNAL))
            if n > 0 { done += n; continue }
            if n < 0 && errno == EINTR { continue }
            throw ConnectionClosed()
        }
    }

    /// `OKAY`.
    func sendOkay() throws { try write("OKAY") }

    /// `OKAY` followed by a length-prefixed payload (the answer of a host query).
    func sendOkay(_ payload: String) throws {
        try write("OKAY" + Self.hexLength(payload) + payload)
    }

    /// `FAIL` followed by a length-prefixed message, as the adb server reports errors.
    func sendFail(_ message: String) throws {
        try write("FAIL" + Self.hexLength(message) + message)
    }

    static func hexLength(_ payload: String) -> String {
        let n = payload.utf8.count
        let hex = String(n, radix: 16)
        return String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    // MARK: - Closing

    /// Ends the exchange politely: no more writes, read what the client still sends (briefly)
    /// and close. Closing with unread input would make the kernel reset the connection, and a
    /// reset can destroy the last answer (the exit packet) before the client has read it.
    func finish(drainTimeoutMs: Int32 = 2000) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(drainTimeoutMs) * 1_000_000
        while DispatchTime.now().uptimeNanoseconds < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, 100)
            if r < 0 && errno != EINTR { break }
            if r <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, 4096, Int32(MSG_DONTWAIT)) }
            if n == 0 { break }
            if n < 0 && errno != EAGAIN && errno != EINTR { break }
        }
        close()
    }

    /// Cuts the connection at once (a dropped transfer, a dying device).
    func abort() {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
        close()
    }

    /// Wakes a thread blocked on this connection (used when the server stops).
    func shutdown() {
        lock.lock(); defer { lock.unlock() }
        if !closed { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    func close() {
        lock.lock(); defer { lock.unlock() }
        if closed { return }
        closed = true
        _ = Glibc.close(fd)
    }
}
