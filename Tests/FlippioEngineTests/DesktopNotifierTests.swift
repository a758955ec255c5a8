import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// ``DesktopNotifier`` against a real session bus (`dbus-daemon --session`) with a real notification
/// server on it, through the real `gdbus`.
@Suite("DesktopNotifier", .serialized,
       .enabled(if: SessionBus.unavailableReason == nil, "\(SessionBus.unavailableReason ?? "")"))
struct DesktopNotifierTests {
    static let database = URL(fileURLWithPath: "/home/u/flippio/emulator-5554/com.example.notes/databases/notes.db")
    static let other = URL(fileURLWithPath: "/home/u/flippio/emulator-5554/com.example.notes/databases/cache.db")
    static let notDebuggable = FlippioError(.appNotDebuggable, "run-as: package not debuggable: com.example.notes",
                                            remedy: "Install a debuggable build of com.example.notes.")
    static let offline = FlippioError(.deviceOffline, "device 'emulator-5554' is offline")

    /// A runner that counts the processes it starts (and starts them for real).
    final class CountingRunner: ProcessRunning, @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        var started: Int { lock.withLock { count } }
        func run(_ command: ProcessCommand) async throws -> ProcessResult {
            lock.withLock { count += 1 }
            return try await ProcessRunner().run(command)
        }
    }

    /// One transition of a database of com.example.notes on emulator-5554.
    func report(_ notifier: DesktopNotifier, _ state: Sidecar.SyncState, error: FlippioError? = nil, willRetry: Bool? = nil,
                database: URL = Self.database) async {
        await notifier.stateChanged(database: database, device: "emulator-5554", app: "com.example.notes", to: state,
                                    error: error, willRetry: willRetry)
    }

    func notifier(_ environment: [String: String], enabled: Bool = true, runner: any ProcessRunning = ProcessRunner()) -> DesktopNotifier {
        DesktopNotifier(environment: environment, enabled: enabled, runner: runner)
    }

    @Test("a conflict sends one notification naming the database, device, app and the fix; repeating it sends none")
    func conflictOnce() async throws {
        let bus = try SessionBus()
        defer { bus.terminate() }
        // Only XDG_RUNTIME_DIR: the bus is found at $XDG_RUNTIME_DIR/bus, as in a systemd user unit.
        let notifier = notifier(["XDG_RUNTIME_DIR": bus.runtime.path])
        #expect(notifier.busAddress == bus.address)

        await report(notifier, .conflict)
        await report(notifier, .conflict)
        let sent = try bus.notifications()
        try #require(sent.count == 1, "\(sent)")
        #expect(sent[0].appName == "flippio")
        #expect(sent[0].summary.contains("notes.db"))
        #expect(sent[0].body.contains("com.example.notes on emulator-5554"))
        #expect(sent[0].body.contains("flippio resolve \(Self.database.path) --keep-local"))
        #expect(sent[0].urgency == 2)
        #expect(sent[0].replacesID == 0)

        // Resolved, then a new conflict: news again, and it replaces the old one on screen.
        await report(notifier, .clean)
        await report(notifier, .conflict)
        let after = try bus.notifications()
        #expect(after.count == 2)
        #expect(after.last?.replacesID == sent[0].id)
        // Another database has its own record.
        await report(notifier, .conflict, database: Self.other)
        #expect(try bus.notifications().count == 3)
    }

    @Test("a permanent failure notifies once with its remedy; transient failures never notify")
    func permanentFailuresOnly() async throws {
        let bus = try SessionBus()
        defer { bus.terminate() }
        let notifier = notifier(["DBUS_SESSION_BUS_ADDRESS": bus.address])

        // Retries with backoff: nothing to tell the user.
        await report(notifier, .failed, error: Self.offline)
        await report(notifier, .failed)
        await report(notifier, .waitingForDevice)
        #expect(try bus.notifications().isEmpty)

        await report(notifier, .failed, error: Self.notDebuggable)
        // The same failure again, with a transient one in between: still the same news.
        await report(notifier, .failed, error: Self.offline)
        await report(notifier, .failed, error: Self.notDebuggable)
        let sent = try bus.notifications()
        try #require(sent.count == 1, "\(sent)")
        #expect(sent[0].summary == "flippio: cannot push notes.db")
        #expect(sent[0].body.contains("package not debuggable"))
        #expect(sent[0].body.contains("com.example.notes on emulator-5554"))
        #expect(sent[0].body.contains("Fix: Install a debuggable build of com.example.notes."))

        // Retries used up: a retryable error that no retry follows is permanent too.
        await report(notifier, .failed, error: Self.offline, willRetry: true, database: Self.other)
        #expect(try bus.notifications().count == 1)
        await report(notifier, .failed, error: Self.offline, willRetry: false, database: Self.other)
        #expect(try bus.notifications().count == 2)
        #expect(try bus.notifications().last?.body.contains("is offline") == true)

        // A different permanent failure is a state change of its own.
        let denied = FlippioError(.permissionDenied, "Permission denied", remedy: "Check the folder's permissions.")
        await report(notifier, .failed, error: denied)
        #expect(try bus.notifications().count == 3)
    }

    @Test("opted out, nothing is sent and no process is started")
    func optOut() async throws {
        let bus = try SessionBus()
        defer { bus.terminate() }
        let runner = CountingRunner()
        let notifier = notifier(["DBUS_SESSION_BUS_ADDRESS": bus.address], enabled: false, runner: runner)
        #expect(!notifier.isEnabled)
        await report(notifier, .conflict)
        await report(notifier, .failed, error: Self.notDebuggable)
        #expect(runner.started == 0)
        #expect(try bus.notifications().isEmpty)
    }

    @Test("without a session bus, nothing is sent and no process is started")
    func noBus() async throws {
        // A bus is running, but the notifier's environment does not lead to it.
        let bus = try SessionBus()
        defer { bus.terminate() }
        let empty = try TemporaryDirectory("flippio-nobus")
        let runner = CountingRunner()
        for environment in [[:], ["XDG_RUNTIME_DIR": empty.path], ["DBUS_SESSION_BUS_ADDRESS": ""]] {
            let notifier = notifier(environment, runner: runner)
            #expect(notifier.busAddress == nil)
            await report(notifier, .conflict)
        }
        #expect(runner.started == 0)
        #expect(try bus.notifications().isEmpty)
    }

    @Test("a bus without a notification server costs one bounded call and no error")
    func noServer() async throws {
        let bus = try SessionBus(server: false)
        defer { bus.terminate() }
        let runner = CountingRunner()
        let notifier = notifier(["DBUS_SESSION_BUS_ADDRESS": bus.address], runner: runner)
        await report(notifier, .conflict)
        await report(notifier, .conflict)
        #expect(runner.started == 1)
    }

    @Test("notifications: false in config.json and FLIPPIO_NOTIFICATIONS=0 opt out; the default is on")
    func configuration() throws {
        let dir = try TemporaryDirectory("flippio-config")
        let env = ["HOME": dir.path, "XDG_CONFIG_HOME": dir.child("config").path]
        #expect(try FlippioConfiguration.load(environment: env).desktopNotifications)
        #expect(try !FlippioConfiguration.load(environment: env.merging(["FLIPPIO_NOTIFICATIONS": "0"]) { $1 }).desktopNotifications)
        try FileManager.default.createDirectory(at: dir.child("config/flippio"), withIntermediateDirectories: true)
        try #"{"notifications": false, "restartApp": true}"#.write(to: dir.child("config/flippio/config.json"), atomically: true, encoding: .utf8)
        let fromFile = try FlippioConfiguration.load(environment: env)
        #expect(!fromFile.desktopNotifications)
        #expect(fromFile.restartApp)
        #expect(try FlippioConfiguration.load(environment: env.merging(["FLIPPIO_NOTIFICATIONS": "yes"]) { $1 }).desktopNotifications)
        #expect(throws: FlippioError.self) { try FlippioConfiguration.load(environment: env.merging(["FLIPPIO_NOTIFICATIONS": "maybe"]) { $1 }) }
    }

    @Test("GVariant text quoting keeps quotes, backslashes and newlines intact")
    func quoting() {
        #expect(DesktopNotifier.gvariant("it's") == #"'it\'s'"#)
        #expect(DesktopNotifier.gvariant("a\\b\nc") == #"'a\\b\nc'"#)
        #expect(DesktopNotifier.gvariant("\u{1}") == #"'\u0001'"#)
    }
}
