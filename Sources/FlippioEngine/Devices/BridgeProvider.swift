import Foundation

/// Hands out the bridge for each platform, built once from the discovered tools.
///
/// Tool discovery runs lazily and concurrently the first time a bridge is needed; a platform
/// whose tools are missing fails with ``FlippioError/Code/toolNotFound`` naming the Debian package,
/// without stopping the other platform.
public actor BridgeProvider {
    private let configuration: FlippioConfiguration
    private let runner: any ProcessRunning
    private let discovery: ToolDiscovery
    private var built: [Platform: any DeviceBridge] = [:]

    /// - parameter bridges: ready-made bridges (tests, the demo); other platforms are built from
    ///   the discovered tools when first needed.
    public init(configuration: FlippioConfiguration, runner: any ProcessRunning, bridges: [any DeviceBridge] = []) {
        self.configuration = configuration
        self.runner = runner
        var explicit: [Tool: String] = [:]
        for (name, path) in configuration.toolPaths {
            if let tool = Tool(rawValue: name) { explicit[tool] = path }
        }
        self.discovery = ToolDiscovery(environment: configuration.environment, explicitPaths: explicit,
                                       runner: runner, timeout: .seconds(3))
        self.built = Dictionary(bridges.map { ($0.platform, $0) }, uniquingKeysWith: { $1 })
    }

    /// The tool finder (shared, cached for the process).
    public nonisolated var tools: ToolDiscovery { discovery }

    /// The bridge for `platform`.
    ///
    /// - throws: ``FlippioError/Code/toolNotFound`` when the platform's tools are missing.
    public func bridge(for platform: Platform) async throws -> any DeviceBridge {
        if let bridge = built[platform] { return bridge }
        let bridge: any DeviceBridge
        switch platform {
        case .android:
            let adb = try await discovery.require(.adb)
            bridge = AndroidBridge(adbPath: adb, runner: runner, environment: [:],
                                   timeouts: .init(control: configuration.commandTimeout))
        case .ios:
            async let idevice = discovery.locate(.ideviceID)
            async let info = discovery.locate(.ideviceinfo)
            async let installer = discovery.locate(.ideviceinstaller)
            async let afc = discovery.locate(.afcclient)
            async let ifuse = discovery.locate(.ifuse)
            async let fusermount = discovery.locate(.fusermount)
            let (i, n, s, a) = await (idevice, info, installer, afc)
            let (f, u) = await (ifuse, fusermount)
            guard let ideviceID = Self.usablePath(i) else {
                throw FlippioError(.toolNotFound, "idevice_id \(i.path == nil ? "was not found" : "does not work: \(i.problem ?? "")"), so iOS devices cannot be listed.",
                                   remedy: "Install the Debian package libimobiledevice-utils (and usbmuxd): `sudo apt install libimobiledevice-utils usbmuxd`, or set FLIPPIO_IDEVICE_ID.",
                                   context: ["tool": "idevice_id", "package": "libimobiledevice-utils"])
            }
            // A tool that is missing (or does not answer `--version`) is left out: the calls that
            // need it say which Debian package to install.
            let control = configuration.commandTimeout
            let tools = IOSBridge.ToolPaths(ideviceID: ideviceID, ideviceInfo: Self.usablePath(n), ideviceInstaller: Self.usablePath(s),
                                            afcClient: Self.usablePath(a), ifuse: Self.usablePath(f), fusermount: Self.usablePath(u))
            // ifuse counts only with fusermount beside it: a mount flippio cannot undo is worse than none.
            let backend = IOSFileBackendKind.choose(requested: try IOSFileBackendKind.requested(in: configuration.environment),
                                                    afcclientUsable: tools.afcClient != nil,
                                                    ifuseUsable: tools.ifuse != nil && tools.fusermount != nil)
            bridge = IOSBridge(tools: tools, runner: runner,
                               timeouts: .init(control: control, listApps: control + control / 2, transferBase: control + control / 2),
                               fileBackend: backend, mountRoot: IFuseMounts.defaultRoot(environment: configuration.environment))
        }
        built[platform] = bridge
        return bridge
    }

    /// The iOS file backend in use (nil when the iOS tools are missing altogether).
    public func iosFileBackend() async -> IOSFileBackendKind? {
        (try? await bridge(for: .ios) as? IOSBridge)?.fileBackendKind
    }

    /// Unmounts what a killed agent left behind (ifuse mounts under the mount root). The agent
    /// runs it at start; returns the mount points it removed.
    public func removeStaleMounts() async -> [URL] {
        // Read the mount table first: with nothing left behind, no tool discovery runs.
        let root = IFuseMounts.defaultRoot(environment: configuration.environment)
        guard !MountTable.mountPoints(under: root.path + "/").isEmpty, let ios = try? await bridge(for: .ios) as? IOSBridge else { return [] }
        return await ios.removeStaleMounts()
    }

    /// Lets go of the mounts this process made (the agent stopping, a one-shot command ending).
    /// Only bridges already built are asked: it never starts tool discovery.
    public func releaseDeviceFiles() async {
        if let ios = built[.ios] as? IOSBridge { await ios.releaseFiles(deviceID: nil) }
    }

    /// The tool's path when it was found and answered its version call.
    private static func usablePath(_ info: ToolInfo) -> String? {
        info.problem == nil ? info.path : nil
    }

    /// Bridges whose tools are present, for listings across platforms. Missing tools are reported
    /// as problems instead of errors.
    public func availableBridges() async -> (bridges: [any DeviceBridge], problems: [FlippioError]) {
        var bridges: [any DeviceBridge] = []
        var problems: [FlippioError] = []
        for platform in Platform.allCases {
            do { bridges.append(try await bridge(for: platform)) } catch let error as FlippioError {
                problems.append(error)
            } catch {
                problems.append(.internalError("\(error)"))
            }
        }
        return (bridges, problems)
    }
}
