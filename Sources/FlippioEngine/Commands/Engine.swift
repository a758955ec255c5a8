import Foundation
import Logging

/// The one-shot commands: what the command line calls, one method per command, each returning values the CLI prints
/// (as text or `--json`). Knows nothing of argument parsing or terminals.
public struct Engine: Sendable {
    public let configuration: FlippioConfiguration
    public let parts: SyncParts
    public let runner: any ProcessRunning
    public let logger: Logger

    public init(configuration: FlippioConfiguration, runner: any ProcessRunning = ProcessRunner(), bridges: BridgeProvider? = nil,
                logger: Logger = Logger(label: "flippio")) {
        self.configuration = configuration
        self.runner = runner
        self.logger = logger
        // A command touches a few databases: a small pool, whatever the agent's size is.
        self.parts = SyncParts(configuration: configuration, bridges: bridges ?? BridgeProvider(configuration: configuration, runner: runner),
                               logger: logger, poolCapacity: min(configuration.poolCapacity, 16))
    }

    public var workspace: Workspace { parts.workspace }
    public var sidecars: SidecarStore { parts.sidecars }
    public var pool: ConnectionPool { parts.pool }
    public var bridges: BridgeProvider { parts.bridges }
    var pipeline: PushPipeline { parts.pipeline }

    // MARK: - devices, apps, dbs

    /// Every device on every platform whose tools are installed, plus the problems that hid a platform.
    public func devices() async -> (devices: [Device], problems: [FlippioError]) {
        let (available, problems) = await bridges.availableBridges()
        var devices: [Device] = []
        var errors = problems
        for bridge in available {
            do {
                devices += try await configuration.retry.run("list \(bridge.platform.rawValue) devices") { try await bridge.devices() }
            } catch let error as FlippioError {
                errors.append(error)
            } catch {
                errors.append(.internalError("\(error)"))
            }
        }
        // With one platform working, the other's missing tools are `doctor`'s business, not an error.
        if !available.isEmpty { errors.removeAll { $0.code == .toolNotFound } }
        return (devices, errors)
    }

    /// The device named by `query`: a serial/UDID or a unique prefix of one, ready for use.
    ///
    /// - throws: ``FlippioError/Code/deviceNotFound``, ``FlippioError/Code/deviceAmbiguous``, or the
    ///   device's own state (unauthorized, offline...) with its remedy.
    public func device(_ query: String) async throws -> Device {
        let (devices, problems) = await devices()
        let device = try Self.resolve(query, among: devices, problems: problems)
        switch device.state {
        case .ready:
            return device
        case .unauthorized:
            throw FlippioError(.deviceUnauthorized, "Device \(device.id) is unauthorized.", remedy: device.remedy)
        case .offline:
            throw FlippioError(.deviceOffline, "Device \(device.id) is offline.", remedy: device.remedy)
        case .connecting:
            throw FlippioError(.deviceConnecting, "Device \(device.id) is still connecting.", remedy: device.remedy ?? "Wait a moment and try again.")
        case .notTrusted:
            throw FlippioError(.iosNotPaired, "Device \(device.id) does not trust this computer.", remedy: device.remedy)
        case .locked:
            throw FlippioError(.iosDeviceLocked, "Device \(device.id) is locked.", remedy: device.remedy ?? "Unlock it and try again.")
        case .unknown:
            throw FlippioError(.deviceOffline, "Device \(device.id) is not usable right now.", remedy: device.remedy)
        }
    }

    /// Exact id first, then a unique prefix.
    static func resolve(_ query: String, among devices: [Device], problems: [FlippioError] = []) throws -> Device {
        if let exact = devices.first(where: { $0.id == query }) { return exact }
        let matches = devices.filter { $0.id.hasPrefix(query) }
        if matches.count == 1 { return matches[0] }
        if matches.count > 1 {
            throw FlippioError(.deviceAmbiguous, "\"\(query)\" matches \(matches.count) devices: \(matches.map(\.id).joined(separator: ", ")).",
                               remedy: "Give more of the serial.")
        }
        let known = devices.map(\.id)
        var message = "No device \"\(query)\" is connected."
        if let problem = problems.first { message += " (\(problem.message))" }
        // With no device at all, the problem that hid a platform (usbmuxd not running...) is the fix.
        throw FlippioError(.deviceNotFound, message,
                           remedy: known.isEmpty ? problems.first?.remedy ?? "Connect a device with USB debugging on, then run `flippio devices`."
                                                 : "Connected: \(known.joined(separator: ", ")). Run `flippio devices` to see them.")
    }

    public func apps(device query: String, includeSystem: Bool) async throws -> [AppInfo] {
        let device = try await device(query)
        let bridge = try await bridges.bridge(for: device.platform)
        return try await configuration.retry.run("list apps") {
            try await bridge.apps(deviceID: device.id, includeSystem: includeSystem)
        }
    }

    public func databases(device query: String, app: String) async throws -> [RemoteDatabase] {
        let device = try await device(query)
        let bridge = try await bridges.bridge(for: device.platform)
        return try await configuration.retry.run("find databases") {
            try await bridge.databases(deviceID: device.id, appID: app)
        }
    }
}
