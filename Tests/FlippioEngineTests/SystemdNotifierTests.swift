import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// A real AF_UNIX datagram socket that stands where systemd's notification socket would.
final class DatagramReceiver: @unchecked Sendable {
    let fd: Int32
    /// The value to put in NOTIFY_SOCKET.
    let notifySocket: String

    /// Binds a socket at `path` (a file-system socket), or an abstract one when `path` starts with `@`.
    init(_ path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ShellError("socket() failed: errno \(errno)") }
        notifySocket = path
        var address = try SystemdNotifier.address(for: path)
        let status = withUnsafePointer(to: &address.storage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, address.length) }
        }
        guard status == 0 else {
            let code = errno
            close(fd)
            throw ShellError("bind(\(path)) failed: \(String(cString: strerror(code)))")
        }
    }

    /// The next datagram, waiting at most `timeout` seconds (generous: the machine is shared).
    func receive(timeout: Int32 = 20) throws -> String {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, timeout * 1000)
        guard ready == 1 else { throw ShellError("no datagram within \(timeout) s") }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count >= 0 else { throw ShellError("recv failed: errno \(errno)") }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    /// True when no datagram is waiting.
    func isEmpty() -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) == 0
    }

    deinit { close(fd) }
}

@Suite("SystemdNotifier")
struct SystemdNotifierTests {
    // MARK: - Sending to a real socket

    @Test("sends READY, STATUS, WATCHDOG, STOPPING and RELOADING to a path socket")
    func pathSocket() throws {
        let dir = try TemporaryDirectory("flippio-notify")
        let receiver = try DatagramReceiver(dir.child("notify").path)
        try expectAllMessages(receiver)
    }

    @Test("sends to an abstract socket named with a leading @")
    func abstractSocket() throws {
        let receiver = try DatagramReceiver("@flippio-test-\(UUID().uuidString)")
        try expectAllMessages(receiver)
    }

    @Test("the abstract address length covers the name exactly, with no trailing NUL")
    func abstractAddressLength() throws {
        let address = try SystemdNotifier.address(for: "@abc")
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        #expect(Int(address.length) == offset + 4)
        let path = try SystemdNotifier.address(for: "/run/user/1000/systemd/notify")
        #expect(Int(path.length) == offset + "/run/user/1000/systemd/notify".utf8.count + 1)
    }

    @Test("an abstract name that differs only by a trailing byte does not receive")
    func abstractNameIsExact() throws {
        let name = "@flippio-test-\(UUID().uuidString)"
        let receiver = try DatagramReceiver(name + "x")
        // Nothing is bound at `name`: the send fails (ECONNREFUSED) instead of reaching `name + "x"`.
        #expect(throws: FlippioError.self) {
            try SystemdNotifier(environment: ["NOTIFY_SOCKET": name]).ready()
        }
        #expect(receiver.isEmpty())
    }

    func expectAllMessages(_ receiver: DatagramReceiver) throws {
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": receiver.notifySocket])
        #expect(notifier.isEnabled)

        try notifier.ready()
        #expect(try receiver.receive() == "READY=1")
        try notifier.ready(status: "watching 2 databases")
        #expect(try receiver.receive() == "READY=1\nSTATUS=watching 2 databases")
        try notifier.status("pushing app.db\nto emulator-5554")
        #expect(try receiver.receive() == "STATUS=pushing app.db to emulator-5554")
        try notifier.watchdog()
        #expect(try receiver.receive() == "WATCHDOG=1")
        try notifier.stopping()
        #expect(try receiver.receive() == "STOPPING=1")
        try notifier.reloading()
        let reloading = try receiver.receive()
        #expect(reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="))
        #expect(UInt64(reloading.split(separator: "=").last ?? "") != nil)
        #expect(receiver.isEmpty())
    }

    // MARK: - Without systemd

    @Test("does nothing when NOTIFY_SOCKET is unset or empty")
    func noSocket() throws {
        for environment in [[:], ["NOTIFY_SOCKET": ""]] {
            let notifier = SystemdNotifier(environment: environment)
            #expect(!notifier.isEnabled)
            try notifier.ready(status: "x")
            try notifier.status("x")
            try notifier.watchdog()
            try notifier.stopping()
            try notifier.reloading()
        }
    }

    @Test("a relative NOTIFY_SOCKET or one that is too long is an error, not a crash")
    func badAddresses() throws {
        #expect(throws: FlippioError.self) { try SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative/x"]).ready() }
        let long = "/" + String(repeating: "a", count: 200)
        #expect(throws: FlippioError.self) { try SystemdNotifier(environment: ["NOTIFY_SOCKET": long]).ready() }
        // 107 bytes plus the NUL fill sun_path exactly; 108 do not fit.
        _ = try SystemdNotifier.address(for: "/" + String(repeating: "a", count: 106))
        #expect(throws: FlippioError.self) { try SystemdNotifier.address(for: "/" + String(repeating: "a", count: 107)) }
        // An abstract name has no NUL: 108 bytes (the @ included) fit.
        _ = try SystemdNotifier.address(for: "@" + String(repeating: "a", count: 107))
    }

    @Test("sending to a path where nothing listens throws")
    func nothingListening() throws {
        let dir = try TemporaryDirectory("flippio-notify")
        #expect(throws: FlippioError.self) {
            try SystemdNotifier(environment: ["NOTIFY_SOCKET": dir.child("absent").path]).watchdog()
        }
    }

    // MARK: - Child environment

    @Test("scrubbedEnvironment removes the notification variables and keeps the rest")
    func scrubbed() {
        let env = ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42",
                   "HOME": "/home/u", "ANDROID_SERIAL": "emulator-5554"]
        #expect(SystemdNotifier.scrubbedEnvironment(env) == ["HOME": "/home/u", "ANDROID_SERIAL": "emulator-5554"])
    }

    // MARK: - WatchdogSchedule

    @Test("the watchdog interval is half of WATCHDOG_USEC")
    func watchdogInterval() throws {
        let schedule = try #require(WatchdogSchedule(environment: ["WATCHDOG_USEC": "30000000"], processID: 7))
        #expect(schedule.timeout == .seconds(30))
        #expect(schedule.interval == .seconds(15))
        let odd = try #require(WatchdogSchedule(environment: ["WATCHDOG_USEC": "3"], processID: 7))
        #expect(odd.interval == .nanoseconds(1500))
    }

    @Test("WATCHDOG_PID is honoured: the schedule applies only to that process")
    func watchdogPID() {
        #expect(WatchdogSchedule(environment: ["WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"], processID: 7) != nil)
        #expect(WatchdogSchedule(environment: ["WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "8"], processID: 7) == nil)
        #expect(WatchdogSchedule(environment: ["WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"], processID: 7) == nil)
        #expect(WatchdogSchedule(environment: ["WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "\(getpid())"]) != nil)
    }

    @Test("no schedule without a usable WATCHDOG_USEC")
    func watchdogOff() {
        #expect(WatchdogSchedule(environment: [:]) == nil)
        #expect(WatchdogSchedule(environment: ["WATCHDOG_USEC": "0"]) == nil)
        #expect(WatchdogSchedule(environment: ["WATCHDOG_USEC": "-5"]) == nil)
        #expect(WatchdogSchedule(environment: ["WATCHDOG_USEC": "soon"]) == nil)
    }
}
