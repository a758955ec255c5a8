import Foundation
import Synchronization

/// iOS devices through the libimobiledevice command-line tools.
///
/// Devices come from `idevice_id -l`/`-n` and `ideviceinfo`, apps from `ideviceinstaller`, and
/// files over house_arrest: the app's container (`--container`, development-signed builds) or,
/// when that is refused, its shared Documents (`--documents`, `UIFileSharingEnabled`). The files
/// go through one of two backends (``IOSFileBackendKind``): `afcclient` (libimobiledevice 1.3.1
/// and later), or an `ifuse` mount (the distributions that ship 1.3.0); see ``IOSFileBackend``.
///
/// For example:
///
/// ```swift
/// let bridge = IOSBridge(tools: .onPath(), runner: ProcessRunner())
/// for device in try await bridge.devices() where device.state == .ready {
///     let apps = try await bridge.apps(deviceID: device.id, includeSystem: false)
/// }
/// ```
///
/// Every call runs through ``ProcessRunning`` with a timeout from ``Timeouts``. The bridge does not
/// retry: callers wrap calls in the retry policy.
///
/// - Important: iOS offers no remote hash: ``fingerprint(_:)`` copies the files and hashes them
///   locally, and ``stopApp(deviceID:appID:)`` cannot stop an app (that needs developer services),
///   so it does nothing.
public struct IOSBridge: DeviceBridge {
    /// Where the tools are; nil means missing (calls that need it throw `toolNotFound`).
    public struct ToolPaths: Sendable, Equatable {
        public var ideviceID: String?
        public var ideviceInfo: String?
        public var ideviceInstaller: String?
        public var afcClient: String?
        /// `ifuse` and `fusermount` (or `fusermount3`): the ifuse backend needs both.
        public var ifuse: String?
        public var fusermount: String?

        public init(ideviceID: String?, ideviceInfo: String?, ideviceInstaller: String?, afcClient: String?,
                    ifuse: String? = nil, fusermount: String? = nil) {
            self.ideviceID = ideviceID
            self.ideviceInfo = ideviceInfo
            self.ideviceInstaller = ideviceInstaller
            self.afcClient = afcClient
            self.ifuse = ifuse
            self.fusermount = fusermount
        }

        /// The tools found in `directory` (executables named `idevice_id`, `ideviceinfo`, ...).
        public static func inDirectory(_ directory: URL) -> ToolPaths {
            func find(_ name: String) -> String? {
                let path = directory.appendingPathComponent(name).path
                return FileManager.default.isExecutableFile(atPath: path) ? path : nil
            }
            return ToolPaths(ideviceID: find("idevice_id"), ideviceInfo: find("ideviceinfo"),
                             ideviceInstaller: find("ideviceinstaller"), afcClient: find("afcclient"),
                             ifuse: find("ifuse"), fusermount: find("fusermount") ?? find("fusermount3"))
        }

        /// The tools found on `PATH` (from `environment`, default the process's).
        public static func onPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> ToolPaths {
            let dirs = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
            func find(_ name: String) -> String? {
                for dir in dirs {
                    let path = URL(fileURLWithPath: String(dir)).appendingPathComponent(name).path
                    if FileManager.default.isExecutableFile(atPath: path) { return path }
                }
                return nil
            }
            return ToolPaths(ideviceID: find("idevice_id"), ideviceInfo: find("ideviceinfo"),
                             ideviceInstaller: find("ideviceinstaller"), afcClient: find("afcclient"),
                             ifuse: find("ifuse"), fusermount: find("fusermount") ?? find("fusermount3"))
        }

        func path(for tool: IOSErrors.Tool) -> String? {
            switch tool {
            case .ideviceID: ideviceID
            case .ideviceInfo: ideviceInfo
            case .ideviceInstaller: ideviceInstaller
            case .afcClient: afcClient
            case .ifuse: ifuse
            case .fusermount: fusermount
            }
        }
    }

