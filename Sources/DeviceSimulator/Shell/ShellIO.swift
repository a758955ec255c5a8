import Foundation
import Glibc

/// Where a command's output goes: the client connection (raw, or shell-protocol packets), a file,
/// a buffer (pipes), or nowhere.
class OutputSink {
    func write(_ bytes: UnsafeRawBufferPointer) throws {}
    func close() {}

    final func write(_ data: Data) throws {
        if data.isEmpty { return }
        try data.withUnsafeBytes { try write($0) }
    }

    final func write(_ string: String) throws {
        var s = string
        try s.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }
}

final class NullSink: OutputSink {}

final class BufferSink: OutputSink {
    var data = Data()
    override func write(_ bytes: UnsafeRawBufferPointer) throws { data.append(contentsOf: bytes) }
}

/// A host file opened for a redirection (`>FILE`, `>>FILE`).
final class FileSink: OutputSink {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    override func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 { if errno == EINTR { continue }; throw DeviceErrno.current() }
            done += n
        }
    }
    override func close() { _ = Glibc.close(fd) }
}

/// Raw bytes to the client (`exec:`, `shell:` without the shell protocol).
final class SocketSink: OutputSink {
    let socket: SocketConnection
    init(socket: SocketConnection) { self.socket = socket }
    override func write(_ bytes: UnsafeRawBufferPointer) throws { try socket.write(raw: bytes) }
}

/// Shell protocol v2 packets: id (1 byte), length (4 bytes little-endian), data.
final class ShellPacketSink: OutputSink {
    static let stdin: UInt8 = 0, stdout: UInt8 = 1, stderr: UInt8 = 2, exit: UInt8 = 3, closeStdin: UInt8 = 4
    static let windowSizeChange: UInt8 = 5
    let socket: SocketConnection
    let id: UInt8
    init(socket: SocketConnection, id: UInt8) {
        self.socket = socket
        self.id = id
    }
    override func write(_ bytes: UnsafeRawBufferPointer) throws {
        // adbd sends at most its buffer size per packet; the client accepts any length, but keep packets modest.
        var offset = 0
        while offset < bytes.count {
            let n = min(bytes.count - offset, 32 * 1024)
            try socket.write(Self.header(id: id, length: n))
            try socket.write(raw: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]))
            offset += n
        }
    }
    static func header(id: UInt8, length: Int) -> [UInt8] {
        let l = UInt32(length)
        return [id, UInt8(l & 0xFF), UInt8((l >> 8) & 0xFF), UInt8((l >> 16) & 0xFF), UInt8((l >> 24) & 0xFF)]
    }
}

/// The `dropNextTransfer` fault: passes on half of the first write, then cuts the connection.
final class DroppingSink: OutputSink {
    let inner: OutputSink
    let socket: SocketConnection
    init(inner: OutputSink, socket: SocketConnection) {
        self.inner = inner
        self.socket = socket
    }
    override func write(_ bytes: UnsafeRawBufferPointer) throws {
        let keep = max(1, bytes.count / 2)
        try? inner.write(UnsafeRawBufferPointer(rebasing: bytes[0..<min(keep, bytes.count)]))
        socket.abort()
        throw ConnectionClosed()
    }
}

/// Where a command's input comes from.
class InputSource {
    /// Up to `max` bytes, or nil at end of input.
    func read(max: Int) throws -> [UInt8]? { nil }
}

final class EmptyInput: InputSource {}

final class DataInput: InputSource {
    private var data: Data
    init(_ data: Data) { self.data = data }
    override func read(max: Int) throws -> [UInt8]? {
        if data.isEmpty { return nil }
        let n = min(max, data.count)
        let chunk = [UInt8](data.prefix(n))
        data.removeFirst(n)
        return chunk
    }
}

final class FileInput: InputSource {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    override func read(max: Int) throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, max) }
            if n < 0 { if errno == EINTR { continue }; throw DeviceErrno.current() }
            return n == 0 ? nil : Array(buffer[0..<n])
        }
    }
    func close() { _ = Glibc.close(fd) }
}

/// Raw bytes from the client until it closes its side (`exec:`, `shell:`).
final class SocketInput: InputSource {
    let socket: SocketConnection
    init(socket: SocketConnection) { self.socket = socket }
    override func read(max: Int) throws -> [UInt8]? { socket.readSome(max: max) }
}

/// Stdin packets of the shell protocol, until the client's close-stdin packet.
final class ShellPacketInput: InputSource {
    let socket: SocketConnection
    private var ended = false
    private var pending: [UInt8] = []
    init(socket: SocketConnection) { self.socket = socket }
    override func read(max: Int) throws -> [UInt8]? {
        while pending.isEmpty && !ended {
            guard let header = try? socket.readExactly(5) else { ended = true; break }
            let length = Int(UInt32(header[1]) | UInt32(header[2]) << 8 | UInt32(header[3]) << 16 | UInt32(header[4]) << 24)
            let body = length > 0 ? ((try? socket.readExactly(length)) ?? []) : []
            switch header[0] {
            case ShellPacketSink.stdin: pending = body
            case ShellPacketSink.closeStdin: ended = true
            default: continue    // window size changes and anything unknown
            }
        }
        if pending.isEmpty { return nil }
        let n = min(max, pending.count)
        defer { pending.removeFirst(n) }
        return Array(pending[0..<n])
    }
}

/// A command's three standard streams.
struct ShellIO {
    var stdin: InputSource
    var stdout: OutputSink
    var stderr: OutputSink

    func out(_ s: String) throws { try stdout.write(s) }
    func err(_ s: String) throws { try stderr.write(s) }

    /// The same streams, written one write at a time (for a script with background jobs).
    func serialized() -> ShellIO {
        if stdout is LockedSink { return self }
        let lock = NSLock()
        return ShellIO(stdin: stdin, stdout: LockedSink(stdout, lock), stderr: LockedSink(stderr, lock))
    }
}

/// Another sink behind a lock shared by the streams of one connection: a write lands whole.
final class LockedSink: OutputSink {
    let inner: OutputSink
    let lock: NSLock
    init(_ inner: OutputSink, _ lock: NSLock) {
        self.inner = inner
        self.lock = lock
    }
    override func write(_ bytes: UnsafeRawBufferPointer) throws { try lock.withLock { try inner.write(bytes) } }
    override func close() { inner.close() }
}
