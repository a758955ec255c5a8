import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tells systemd how the service is doing, as `sd_notify(3)` does, without linking libsystemd.
///
/// Each call sends one datagram (`AF_UNIX`, `SOCK_DGRAM`) to the socket named by `$NOTIFY_SOCKET`.
/// A name that starts with `@` is an abstract socket (the `@` becomes a NUL byte). When
/// `$NOTIFY_SOCKET` is unset (the agent runs in a terminal, not under systemd) every call does
/// nothing and succeeds.
///
/// For example:
///
/// ```swift
/// let notifier = SystemdNotifier(environment: ProcessInfo.processInfo.environment)
/// try notifier.status("watching 3 databases")
/// try notifier.ready()
/// ```
///
/// The unit file uses `NotifyAccess=main`, so only the agent's own process may notify: children
/// (such as `adb`) get an environment without `NOTIFY_SOCKET` from ``scrubbedEnvironment(_:)``.
///
/// ## Topics
/// - ``ready(status:)``
/// - ``status(_:)``
/// - ``watchdog()``
/// - ``stopping()``
/// - ``reloading()``
/// - ``WatchdogSchedule``
public struct SystemdNotifier: Sendable, Equatable {
    /// The raw value of `$NOTIFY_SOCKET`, or nil when the service is not run by systemd.
    public let notifySocket: String?

    /// Reads `$NOTIFY_SOCKET` from `environment`. An empty value counts as unset.
    public init(environment: [String: String]) {
        let value = environment["NOTIFY_SOCKET"] ?? ""
        notifySocket = value.isEmpty ? nil : value
    }

    /// Whether notifications go anywhere (systemd started this process with `Type=notify`).
    public var isEnabled: Bool { notifySocket != nil }

    // MARK: - Notifications

    /// `READY=1`: start-up is complete (sent after the workspace is loaded and the watches are armed).
    public func ready(status: String? = nil) throws {
        var lines = ["READY=1"]
        if let status { lines.append("STATUS=" + Self.oneLine(status)) }
        try send(lines.joined(separator: "\n"))
    }

    /// `STATUS=…`: a one-line status that `systemctl status` shows.
    public func status(_ text: String) throws {
        try send("STATUS=" + Self.oneLine(text))
    }

    /// `WATCHDOG=1`: the keep-alive ping. Send it every ``WatchdogSchedule/interval``.
    public func watchdog() throws {
        try send("WATCHDOG=1")
    }

    /// `STOPPING=1`: a graceful stop has begun.
    public func stopping() throws {
        try send("STOPPING=1")
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC=` stamp that systemd 253 and later expect with it.
    /// Send ``ready(status:)`` again when the reload is done.
    public func reloading() throws {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let usec = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
        try send("RELOADING=1\nMONOTONIC_USEC=\(usec)")
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) as one datagram.
    ///
    /// Does nothing when `$NOTIFY_SOCKET` is unset.
    ///
    /// - throws: ``FlippioError`` with code `internal-error` when the socket address is not usable
    ///   (not absolute, not abstract, or too long) or the datagram could not be sent.
    public func send(_ state: String) throws {
        guard let socket = notifySocket else { return }
        var address = try Self.address(for: socket)
        let fd = Self.openSocket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Self.failure("socket()", errno, socket) }
        defer { close(fd) }
        let bytes = Array(state.utf8)
        // Never block: a reader that stopped reading would otherwise stall the thread that
        // notifies, and on two cores the whole agent with it. systemd always reads; a full
        // queue means a stuck reader, and that message is dropped (EAGAIN) instead.
        let sent = withUnsafePointer(to: &address.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { buffer in
                    sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), sa, address.length)
                }
            }
        }
        guard sent >= 0 else { throw Self.failure("sendto()", errno, socket) }
        guard sent == bytes.count else {
            throw FlippioError.internalError("systemd notification to \(socket) was cut short (\(sent) of \(bytes.count) bytes).")
        }
    }

    // MARK: - Environment for children

    /// The variables that tie a process to its systemd unit's notification and watchdog.
    public static let notificationVariables: Set<String> = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]

    /// `env` without `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, for child processes
    /// (`adb`, the iOS tools): only the agent itself may talk to systemd.
    public static func scrubbedEnvironment(_ env: [String: String]) -> [String: String] {
        env.filter { !notificationVariables.contains($0.key) }
    }

    // MARK: - Private

    private static func openSocket(_ domain: Int32, _ type: Int32, _ proto: Int32) -> Int32 {
        socket(domain, type, proto)
    }

    /// A `sockaddr_un` and the exact length to pass to `sendto`.
    struct Address {
        var storage: sockaddr_un
        var length: socklen_t
    }

    /// Builds the socket address. For a path the length covers the path and its NUL; for an abstract
    /// name it covers the leading NUL and the name exactly (trailing bytes would be part of the name).
    static func address(for socket: String) throws -> Address {
        var storage = sockaddr_un()
        storage.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: storage.sun_path)
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        var name = Array(socket.utf8)
        let abstract = name.first == UInt8(ascii: "@")
        guard abstract || name.first == UInt8(ascii: "/") else {
            throw FlippioError.internalError("NOTIFY_SOCKET=\(socket) is neither an absolute path nor an abstract socket name.")
        }
        if abstract { name[0] = 0 }
        // A path needs room for its terminating NUL; an abstract name does not have one.
        guard name.count + (abstract ? 0 : 1) <= capacity else {
            throw FlippioError.internalError("NOTIFY_SOCKET=\(socket) is longer than a socket address can hold.")
        }
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            for (index, byte) in name.enumerated() { raw[index] = byte }
        }
        let length = pathOffset + name.count + (abstract ? 0 : 1)
        return Address(storage: storage, length: socklen_t(length))
    }

    /// systemd reads one assignment per line: a status with a newline would end early.
    static func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\r\n", with: " ")
            .replacingOccurrences(of: "\n", with: " ")
            .replacingOccurrences(of: "\r", with: " ")
    }

    static func failure(_ call: String, _ code: Int32, _ socket: String) -> FlippioError {
        let reason = String(cString: strerror(code))
        return FlippioError(.internalError, "Could not notify systemd through \(socket): \(call) failed: \(reason).",
                            remedy: "Check that the unit has NotifyAccess=main and that the agent runs as its main process.",
                            context: ["socket": socket, "errno": String(code)])
    }
}

/// When and how often to send `WATCHDOG=1`, from `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
///
/// systemd sets `WATCHDOG_USEC` when the unit has `WatchdogSec=`. The schedule applies only when
/// `WATCHDOG_PID` is unset or equals this process's id (a variable inherited by a child is not
/// meant for it). Pings go out at half the timeout, as `sd_watchdog_enabled(3)` recommends.
public struct WatchdogSchedule: Sendable, Equatable {
    /// How long systemd waits for a ping before it kills and restarts the service.
    public let timeout: Duration

    /// How often to ping: half of ``timeout``.
    public var interval: Duration { timeout / 2 }

    /// Creates a schedule for a known timeout.
    public init(timeout: Duration) {
        self.timeout = timeout
    }

    /// Reads the schedule from the environment, or nil when the watchdog is off or meant for another process.
    ///
    /// - parameters:
    ///   - environment: the process environment.
    ///   - processID: this process's id. The default is `getpid()`.
    public init?(environment: [String: String], processID: Int32 = getpid()) {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let pidText = environment["WATCHDOG_PID"], !pidText.isEmpty {
            guard let pid = Int32(pidText), pid == processID else { return nil }
        }
        timeout = .microseconds(Int64(clamping: usec))
    }
}
