import Foundation
import Glibc

/// An adb server that serves simulated devices: the real `adb` client talks to it unchanged.
///
/// It listens on `127.0.0.1` only and speaks the adb server's smart-socket protocol: host services
/// (`host:version`, `host:devices-l`, `host:track-devices`, `host:tport:serial:S`, ...) and, once
/// a device is selected, the device services `shell:` (raw and shell protocol v2), `exec:` and
/// `sync:`. Each device is a folder `DIR/SERIAL/` with a `device.json` and an `fs/` folder that is
/// the device's `/`; see docs/DEVSIM.md.
///
/// For example:
///
/// ```swift
/// let server = AdbServer(devicesDirectory: devices)
/// let port = try server.start()          // then: adb -P \(port) devices -l
/// defer { server.stop() }
/// ```
///
/// ## Topics
/// - ``start()``
/// - ``stop()``
public final class AdbServer: @unchecked Sendable {
    /// The protocol version the Debian adb 1:29.0.6 client expects (`host:version`); 41 = 0x29.
    public static let protocolVersion = 41
    /// The features every device advertises (no `stat_v2`/`ls_v2`/`sendrecv_v2`: sync v1 only).
    public static let deviceFeatures = ["shell_v2", "cmd"]

    public let devicesDirectory: URL
    let registry: DeviceRegistry
    let requestedPort: Int
    let logHandler: (@Sendable (String) -> Void)?
    let killHandler: (@Sendable () -> Void)?

    private let lock = NSLock()
    private var listenFD: Int32 = -1
    private var boundPort = 0
    private var stopped = false
    private var connections: [Int32: SocketConnection] = [:]

    /// - parameters:
    ///   - devicesDirectory: the folder holding one `SERIAL/` folder per device (created if missing).
    ///   - port: the TCP port on 127.0.0.1; 0 picks a free one. The default is 0.
    ///   - log: receives one line per request (for `--verbose`); nil logs nothing.
    ///   - onKill: called after answering `host:kill` (`adb kill-server`); nil keeps serving.
    public init(
        devicesDirectory: URL, port: Int = 0, log: (@Sendable (String) -> Void)? = nil,
        onKill: (@Sendable () -> Void)? = nil
    ) {
        self.devicesDirectory = devicesDirectory
        self.registry = DeviceRegistry(directory: devicesDirectory)
        self.requestedPort = port
        self.logHandler = log
        self.killHandler = onKill
    }

    /// The bound port (0 before ``start()``).
    public var port: Int {
        lock.lock(); defer { lock.unlock() }
        return boundPort
    }

    var isStopped: Bool {
        lock.lock(); defer { lock.unlock() }
        return stopped
    }

    /// Binds `127.0.0.1:port`, starts accepting connections and returns the bound port.
    ///
    /// - throws: ``AdbServerError`` when the socket cannot be bound (the port is taken).
    @discardableResult
    public func start() throws -> Int {
        try FileManager.default.createDirectory(at: devicesDirectory, withIntermediateDirectories: true)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AdbServerError("socket() failed: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(requestedPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw AdbServerError("cannot bind 127.0.0.1:\(requestedPort): \(message)")
        }
        guard listen(fd, 128) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw AdbServerError("listen() failed: \(message)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: actual.sin_port))
        lock.lock()
        listenFD = fd
        boundPort = port
        stopped = false
        lock.unlock()
        let thread = Thread { [self] in acceptLoop(fd) }
        thread.name = "devsim-accept"
        thread.start()
        return port
    }

    /// Stops accepting, cuts every open connection (track-devices streams, hangs) and returns.
    public func stop() {
        lock.lock()
        if stopped { lock.unlock(); return }
        stopped = true
        let fd = listenFD
        listenFD = -1
        let open = Array(connections.values)
        lock.unlock()
        if fd >= 0 {
            _ = shutdown(fd, Int32(SHUT_RDWR))
            Glibc.close(fd)
        }
        open.forEach { $0.shutdown() }
    }

    deinit { stop() }

    private func acceptLoop(_ listenFD: Int32) {
        while !isStopped {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let connection = SocketConnection(fd: fd)
            lock.lock()
            if stopped {
                lock.unlock()
                connection.close()
                return
            }
            connections[fd] = connection
            lock.unlock()
            let thread = Thread { [self] in
                serve(connection)
                lock.lock()
                connections[connection.fd] = nil
                lock.unlock()
                connection.close()
            }
            thread.name = "devsim-connection"
            thread.stackSize = 4 << 20
            thread.start()
        }
    }

    func log(_ line: @autoclosure () -> String) {
        logHandler?(line())
    }

    /// Sleeps in small steps; false when the server stopped or the client went away meanwhile.
    func pause(seconds: Double, connection: SocketConnection) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if isStopped { return false }
            let left = deadline.timeIntervalSinceNow
            if connection.peerClosed(waitingMs: Int32(max(1, min(50, left * 1000)))) { return false }
        }
        return !isStopped
    }
}

/// The server could not start.
public struct AdbServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
