import Foundation

/// An error that the user can act on.
///
/// Every failure the engine reports carries a stable ``Code`` (what went wrong, matchable in
/// `catch` clauses), a message (what happened, naming the device, app or file involved) and,
/// where there is one, a remedy: one sentence that says what to do.
///
/// For example:
///
/// ```swift
/// do {
///     try await bridge.pull(database, into: workspace)
/// } catch FlippioError.deviceUnauthorized {
///     // wait for the user to accept the RSA key prompt
/// }
/// ```
///
/// Codes are grouped by whether retrying can help (``isRetryable``): a device that is still
/// connecting or a call that timed out may succeed next time; an app that is not debuggable
/// never will, and the engine waits for the user instead of spinning.
///
/// The ``Code`` is a struct with static members rather than a public enum, as in
/// swift-subprocess's `SubprocessError.Code`: cases can be added without breaking callers.
public struct FlippioError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What kind of failure this is. Stable across releases; printed in `--json` output.
    public struct Code: Hashable, Sendable, CustomStringConvertible, Codable {
        /// The stable, machine-readable name, e.g. `device-offline`.
        public let name: String
        /// Whether trying the same operation again later can succeed without the user acting.
        public let isRetryable: Bool

        init(_ name: String, retryable: Bool) {
            self.name = name
            self.isRetryable = retryable
        }

        public var description: String { name }

        public init(from decoder: Decoder) throws {
            let name = try decoder.singleValueContainer().decode(String.self)
            self = Code.all.first { $0.name == name } ?? Code(name, retryable: false)
        }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(name)
        }

        public static func == (lhs: Code, rhs: Code) -> Bool { lhs.name == rhs.name }
        public func hash(into hasher: inout Hasher) { hasher.combine(name) }

        // MARK: - Tools and processes
        public static let toolNotFound = Code("tool-not-found", retryable: false)
        public static let toolFailed = Code("tool-failed", retryable: false)
        public static let timedOut = Code("timed-out", retryable: true)
        public static let outputTooLarge = Code("output-too-large", retryable: false)

        // MARK: - Devices
        public static let deviceNotFound = Code("device-not-found", retryable: true)
        public static let deviceAmbiguous = Code("device-ambiguous", retryable: false)
        public static let deviceOffline = Code("device-offline", retryable: true)
        public static let deviceConnecting = Code("device-connecting", retryable: true)
        public static let deviceUnauthorized = Code("device-unauthorized", retryable: false)
        public static let connectionReset = Code("connection-reset", retryable: true)
        public static let protocolFault = Code("protocol-fault", retryable: true)
        public static let adbServerUnavailable = Code("adb-server-unavailable", retryable: true)

        // MARK: - Apps and files on the device
        public static let appNotDebuggable = Code("app-not-debuggable", retryable: false)
        public static let unknownPackage = Code("unknown-package", retryable: false)
        public static let appNotLaunchable = Code("app-not-launchable", retryable: false)
        public static let noSuchFile = Code("no-such-file", retryable: false)
        public static let permissionDenied = Code("permission-denied", retryable: false)
        public static let unexpectedOutput = Code("unexpected-output", retryable: false)

        // MARK: - iOS
        public static let iosDeviceLocked = Code("ios-device-locked", retryable: true)
        public static let iosNotPaired = Code("ios-not-paired", retryable: false)
        public static let usbmuxdUnavailable = Code("usbmuxd-unavailable", retryable: true)
        public static let iosContainerRefused = Code("ios-container-refused", retryable: false)

        // MARK: - Databases
        public static let notSQLite = Code("not-sqlite", retryable: false)
        public static let corruptDatabase = Code("corrupt-database", retryable: false)
        public static let databaseBusy = Code("database-busy", retryable: true)
        public static let databaseMissing = Code("database-missing", retryable: false)

        // MARK: - Workspace and sidecars
        public static let unsafePath = Code("unsafe-path", retryable: false)
        public static let sidecarUnreadable = Code("sidecar-unreadable", retryable: false)
        public static let sidecarTooNew = Code("sidecar-too-new", retryable: false)
        public static let notTracked = Code("not-tracked", retryable: false)
        public static let workspaceWriteFailed = Code("workspace-write-failed", retryable: true)

        // MARK: - Sync
        public static let conflict = Code("conflict", retryable: false)
        public static let verificationFailed = Code("verification-failed", retryable: true)
        public static let pushInProgress = Code("push-in-progress", retryable: true)

        // MARK: - Watching and configuration
        public static let watchLimitReached = Code("watch-limit-reached", retryable: false)
        public static let invalidArgument = Code("invalid-argument", retryable: false)
        public static let serviceManagerUnavailable = Code("service-manager-unavailable", retryable: false)
        public static let internalError = Code("internal-error", retryable: false)

        static let all: [Code] = [
            .toolNotFound, .toolFailed, .timedOut, .outputTooLarge, .deviceNotFound, .deviceAmbiguous,
            .deviceOffline, .deviceConnecting, .deviceUnauthorized, .connectionReset, .protocolFault,
            .adbServerUnavailable, .appNotDebuggable, .unknownPackage, .appNotLaunchable, .noSuchFile, .permissionDenied,
            .unexpectedOutput, .iosDeviceLocked, .iosNotPaired, .usbmuxdUnavailable, .iosContainerRefused,
            .notSQLite, .corruptDatabase, .databaseBusy, .databaseMissing, .unsafePath, .sidecarUnreadable,
            .sidecarTooNew, .notTracked, .workspaceWriteFailed, .conflict, .verificationFailed,
            .pushInProgress, .watchLimitReached, .invalidArgument, .serviceManagerUnavailable, .internalError,
        ]
    }

    /// What kind of failure this is.
    public let code: Code
    /// What happened, in one sentence that names the thing involved.
    public let message: String
    /// What the user can do about it, or nil when there is nothing to do but wait.
    public let remedy: String?
    /// Extra facts for `--json` and logs (serial, package, path, tool output excerpt).
    public let context: [String: String]

    public init(_ code: Code, _ message: String, remedy: String? = nil, context: [String: String] = [:]) {
        self.code = code
        self.message = message
        self.remedy = remedy
        self.context = context
    }

    /// Whether the engine may retry the operation with backoff.
    public var isRetryable: Bool { code.isRetryable }

    /// The message followed by the remedy, as printed to a terminal.
    public var description: String {
        guard let remedy else { return message }
        return "\(message)\n  fix: \(remedy)"
    }

}

