import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A stand-in for systemd's notification socket: a real AF_UNIX datagram socket that records
/// every message a service sends (`READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`).
public final class NotifySocketListener: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [(Date, String)] = []
    private var reader: Thread?

    public init(directory: URL) throws {
        path = directory.appendingPathComponent("notify-\(UUID().uuidString.prefix(6)).sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw ShellError("socket() failed: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw ShellError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { throw ShellError("bind(\(path)) failed: \(errno)") }
        let thread = Thread { [weak self] in self?.readLoop() }
        reader = thread
        thread.start()
    }

    private func readLoop() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return }
            let text = String(decoding: buffer[0..<n], as: UTF8.self)
            lock.withLock {
                for line in text.split(separator: "\n") { received.append((Date(), String(line))) }
            }
        }
    }

    /// Every message so far, in order, with the time it arrived.
    public var messages: [(at: Date, text: String)] {
        lock.withLock { received.map { (at: $0.0, text: $0.1) } }
    }

    public var texts: [String] { messages.map(\.text) }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(path)
    }
}