    /// Deadlines for the tools.
    public struct Timeouts: Sendable, Equatable {
        /// `idevice_id`, `ideviceinfo`, and `afcclient` calls that move no file data. The default is 20 s.
        public var control: Duration
        /// `ideviceinstaller` listing apps (slow on devices with many apps). The default is 30 s.
        public var listApps: Duration
        /// Base deadline of a `get`/`put`, plus one second per `transferBytesPerSecond`. The default is 30 s.
        public var transferBase: Duration
        /// The slowest transfer rate accepted. The default is 5 MB/s.
        public var transferBytesPerSecond: Int64
        /// Time between SIGTERM and SIGKILL to a tool's process group. The default is 2 s.
        public var killGrace: Duration

        public init(control: Duration = .seconds(20), listApps: Duration = .seconds(30), transferBase: Duration = .seconds(30),
                    transferBytesPerSecond: Int64 = 5_000_000, killGrace: Duration = .seconds(2)) {
            self.control = control
            self.listApps = listApps
            self.transferBase = transferBase
            self.transferBytesPerSecond = transferBytesPerSecond
            self.killGrace = killGrace
        }

        /// The deadline for moving `bytes`.
        public func transfer(bytes: Int64) -> Duration {
            transferBase + .milliseconds(max(0, bytes) * 1000 / max(1, transferBytesPerSecond))
        }
    }

    /// Bounds on the database search in an app's container.
    public struct Limits: Sendable, Equatable {
        /// Deepest folder level searched below `/Documents` and `/Library`. The default is 6.
        public var maxDepth: Int
        /// Most folders listed. The default is 256.
        public var maxDirectories: Int
        /// Most entries looked at. The default is 10,000.
        public var maxEntries: Int
        /// Most files whose header is read to tell whether they are SQLite. The default is 500.
        public var maxHeaderProbes: Int
        /// With afcclient (which can only copy a file whole), the largest file without a database's
        /// extension whose header is checked. The default is 32 MiB.
        public var maxCopiedProbeBytes: Int64

        public init(maxDepth: Int = 6, maxDirectories: Int = 256, maxEntries: Int = 10_000, maxHeaderProbes: Int = 500,
                    maxCopiedProbeBytes: Int64 = 32 << 20) {
            self.maxDepth = maxDepth
            self.maxDirectories = maxDirectories
            self.maxEntries = maxEntries
            self.maxHeaderProbes = maxHeaderProbes
            self.maxCopiedProbeBytes = maxCopiedProbeBytes
        }
    }

    public let tools: ToolPaths
    public let timeouts: Timeouts
    public let limits: Limits
    let runner: any ProcessRunning
    /// Added to the tools' environment (e.g. `USBMUXD_SOCKET_ADDRESS`).
    let environment: [String: String]
    /// Where fingerprints and verifications copy files to.
    let temporaryDirectory: URL
    /// UDIDs last seen only over the network (their calls need `-n`).
    let networkDevices = NetworkDevices()
    /// Which program reaches the apps' files.
    public let fileBackendKind: IOSFileBackendKind
    /// The ifuse mounts (shared by copies of the bridge; unused with afcclient).
    let mounts: IFuseMounts

    public var platform: Platform { .ios }

