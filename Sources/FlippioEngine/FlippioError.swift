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
        /// Every code, as one enum: the single source of names and retryability. A new code is a
        /// new case here plus its static member below; the compiler checks the switch in
        /// ``isRetryable`` and `CaseIterable` gives decoding every name.
        enum Kind: String, CaseIterable, Sendable {
            // Tools and processes
            case toolNotFound = "tool-not-found"
            case toolFailed = "tool-failed"
            case timedOut = "timed-out"
            case outputTooLarge = "output-too-large"
            // Devices
            case deviceNotFound = "device-not-found"
            case deviceAmbiguous = "device-ambiguous"
            case deviceOffline = "device-offline"
            case deviceConnecting = "device-connecting"
            case deviceUnauthorized = "device-unauthorized"
            case connectionReset = "connection-reset"
            case protocolFault = "protocol-fault"
            case adbServerUnavailable = "adb-server-unavailable"
            // Apps and files on the device
            case appNotDebuggable = "app-not-debuggable"
            case unknownPackage = "unknown-package"
            case appNotLaunchable = "app-not-launchable"
            case noSuchFile = "no-such-file"
            case permissionDenied = "permission-denied"
            case unexpectedOutput = "unexpected-output"
            // iOS
            case iosDeviceLocked = "ios-device-locked"
            case iosNotPaired = "ios-not-paired"
            case usbmuxdUnavailable = "usbmuxd-unavailable"
            case iosContainerRefused = "ios-container-refused"
            // Databases
            case notSQLite = "not-sqlite"
            case corruptDatabase = "corrupt-database"
            case databaseBusy = "database-busy"
            case databaseMissing = "database-missing"
            // Workspace and sidecars
            case unsafePath = "unsafe-path"
            case sidecarUnreadable = "sidecar-unreadable"
            case sidecarTooNew = "sidecar-too-new"
            case notTracked = "not-tracked"
            case workspaceWriteFailed = "workspace-write-failed"
            // Sync
            case conflict = "conflict"
            case schemaChanged = "schema-changed"
            case verificationFailed = "verification-failed"
            case pushInProgress = "push-in-progress"
            case deltaUnsupported = "delta-unsupported"
            case agentAlreadyRunning = "agent-already-running"
            case notInConflict = "not-in-conflict"
            case unpushedChanges = "unpushed-changes"
            // Watching and configuration
            case watchLimitReached = "watch-limit-reached"
            case deviceWatchUnavailable = "device-watch-unavailable"
            case invalidArgument = "invalid-argument"
            case invalidConfiguration = "invalid-configuration"
            case serviceManagerUnavailable = "service-manager-unavailable"
            case internalError = "internal-error"
        }

        let kind: Kind

        init(_ kind: Kind) {
            self.kind = kind
        }

        /// Every code flippio reports.
        public static var allCodes: [Code] { Kind.allCases.map(Code.init) }

        /// The stable, machine-readable name, e.g. `device-offline`.
        public var name: String { kind.rawValue }

        /// Whether trying the same operation again later can succeed without the user acting.
        public var isRetryable: Bool {
            switch kind {
            case .timedOut, .deviceNotFound, .deviceOffline, .deviceConnecting, .connectionReset, .protocolFault,
                 .adbServerUnavailable, .iosDeviceLocked, .usbmuxdUnavailable, .databaseBusy, .workspaceWriteFailed,
                 .verificationFailed, .pushInProgress:
                return true
            case .agentAlreadyRunning, .notInConflict, .unpushedChanges, .toolNotFound, .toolFailed, .outputTooLarge,
                 .deviceAmbiguous, .deviceUnauthorized, .appNotDebuggable, .unknownPackage, .appNotLaunchable, .noSuchFile,
                 .permissionDenied, .unexpectedOutput, .iosNotPaired, .iosContainerRefused, .notSQLite,
                 .corruptDatabase, .databaseMissing, .unsafePath, .sidecarUnreadable, .sidecarTooNew, .notTracked,
                 .conflict, .schemaChanged, .deltaUnsupported, .watchLimitReached, .deviceWatchUnavailable, .invalidArgument, .invalidConfiguration, .serviceManagerUnavailable, .internalError:
                return false
            }
        }

        public var description: String { name }

        /// Decodes a name this build knows; an unknown name (from a newer flippio) decodes as
        /// ``internalError`` rather than failing the whole sidecar.
        public init(from decoder: Decoder) throws {
            let name = try decoder.singleValueContainer().decode(String.self)
            self.init(Kind(rawValue: name) ?? .internalError)
        }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(name)
        }

        // MARK: - Tools and processes
        public static let toolNotFound = Code(.toolNotFound)
        public static let toolFailed = Code(.toolFailed)
        public static let timedOut = Code(.timedOut)
        public static let outputTooLarge = Code(.outputTooLarge)

        // MARK: - Devices
        public static let deviceNotFound = Code(.deviceNotFound)
        public static let deviceAmbiguous = Code(.deviceAmbiguous)
        public static let deviceOffline = Code(.deviceOffline)
        public static let deviceConnecting = Code(.deviceConnecting)
        public static let deviceUnauthorized = Code(.deviceUnauthorized)
        public static let connectionReset = Code(.connectionReset)
        public static let protocolFault = Code(.protocolFault)
        public static let adbServerUnavailable = Code(.adbServerUnavailable)

        // MARK: - Apps and files on the device
        public static let appNotDebuggable = Code(.appNotDebuggable)
        public static let unknownPackage = Code(.unknownPackage)
        public static let appNotLaunchable = Code(.appNotLaunchable)
        public static let noSuchFile = Code(.noSuchFile)
        public static let permissionDenied = Code(.permissionDenied)
        public static let unexpectedOutput = Code(.unexpectedOutput)

        // MARK: - iOS
        public static let iosDeviceLocked = Code(.iosDeviceLocked)
        public static let iosNotPaired = Code(.iosNotPaired)
        public static let usbmuxdUnavailable = Code(.usbmuxdUnavailable)
        public static let iosContainerRefused = Code(.iosContainerRefused)

        // MARK: - Databases
        public static let notSQLite = Code(.notSQLite)
        public static let corruptDatabase = Code(.corruptDatabase)
        public static let databaseBusy = Code(.databaseBusy)
        public static let databaseMissing = Code(.databaseMissing)

        // MARK: - Workspace and sidecars
        public static let unsafePath = Code(.unsafePath)
        public static let sidecarUnreadable = Code(.sidecarUnreadable)
        public static let sidecarTooNew = Code(.sidecarTooNew)
        public static let notTracked = Code(.notTracked)
        public static let workspaceWriteFailed = Code(.workspaceWriteFailed)

        // MARK: - Sync
        public static let conflict = Code(.conflict)
        public static let schemaChanged = Code(.schemaChanged)
        public static let verificationFailed = Code(.verificationFailed)
        public static let pushInProgress = Code(.pushInProgress)
        /// The device or platform cannot apply a page delta (no `dd`/`truncate`, or iOS): push the whole file.
        public static let deltaUnsupported = Code(.deltaUnsupported)
        public static let agentAlreadyRunning = Code(.agentAlreadyRunning)
        public static let notInConflict = Code(.notInConflict)
        public static let unpushedChanges = Code(.unpushedChanges)

        // MARK: - Watching and configuration
        public static let watchLimitReached = Code(.watchLimitReached)
        /// The device cannot report file changes (no `inotifyd`, or `run-as` refused it): the agent
        /// polls the fingerprint instead. Not retryable: the device's toybox will not grow an applet.
        public static let deviceWatchUnavailable = Code(.deviceWatchUnavailable)
        public static let invalidArgument = Code(.invalidArgument)
        public static let invalidConfiguration = Code(.invalidConfiguration)
        public static let serviceManagerUnavailable = Code(.serviceManagerUnavailable)
        public static let internalError = Code(.internalError)
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
    public static var toolNotFound: Code { .toolNotFound }
    public static var toolFailed: Code { .toolFailed }
    public static var timedOut: Code { .timedOut }
    public static var outputTooLarge: Code { .outputTooLarge }
    public static var deviceNotFound: Code { .deviceNotFound }
    public static var deviceAmbiguous: Code { .deviceAmbiguous }
    public static var deviceOffline: Code { .deviceOffline }
    public static var deviceConnecting: Code { .deviceConnecting }
    public static var deviceUnauthorized: Code { .deviceUnauthorized }
    public static var connectionReset: Code { .connectionReset }
    public static var protocolFault: Code { .protocolFault }
    public static var adbServerUnavailable: Code { .adbServerUnavailable }
    public static var appNotDebuggable: Code { .appNotDebuggable }
    public static var unknownPackage: Code { .unknownPackage }
    public static var appNotLaunchable: Code { .appNotLaunchable }
    public static var noSuchFile: Code { .noSuchFile }
    public static var permissionDenied: Code { .permissionDenied }
    public static var unexpectedOutput: Code { .unexpectedOutput }
    public static var iosDeviceLocked: Code { .iosDeviceLocked }
    public static var iosNotPaired: Code { .iosNotPaired }
    public static var usbmuxdUnavailable: Code { .usbmuxdUnavailable }
    public static var iosContainerRefused: Code { .iosContainerRefused }
    public static var notSQLite: Code { .notSQLite }
    public static var corruptDatabase: Code { .corruptDatabase }
    public static var databaseBusy: Code { .databaseBusy }
    public static var databaseMissing: Code { .databaseMissing }
    public static var unsafePath: Code { .unsafePath }
    public static var sidecarUnreadable: Code { .sidecarUnreadable }
    public static var sidecarTooNew: Code { .sidecarTooNew }
    public static var notTracked: Code { .notTracked }
    public static var workspaceWriteFailed: Code { .workspaceWriteFailed }
    public static var conflict: Code { .conflict }
    public static var schemaChanged: Code { .schemaChanged }
    public static var verificationFailed: Code { .verificationFailed }
    public static var pushInProgress: Code { .pushInProgress }
    public static var deltaUnsupported: Code { .deltaUnsupported }
    public static var agentAlreadyRunning: Code { .agentAlreadyRunning }
    public static var notInConflict: Code { .notInConflict }
    public static var unpushedChanges: Code { .unpushedChanges }
    public static var watchLimitReached: Code { .watchLimitReached }
    public static var deviceWatchUnavailable: Code { .deviceWatchUnavailable }
    public static var invalidArgument: Code { .invalidArgument }
    public static var invalidConfiguration: Code { .invalidConfiguration }
    public static var serviceManagerUnavailable: Code { .serviceManagerUnavailable }
    public static var internalError: Code { .internalError }
}

// MARK: - Factories shared by several parts

extension FlippioError {
    /// A page delta cannot be applied here: the caller pushes the whole file instead.
    static func deltaUnsupported(_ message: String) -> FlippioError {
        FlippioError(.deltaUnsupported, message, remedy: "Nothing to do: flippio pushes the whole file instead.")
    }

    static func internalError(_ message: String) -> FlippioError {
        FlippioError(.internalError, message, remedy: "This is a bug in flippio; please report it with the log.")
    }

    /// `inotifyd` is missing on the device or was refused (`detail`: what the device printed).
    static func deviceWatchUnavailable(serial: String, appID: String, detail: String) -> FlippioError {
        FlippioError(.deviceWatchUnavailable,
                     "Device \(serial) cannot report changes to \(appID)'s files (\(detail)); following by polling its fingerprint instead.",
                     remedy: "Nothing to do: changes still arrive, a few seconds later. A device whose toybox has `inotifyd` (Android 6 and later) reports them at once.",
                     context: ["serial": serial, "app": appID, "detail": detail])
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