/// Lets `catch FlippioError.deviceOffline` (or `case .deviceOffline`) match any error with that code.
public func ~= (code: FlippioError.Code, error: any Error) -> Bool {
    (error as? FlippioError)?.code == code
}

// MARK: - Matching shortcuts: `catch FlippioError.deviceOffline`

extension FlippioError {
    public static var deviceOffline: Code { .deviceOffline }
    public static var deviceUnauthorized: Code { .deviceUnauthorized }
    public static var deviceNotFound: Code { .deviceNotFound }
    public static var appNotDebuggable: Code { .appNotDebuggable }
    public static var unknownPackage: Code { .unknownPackage }
    public static var noSuchFile: Code { .noSuchFile }
    public static var permissionDenied: Code { .permissionDenied }
    public static var timedOut: Code { .timedOut }
    public static var conflict: Code { .conflict }
    public static var notSQLite: Code { .notSQLite }
    public static var corruptDatabase: Code { .corruptDatabase }
    public static var unsafePath: Code { .unsafePath }
    public static var sidecarUnreadable: Code { .sidecarUnreadable }
    public static var sidecarTooNew: Code { .sidecarTooNew }
}

// MARK: - Factories shared by several parts

extension FlippioError {
    static func internalError(_ message: String) -> FlippioError {
        FlippioError(.internalError, message, remedy: "This is a bug in flippio; please report it with the log.")
    }

    static func workspaceWriteFailed(path: String, errno code: Int32) -> FlippioError {
        let reason = String(cString: strerror(code))
        let remedy: String
        switch code {
        case ENOSPC: remedy = "Free some disk space; the edit stays local and is pushed once space is back."
        case EROFS: remedy = "The workspace is on a read-only file system; remount it read-write or choose another with --workspace."
        case EACCES, EPERM: remedy = "Check the permissions of the workspace folder."
        default: remedy = "Check the workspace folder and try again."
        }
        return FlippioError(.workspaceWriteFailed, "Could not write \(path): \(reason).", remedy: remedy,
                            context: ["path": path, "errno": String(code)])
    }
}
