import Foundation
import Logging

/// Tells the user on their desktop when a database needs them: a conflict, or a failure that
/// retrying cannot fix.
///
/// Someone saving in DB Browser for SQLite never looks at the journal, so a push that stopped for a
/// conflict or an app that is not debuggable would go unnoticed. The notifier sends one desktop
/// notification through the freedesktop notification service (`org.freedesktop.Notifications` on
/// the session bus), naming the database, the device and app, and the fix.
///
/// The rules, and why:
///
/// - **Only `conflict` and permanent `failed`.** A transient failure (device offline, timeout) is
///   retried with backoff and usually heals by itself; a notification for each retry would teach the
///   user to ignore them. `failed` counts only when no retry follows: the error is not retryable
///   (``FlippioError/isRetryable``), or the caller says the retries are used up (`willRetry: false`).
/// - **At most one per database per state change.** The notifier remembers what it last said about
///   each database; the same state again (a second failing push with the same error) says nothing.
///   Any other state (`clean`, `dirty`, `pushing`, …) forgets it, so the next conflict is news again.
///   A transient failure is not an answer to the problem and forgets nothing. A newer notification for
///   the same database replaces the older one on screen (`replaces_id`).
/// - **Only with a session bus.** `DBUS_SESSION_BUS_ADDRESS`, else the socket `$XDG_RUNTIME_DIR/bus`
///   (where systemd's dbus-user-session puts it; a user unit often has only `XDG_RUNTIME_DIR`). On a
///   headless machine nothing is started at all.
/// - **Opt-out** by configuration (``FlippioConfiguration/desktopNotifications``: `notifications:
///   false` in config.json, `FLIPPIO_NOTIFICATIONS=0`).
/// - **Never in the way.** `gdbus` runs through ``ProcessRunning`` with a short timeout; a missing
///   `gdbus`, no notification daemon or a hung bus is logged at debug level and otherwise ignored.
///
/// For example (the sync core calls this after persisting each transition):
///
/// ```swift
/// let notifier = DesktopNotifier(environment: config.environment, enabled: config.desktopNotifications,
///                                runner: runner, logger: logger)
/// await notifier.stateChanged(database: url, device: "emulator-5554", app: "com.example.notes",
///                             to: .conflict, error: nil)
/// ```
public actor DesktopNotifier {
    /// What the notifier last said about one database.
    struct Sent: Equatable {
        /// The state it reported, or nil once the database left it (the next one is news again).
        var state: Sidecar.SyncState?
        var code: FlippioError.Code?
        /// The id the notification server gave the last one, for `replaces_id`; kept after the state
        /// is left, so a new notification replaces the stale one on screen.
        var id: UInt32
    }

    /// The session bus address, or nil when there is none (then nothing is ever sent).
    public nonisolated let busAddress: String?
    public nonisolated let isEnabled: Bool
    private let runner: any ProcessRunning
    private let gdbusPath: String
    private let timeout: Duration
    private let logger: Logger
    private var sent: [URL: Sent] = [:]

    /// Creates a notifier.
    ///
    /// - parameters:
    ///   - environment: where the session bus is found (`DBUS_SESSION_BUS_ADDRESS`, `XDG_RUNTIME_DIR`).
    ///   - enabled: false to never notify (the user opted out).
    ///   - runner: runs `gdbus`.
    ///   - gdbusPath: `gdbus` by name (looked up on `PATH`) or path. The default is `gdbus`.
    ///   - timeout: deadline for one `gdbus call`. The default is 5 s.
    ///   - logger: where failures to notify are logged (at debug level: they are not the user's problem).
    public init(environment: [String: String], enabled: Bool = true, runner: any ProcessRunning,
                gdbusPath: String = "gdbus", timeout: Duration = .seconds(5),
                logger: Logger = Logger(label: "flippio.notifications")) {
        self.busAddress = Self.sessionBusAddress(environment: environment)
        self.isEnabled = enabled && busAddress != nil
        self.runner = runner
        self.gdbusPath = gdbusPath
        self.timeout = timeout
        self.logger = logger
    }

    /// The session bus: `DBUS_SESSION_BUS_ADDRESS` when set, else `unix:path=$XDG_RUNTIME_DIR/bus`
    /// when that socket exists, else nil.
    public static func sessionBusAddress(environment: [String: String]) -> String? {
        if let address = environment["DBUS_SESSION_BUS_ADDRESS"], !address.isEmpty { return address }
        guard let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") else { return nil }
        let socket = (runtime as NSString).appendingPathComponent("bus")
        var info = stat()
        guard stat(socket, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else { return nil }
        return "unix:path=\(socket)"
    }

    /// Reports a database's new sync state; sends a notification when it is news.
    ///
    /// Call it after each persisted transition, with the error that caused a `failed` state. It
    /// returns once the notification was handed to the bus (or not sent); it never throws.
    ///
    /// - parameters:
    ///   - database: the local copy.
    ///   - device: the device's serial or UDID.
    ///   - app: the package name or bundle id.
    ///   - state: the state the database entered.
    ///   - error: for `failed`, what failed.
    ///   - willRetry: for `failed`, whether a retry is scheduled. Nil means "as the error says"
    ///     (``FlippioError/isRetryable``; no error counts as transient). Pass false when the retries
    ///     of a retryable error are used up: that failure is permanent too.
    public func stateChanged(database: URL, device: String, app: String, to state: Sidecar.SyncState,
                             error: FlippioError?, willRetry: Bool? = nil) async {
        let code: FlippioError.Code?
        switch state {
        case .conflict:
            code = nil
        case .failed:
            // A retry is scheduled: not the user's problem (yet). Keep what was said before.
            guard !(willRetry ?? error?.isRetryable ?? true) else { return }
            code = error?.code ?? .internalError
        default:
            sent[database]?.state = nil
            sent[database]?.code = nil
            return
        }
        let previous = sent[database]
        if let previous, previous.state == state, previous.code == code { return }
        guard isEnabled, let busAddress else { return }
        let message = Self.message(database: database, device: device, app: app, state: state, error: error)
        // Recorded before the call: the actor may take the next transition while gdbus runs, and one
        // slow notification daemon must not turn into two notifications.
        sent[database] = Sent(state: state, code: code, id: previous?.id ?? 0)
        let id = await send(message, replacing: previous?.id ?? 0, busAddress: busAddress)
        if let id, sent[database]?.state == state, sent[database]?.code == code { sent[database]?.id = id }
    }

    // MARK: - The message

    /// A notification's text.
    struct Message: Equatable {
        var summary: String
        var body: String
        /// 2 (critical) for a conflict, which keeps it on screen until dismissed; 1 (normal) otherwise.
        var urgency: UInt8
    }

    static func message(database: URL, device: String, app: String, state: Sidecar.SyncState, error: FlippioError?) -> Message {
        let name = database.lastPathComponent
        let origin = "\(app) on \(device)"
        if state == .conflict {
            return Message(
                summary: "flippio: conflict in \(name)",
                body: "The app changed \(name) (\(origin)) while you edited it; nothing was overwritten.\n"
                    + "Fix: flippio resolve \(database.path) --keep-local or --keep-device",
                urgency: 2)
        }
        let what = error?.message ?? "The push failed."
        let fix = error?.remedy ?? "see `flippio status` and `journalctl --user -u \(ServiceInstaller.unitName)`"
        return Message(summary: "flippio: cannot push \(name)",
                       body: "\(what) (\(origin), \(database.path))\nFix: \(fix)",
                       urgency: 1)
    }

    // MARK: - gdbus

    /// The `gdbus call` arguments for `Notify(app_name, replaces_id, app_icon, summary, body, actions,
    /// hints, expire_timeout)` (Desktop Notifications Specification 1.2). Every argument is written in
    /// GVariant text format with its type, so gdbus needs no introspection data from the server.
    static func gdbusArguments(_ message: Message, replacing: UInt32) -> [String] {
        ["call", "--session", "--timeout", "5",
         "--dest", "org.freedesktop.Notifications",
         "--object-path", "/org/freedesktop/Notifications",
         "--method", "org.freedesktop.Notifications.Notify",
         gvariant("flippio"), "uint32 \(replacing)", gvariant("dialog-warning"),
         gvariant(message.summary), gvariant(message.body),
         "@as []",
         "{'urgency': <byte \(message.urgency)>, 'desktop-entry': <'flippio'>}",
         "int32 -1"]
    }

    /// A GVariant text-format string literal: single quotes, with `\`, `'` and control characters escaped.
    static func gvariant(_ text: String) -> String {
        var out = "'"
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "'": out += "\\'"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "'"
    }

    /// Runs `gdbus call …`; returns the notification id, or nil when it could not be sent.
    private func send(_ message: Message, replacing: UInt32, busAddress: String) async -> UInt32? {
        let command = ProcessCommand(executable: gdbusPath, arguments: Self.gdbusArguments(message, replacing: replacing),
                                     environment: ["DBUS_SESSION_BUS_ADDRESS": busAddress], timeout: timeout,
                                     killGrace: .milliseconds(500), output: .capture(limit: 4096), errorLimit: 4096)
        do {
            let result = try await runner.run(command)
            guard result.succeeded else {
                logger.debug("no desktop notification: \(command.executable) \(result.timedOut ? "timed out" : "failed (status \(result.status))"): \(result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines))")
                return nil
            }
            // gdbus prints the reply as a tuple: `(uint32 7,)`.
            let text = result.stdoutText
            guard let type = text.range(of: "uint32 ") else { return nil }
            return UInt32(text[type.upperBound...].prefix { $0.isNumber })
        } catch {
            logger.debug("no desktop notification: \(error)")
            return nil
        }
    }
}
