import Foundation
import Glibc

/// The `sync:` service (adb push/pull), version 1: STAT, LIST, RECV, SEND, DATA, DONE, QUIT.
///
/// Requests are an id (4 ASCII bytes) and a little-endian 32-bit length; paths follow. adbd runs
/// it as the shell user, so the phone's permissions apply (no `/data/data/PKG`).
extension AdbServer {
    static let syncDataMax = 64 * 1024

    func runSync(device: SimulatedDevice, connection: SocketConnection) throws {
        let fs = DeviceFileSystem(device: device, user: .shell)
        while true {
            let header = try connection.readExactly(8)
            let id = String(decoding: header[0..<4], as: UTF8.self)
            let length = Int(UInt32(header[4]) | UInt32(header[5]) << 8 | UInt32(header[6]) << 16 | UInt32(header[7]) << 24)
            if id == "QUIT" {
                connection.finish()
                return
            }
            guard length <= 1024 else {
                try syncFail(connection, "path too long")
                connection.finish()
                return
            }
            let path = String(decoding: try connection.readExactly(length), as: UTF8.self)
            switch id {
            case "STAT":
                registry.log(serial: device.serial, service: "sync", command: path, op: "STAT")
                try syncStat(path, fs: fs, connection)
            case "LIST":
                registry.log(serial: device.serial, service: "sync", command: path, op: "LIST")
                try syncList(path, fs: fs, connection)
            case "RECV":
                registry.log(serial: device.serial, service: "sync", command: path, op: "RECV")
                guard try syncReceive(path, fs: fs, device: device, connection) else { return }
            case "SEND":
                let target = path.lastIndex(of: ",").map { String(path[..<$0]) } ?? path
                registry.log(serial: device.serial, service: "sync", command: target, op: "SEND")
                guard try syncSend(path, fs: fs, device: device, connection) else { return }
            default:
                try syncFail(connection, "unknown command \(id)")
                connection.finish()
                return
            }
        }
    }

    private static func le32(_ value: UInt32) -> [UInt8] {
        [UInt8(value & 0xFF), UInt8((value >> 8) & 0xFF), UInt8((value >> 16) & 0xFF), UInt8((value >> 24) & 0xFF)]
    }

    private func syncFail(_ connection: SocketConnection, _ message: String) throws {
        try connection.write(Array("FAIL".utf8) + Self.le32(UInt32(message.utf8.count)) + Array(message.utf8))
    }

    /// STAT (lstat): mode, size, mtime; all zero when the path cannot be seen.
    private func syncStat(_ path: String, fs: DeviceFileSystem, _ connection: SocketConnection) throws {
        var mode: UInt32 = 0, size: UInt32 = 0, mtime: UInt32 = 0
        if let r = try? fs.resolve(path, cwd: "/", followLast: false), let st = try? fs.status(r) {
            mode = UInt32(st.st_mode)
            size = UInt32(truncatingIfNeeded: st.st_size)
            mtime = UInt32(truncatingIfNeeded: st.st_mtim.tv_sec)
        }
        try connection.write(Array("STAT".utf8) + Self.le32(mode) + Self.le32(size) + Self.le32(mtime))
    }

    /// LIST: one DENT per entry (with `.` and `..`, as readdir gives them), then DONE.
    private func syncList(_ path: String, fs: DeviceFileSystem, _ connection: SocketConnection) throws {
        if let r = try? fs.resolve(path, cwd: "/"), let names = try? fs.list(r) {
            for name in [".", ".."] + names {
                var st = stat()
                let host = name == "." ? r.host : name == ".." ? r.host + "/.." : r.host + "/" + name
                guard lstat(host, &st) == 0 else { continue }
                let bytes = Array(name.utf8)
                var entry = Array("DENT".utf8)
                entry += Self.le32(UInt32(st.st_mode)) + Self.le32(UInt32(truncatingIfNeeded: st.st_size))
                entry += Self.le32(UInt32(truncatingIfNeeded: st.st_mtim.tv_sec)) + Self.le32(UInt32(bytes.count)) + bytes
                try connection.write(entry)
            }
        }
        try connection.write(Array("DONE".utf8) + [UInt8](repeating: 0, count: 16))
    }