    /// - parameters:
    ///   - tools: the tools' paths.
    ///   - runner: runs every tool with its deadline.
    ///   - timeouts: deadlines; see ``Timeouts``.
    ///   - limits: bounds on the database search.
    ///   - environment: variables added to the tools' environment.
    ///   - temporaryDirectory: where files are copied to be hashed. The default is the system's.
    ///   - fileBackend: afcclient or ifuse. The default (nil) is afcclient when `tools` has it, else
    ///     ifuse when it has ifuse, else afcclient (whose calls then say what to install).
    ///   - mountRoot: where ifuse mounts go. The default is `$XDG_RUNTIME_DIR/flippio/mnt` (see ``IFuseMounts``).
    public init(tools: ToolPaths, runner: any ProcessRunning, timeouts: Timeouts = Timeouts(), limits: Limits = Limits(),
                environment: [String: String] = [:],
                temporaryDirectory: URL = URL(fileURLWithPath: NSTemporaryDirectory(), isDirectory: true),
                fileBackend: IOSFileBackendKind? = nil, mountRoot: URL? = nil) {
        self.fileBackendKind = IOSFileBackendKind.choose(requested: fileBackend, afcclientUsable: tools.afcClient != nil,
                                                          ifuseUsable: tools.ifuse != nil) ?? .afcclient
        self.mounts = IFuseMounts(root: mountRoot ?? IFuseMounts.defaultRoot(
            environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }))
        self.tools = tools
        self.runner = runner
        self.timeouts = timeouts
        self.limits = limits
        self.environment = environment
        self.temporaryDirectory = temporaryDirectory
    }

    // MARK: - Devices

    /// Every device usbmuxd sees (USB, then network-only), with its name and iOS version, or with
    /// its state and a remedy when it is locked or not trusted.
    ///
    /// - throws: `usbmuxdUnavailable` when usbmuxd is not running, `toolNotFound`, `timedOut`.
    public func devices() async throws -> [Device] {
        try await devices(only: nil)
    }

    /// ``devices()``, but only `ids` are asked for their state (one `ideviceinfo` each): the
    /// agent's poll for devices it waits for. A device in `ids` that is not connected is left out.
    ///
    /// - throws: as ``devices()``.
    public func devices(only ids: Set<String>?) async throws -> [Device] {
        let usb = try await checked(.ideviceID, ["-l"], timeout: timeouts.control, deviceID: nil)
        let usbIDs = IOSOutputParser.udids(usb.stdoutText)
        // Network devices are a bonus: an idevice_id without -n (before 1.3.0) must not hide USB ones.
        let network = try? await checked(.ideviceID, ["-n"], timeout: timeouts.control, deviceID: nil)
        let networkIDs = IOSOutputParser.udids(network?.stdoutText ?? "").filter { !usbIDs.contains($0) }
        networkDevices.replace(with: Set(networkIDs))
        let all = (usbIDs.map { ($0, false) } + networkIDs.map { ($0, true) }).filter { ids?.contains($0.0) ?? true }
        return try await withThrowingTaskGroup(of: (Int, Device).self) { group in
            for (index, (id, isNetwork)) in all.enumerated() {
                group.addTask { (index, try await describe(id, network: isNetwork)) }
            }
            var found: [(Int, Device)] = []
            for try await item in group { found.append(item) }
            return found.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    private func describe(_ id: String, network: Bool) async throws -> Device {
        let details = ["connection": network ? "network" : "usb"]
        let base = ["-u", id] + (network ? ["-n"] : [])
        let nameResult = try await run(.ideviceInfo, base + ["-k", "DeviceName"], timeout: timeouts.control)
        if let error = IOSErrors.failure(in: nameResult, tool: .ideviceInfo, command: "ideviceinfo -k DeviceName", deviceID: id) {
            let state: Device.State
            switch error.code {
            case .iosDeviceLocked: state = .locked
            case .iosNotPaired: state = .notTrusted
            case .deviceNotFound, .connectionReset: state = .offline
            case .usbmuxdUnavailable, .toolNotFound: throw error
            default: state = .unknown
            }
            return Device(platform: .ios, id: id, state: state, details: details,
                          remedy: error.remedy.map { state == .unknown ? "\(error.message) \($0)" : $0 } ?? error.message)
        }
        let version = try? await checked(.ideviceInfo, base + ["-k", "ProductVersion"], timeout: timeouts.control, deviceID: id)
        return Device(platform: .ios, id: id, state: .ready, model: IOSOutputParser.value(nameResult.stdoutText),
                      osVersion: version.flatMap { IOSOutputParser.value($0.stdoutText) }, details: details)
    }

    // MARK: - Apps

    /// Installed apps from `ideviceinstaller -l -o xml` (or the later `list --xml`), falling back to
    /// the text listing. Apple's own apps (`com.apple.*`) are left out unless `includeSystem`.
    public func apps(deviceID: String, includeSystem: Bool) async throws -> [AppInfo] {
        try Self.validate(deviceID: deviceID)
        let base = ["-u", deviceID] + networkFlag(deviceID)
        var modern = false
        var result = try await run(.ideviceInstaller, base + ["-l", "-o", "xml"] + (includeSystem ? ["-o", "list_all"] : []),
                                   timeout: timeouts.listApps)
        if result.status == 2, (result.stderrText + result.stdoutText).contains("Usage") {
            // ideviceinstaller after 1.1.1 has commands instead of -l.
            modern = true
            result = try await run(.ideviceInstaller, base + ["list", "--xml"] + (includeSystem ? ["--all"] : []),
                                   timeout: timeouts.listApps)
        }
        try await throwDiagnosed(result, tool: .ideviceInstaller, command: "ideviceinstaller list", deviceID: deviceID)
        var apps: [AppInfo]
        if let parsed = try? IOSOutputParser.apps(fromPropertyList: result.stdout) {
            apps = parsed
        } else {
            let textArgs = modern ? base + ["list"] + (includeSystem ? ["--all"] : [])
                : base + ["-l"] + (includeSystem ? ["-o", "list_all"] : [])
            let text = try await run(.ideviceInstaller, textArgs, timeout: timeouts.listApps)
            try await throwDiagnosed(text, tool: .ideviceInstaller, command: "ideviceinstaller list", deviceID: deviceID)
            guard let parsed = IOSOutputParser.apps(fromText: text.stdoutText) else {
                throw FlippioError(.unexpectedOutput, "ideviceinstaller printed an app list flippio cannot read.",
                                   context: ["device": deviceID, "output": String(text.stdoutText.prefix(300))])
            }
            apps = parsed
        }
        var seen = Set<String>()
        return apps.filter { includeSystem || !$0.id.hasPrefix("com.apple.") }
            .filter { seen.insert($0.id).inserted }
            .sorted { $0.id < $1.id }
    }

    /// Does nothing: iOS has no way to stop an app without developer services (a debug session).
    /// Keep the app in the background, or closed, while flippio pushes.
    public func stopApp(deviceID: String, appID: String) async throws {}

    // MARK: - File backend

    /// The backend that reaches the apps' files.
    var files: any IOSFileBackend {
        switch fileBackendKind {
        case .afcclient: AFCClientBackend(bridge: self)
        case .ifuse: IFuseBackend(bridge: self, mounts: mounts)
        }
    }

    /// Lets go of the file backend's mounts: of `deviceID` when it went away, or (nil) the ones
    /// this process made, when it ends. Does nothing with afcclient.
    public func releaseFiles(deviceID: String?) async {
        await files.release(deviceID: deviceID)
    }

    /// Unmounts what a killed agent left under the mount root (ifuse only); returns the mount points.
    public func removeStaleMounts() async -> [URL] {
        guard fileBackendKind == .ifuse else { return [] }
        return await IFuseBackend(bridge: self, mounts: mounts).removeStaleMounts()
    }

    // MARK: - Running the tools

    func run(_ tool: IOSErrors.Tool, _ arguments: [String], timeout: Duration,
             output: ProcessCommand.Output = .capture(limit: 8 << 20)) async throws -> ProcessResult {
        guard let path = tools.path(for: tool) else { throw IOSErrors.toolMissing(tool) }
        let command = ProcessCommand(executable: path, arguments: arguments, environment: environment,
                                     timeout: timeout, killGrace: timeouts.killGrace, output: output)
        do {
            return try await runner.run(command)
        } catch let error as FlippioError where error.code == .toolNotFound {
            throw IOSErrors.toolMissing(tool, path: path)
        }
    }

    /// Runs a tool and throws the failure its output reports.
    @discardableResult
    func checked(_ tool: IOSErrors.Tool, _ arguments: [String], timeout: Duration, deviceID: String?,
                 ignoring: (String) -> Bool = { _ in false }) async throws -> ProcessResult {
        let result = try await run(tool, arguments, timeout: timeout)
        if let error = IOSErrors.failure(in: result, tool: tool, command: ([tool.rawValue] + arguments).joined(separator: " "),
                                         deviceID: deviceID, ignoring: ignoring) {
            throw await explained(error, tool: tool, deviceID: deviceID)
        }
        return result
    }

    /// `afcclient -u UDID` waits for a device that is not connected (while another one is) until
    /// it is killed: a timeout may mean the device was unplugged. Asks usbmuxd, and says so.
    func explained(_ error: FlippioError, tool: IOSErrors.Tool, deviceID: String?) async -> FlippioError {
        guard error.code == .timedOut, tool == .afcClient, let deviceID,
              (try? await isConnected(deviceID)) == false else { return error }
        return IOSErrors.notConnected(deviceID)
    }

    /// Throws `deviceNotFound` at once when usbmuxd does not list `deviceID`, rather than letting
    /// `afcclient` wait for it until its timeout.
    ///
    /// A device that went away takes its ifuse mounts with it: they are unmounted here.
    func requireConnected(_ deviceID: String) async throws {
        if try await isConnected(deviceID) == false {
            await files.release(deviceID: deviceID)
            throw IOSErrors.notConnected(deviceID)
        }
    }

    /// Whether usbmuxd lists `deviceID` (USB, then network); nil when that cannot be told (an
    /// `idevice_id` without `-n` and a device not on USB).
    func isConnected(_ deviceID: String) async throws -> Bool? {
        let usb = try await checked(.ideviceID, ["-l"], timeout: timeouts.control, deviceID: nil)
        if IOSOutputParser.udids(usb.stdoutText).contains(deviceID) { return true }
        guard let network = try? await checked(.ideviceID, ["-n"], timeout: timeouts.control, deviceID: nil) else { return nil }
        return IOSOutputParser.udids(network.stdoutText).contains(deviceID)
    }

    /// Throws the failure in `result`; when a tool only says "Could not connect to lockdownd"
    /// (ideviceinstaller 1.1.1), asks `ideviceinfo` why (locked, or not trusted).
    func throwDiagnosed(_ result: ProcessResult, tool: IOSErrors.Tool, command: String, deviceID: String) async throws {
        guard let error = IOSErrors.failure(in: result, tool: tool, command: command, deviceID: deviceID) else { return }
        if error.code == .iosNotPaired, IOSOutputParser.lockdownError(result.stderrText) == nil, tools.ideviceInfo != nil {
            let probe = try? await run(.ideviceInfo, ["-u", deviceID] + networkFlag(deviceID) + ["-k", "DeviceName"],
                                       timeout: timeouts.control)
            if let probe, let precise = IOSErrors.failure(in: probe, tool: .ideviceInfo, command: "ideviceinfo", deviceID: deviceID) {
                throw precise
            }
        }
        throw error
    }

    func networkFlag(_ deviceID: String) -> [String] {
        networkDevices.contains(deviceID) ? ["-n"] : []
    }

    static func validate(deviceID: String) throws {
        guard IOSOutputParser.isUDID(deviceID) else {
            throw FlippioError(.invalidArgument, "\"\(deviceID.prefix(80))\" is not an iOS device UDID.",
                               remedy: "Use an id that `flippio devices` lists.")
        }
    }

    static func validate(appID: String) throws {
        guard IOSOutputParser.isBundleID(appID) else {
            throw FlippioError(.invalidArgument, "\"\(appID.prefix(80))\" is not a bundle identifier.",
                               remedy: "Use an id that `flippio apps DEVICE` lists.")
        }
    }
}

/// The UDIDs seen only over the network, shared by copies of one bridge.
final class NetworkDevices: Sendable {
    private let ids = Mutex<Set<String>>([])

    func replace(with new: Set<String>) { ids.withLock { $0 = new } }
    func contains(_ id: String) -> Bool { ids.withLock { $0.contains(id) } }
}
