import Foundation
import Logging

/// Starts an app again after a verified push (`--restart-app`, config `restartApp`).
///
/// A push stops the app first (`am force-stop`, so no open connection writes to the replaced file),
/// and a stopped app shows nothing of the edit until someone opens it again. With `restartApp` on,
/// the launcher activity is started right after the device's copy was verified, so the developer
/// sees the edit in the app at once.
///
/// Starting is a convenience, never part of the push's outcome: the push already succeeded, so a
/// failure to start is logged as a warning with its remedy and reported back, not thrown.
///
/// For example, after a push was verified:
///
/// ```swift
/// if configuration.restartApp {
///     await AppLauncher(bridges: bridges, logger: logger)
///         .start(platform: origin.platform, deviceID: origin.deviceID, appID: origin.appID)
/// }
/// ```
public struct AppLauncher: Sendable {
    /// What ``start(platform:deviceID:appID:)`` did.
    public enum Outcome: Sendable, Equatable {
        case started
        /// The platform's tools cannot start apps (iOS through libimobiledevice).
        case notSupported
        case failed(FlippioError)
    }

    public let bridges: BridgeProvider
    public let logger: Logger

    public init(bridges: BridgeProvider, logger: Logger) {
        self.bridges = bridges
        self.logger = logger
    }

    /// Starts `appID` on `deviceID`; logs what happened. Never throws.
    @discardableResult
    public func start(platform: Platform, deviceID: String, appID: String) async -> Outcome {
        var metadata: Logger.Metadata = ["device": "\(deviceID)", "app": "\(appID)"]
        do {
            let bridge = try await bridges.bridge(for: platform)
            guard try await bridge.startApp(deviceID: deviceID, appID: appID) else {
                logger.notice("not restarting \(appID): the \(platform) tools cannot start apps; open it on the device", metadata: metadata)
                return .notSupported
            }
            logger.info("restarted \(appID)", metadata: metadata)
            return .started
        } catch let error as FlippioError {
            metadata["code"] = "\(error.code)"
            logger.warning("could not restart \(appID): \(error.message)\(error.remedy.map { " (fix: \($0))" } ?? "")", metadata: metadata)
            return .failed(error)
        } catch {
            let wrapped = FlippioError.internalError("starting \(appID) failed: \(error)")
            logger.warning("could not restart \(appID): \(wrapped.message)", metadata: metadata)
            return .failed(wrapped)
        }
    }
}