    /// RECV: DATA chunks of at most 64 KiB, then DONE; FAIL with adbd's text when the file cannot be read.
    /// Returns false when the connection is over.
    private func syncReceive(_ path: String, fs: DeviceFileSystem, device: SimulatedDevice, _ connection: SocketConnection) throws -> Bool {
        let fd: Int32
        do {
            let r = try fs.resolve(path, cwd: "/")
            try fs.check(r, .read)
            fd = open(r.host, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw DeviceErrno.current() }
        } catch let e as DeviceErrno {
            try syncFail(connection, "open failed: \(e.text)")
            return true
        }
        defer { close(fd) }
        let dropping = registry.takeDropTransfer(serial: device.serial)
        var buffer = [UInt8](repeating: 0, count: Self.syncDataMax)
        while true {
            if isStopped { throw ConnectionClosed() }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, Self.syncDataMax) }
            if n < 0 {
                if errno == EINTR { continue }
                try syncFail(connection, "read failed: \(DeviceErrno.current().text)")
                return true
            }
            if n == 0 { break }
            try connection.write(Array("DATA".utf8) + Self.le32(UInt32(n)))
            if dropping {
                // The `dropNextTransfer` fault: half a chunk, then the cable is pulled.
                try buffer.withUnsafeBytes { try connection.write(raw: UnsafeRawBufferPointer(rebasing: $0[0..<max(1, n / 2)])) }
                connection.abort()
                return false
            }
            try buffer.withUnsafeBytes { try connection.write(raw: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        if dropping {
            connection.abort()
            return false
        }
        try connection.write(Array("DONE".utf8) + Self.le32(0))
        return true
    }

    /// SEND `path,mode`, then DATA... and DONE (with the mtime); OKAY when written, or FAIL.
    private func syncSend(_ spec: String, fs: DeviceFileSystem, device: SimulatedDevice, _ connection: SocketConnection) throws -> Bool {
        var path = spec
        var mode: mode_t = 0o644
        if let comma = spec.lastIndex(of: ",") {
            path = String(spec[..<comma])
            mode = (mode_t(spec[spec.index(after: comma)...]) ?? 0o644) & 0o777
        }
        var fd: Int32 = -1
        var failure: String?
        do {
            let r = try fs.resolve(path, cwd: "/")
            try fs.check(r, .write)
            var st = stat()
            if lstat(r.host, &st) == 0 {
                if (st.st_mode & S_IFMT) == S_IFDIR { throw DeviceErrno.isDirectory }
                unlink(r.host)
            }
            fd = open(r.host, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
            if fd < 0 && errno == ENOENT {
                // adbd creates missing parent folders (secure_mkdirs) where the user may.
                var prefix: [String] = []
                for component in r.components.dropLast() {
                    prefix.append(component)
                    let dir = try fs.resolve("/" + prefix.joined(separator: "/"), cwd: "/")
                    if !fs.exists(dir) {
                        guard fs.allowed(dir.components, .write) else {
                            failure = "secure_mkdirs failed: Permission denied"
                            break
                        }
                        Glibc.mkdir(dir.host, 0o775)
                    }
                }
                if failure == nil { fd = open(r.host, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode) }
            }
            if failure == nil && fd < 0 { throw DeviceErrno.current() }
        } catch let e as DeviceErrno {
            failure = "couldn't create file: \(e.text)"
        }
        if let failure {
            // As adbd: report, then swallow the DATA the client already sent until its DONE.
            try syncFail(connection, failure)
            try discardUntilDone(connection)
            connection.finish()
            return false
        }
        defer { if fd >= 0 { close(fd) } }
        let dropping = registry.takeDropTransfer(serial: device.serial)
        let sink = FileSink(fd: fd)
        var received = 0
        let link = registry.linkBytesPerSecond(serial: device.serial)
        let started = Date()
        while true {
            let header = try connection.readExactly(8)
            let id = String(decoding: header[0..<4], as: UTF8.self)
            let value = UInt32(header[4]) | UInt32(header[5]) << 8 | UInt32(header[6]) << 16 | UInt32(header[7]) << 24
            if id == "DONE" {
                var times = [timeval(tv_sec: Int(value), tv_usec: 0), timeval(tv_sec: Int(value), tv_usec: 0)]
                if let r = try? fs.resolve(path, cwd: "/") { _ = utimes(r.host, &times) }
                // The payload's size, so tests can count what a push sent over the wire.
                registry.log(serial: device.serial, service: "sync", command: path, op: "DONE", bytes: received)
                try connection.write(Array("OKAY".utf8) + Self.le32(0))
                return true
            }
            guard id == "DATA", Int(value) <= Self.syncDataMax else {
                try syncFail(connection, "invalid data message")
                connection.finish()
                return false
            }
            let chunk = try connection.readExactly(Int(value))
            received += chunk.count
            if let link {
                // The modelled cable: no faster than `linkBytesPerSecond` on average.
                let due = Double(received) / Double(link) - Date().timeIntervalSince(started)
                if due > 0 { Thread.sleep(forTimeInterval: due) }
            }
            if dropping {
                try? chunk.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<(chunk.count / 2)])) }
                connection.abort()
                return false
            }
            do {
                try chunk.withUnsafeBytes { try sink.write($0) }
            } catch let e as DeviceErrno {
                try syncFail(connection, "write failed: \(e.text)")
                try discardUntilDone(connection)
                connection.finish()
                return false
            }
        }
    }

    private func discardUntilDone(_ connection: SocketConnection) throws {
        while true {
            let header = try connection.readExactly(8)
            let id = String(decoding: header[0..<4], as: UTF8.self)
            let value = Int(UInt32(header[4]) | UInt32(header[5]) << 8 | UInt32(header[6]) << 16 | UInt32(header[7]) << 24)
            if id == "DONE" { return }
            guard id == "DATA", value <= Self.syncDataMax else { return }
            _ = try connection.readExactly(value)
        }
    }
}
