import Foundation

/// The iOS tool stand-ins for a test: a temp `bin` folder with `idevice_id`, `ideviceinfo`,
/// `ideviceinstaller` and `afcclient` (symlinks to the built `flippio-ios-standin`), and the
/// simulated devices folder they read (`FLIPPIO_IOS_SIM_DIR`).
///
/// For example:
///
/// ```swift
/// let ios = try IOSStandIns()
/// let phone = try ios.addDevice(udid: "00008030-001A35E22E10802E", apps: ["com.example.Notes": .init(name: "Notes")])
/// try Shell.sqlite(phone.container("com.example.Notes").appendingPathComponent("Documents/notes.db"), "create table t(x)")
/// let bridge = IOSBridge(tools: .inDirectory(ios.binDirectory), runner: ProcessRunner(), environment: ios.environment)
/// ```
public final class IOSStandIns: @unchecked Sendable {
    public static let toolNames = ["idevice_id", "ideviceinfo", "ideviceinstaller", "afcclient"]

    private let root: TemporaryDirectory
    public let binDirectory: URL
    public let simDirectory: URL

    public init() throws {
        root = try TemporaryDirectory("flippio-ios")
        binDirectory = root.url.appendingPathComponent("bin", isDirectory: true)
        simDirectory = root.url.appendingPathComponent("sim", isDirectory: true)
        let fm = FileManager.default
        try fm.createDirectory(at: binDirectory, withIntermediateDirectories: true)
        try fm.createDirectory(at: simDirectory, withIntermediateDirectories: true)
        let standIn = Products.executable("flippio-ios-standin")
        guard fm.isExecutableFile(atPath: standIn.path) else {
            throw ShellError("flippio-ios-standin is not built at \(standIn.path); run `swift build --build-tests`")
        }
        for name in Self.toolNames {
            try fm.createSymbolicLink(at: binDirectory.appendingPathComponent(name), withDestinationURL: standIn)
        }
    }

    /// `FLIPPIO_IOS_SIM_DIR`, and `PATH` with the stand-ins first.
    public var environment: [String: String] {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return ["FLIPPIO_IOS_SIM_DIR": simDirectory.path, "PATH": binDirectory.path + ":" + path]
    }

    /// The path of one stand-in tool.
    public func tool(_ name: String) -> URL { binDirectory.appendingPathComponent(name) }

    /// Adds a device (and an empty container with `Documents/` and `Library/Application Support/`
    /// for each app).
    @discardableResult
    public func addDevice(udid: String = "00008030-001A35E22E10802E", name: String = "Ana's iPhone",
                          productVersion: String = "17.5", apps: [String: IOSStandInApp] = [:],
                          state: IOSStandInDevice.State = .ready, network: Bool = false) throws -> IOSStandInDevice {
        let device = IOSStandInDevice(udid: udid, folder: simDirectory.appendingPathComponent(udid, isDirectory: true))
        try FileManager.default.createDirectory(at: device.folder, withIntermediateDirectories: true)
        try device.write(IOSStandInDevice.Config(name: name, productVersion: productVersion, state: state.rawValue,
                                                 network: network, apps: apps))
        for bundle in apps.keys {
            let container = device.container(bundle)
            try FileManager.default.createDirectory(at: container.appendingPathComponent("Documents"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: container.appendingPathComponent("Library/Application Support"),
                                                    withIntermediateDirectories: true)
        }
        return device
    }

    /// Makes every tool fail as it does when usbmuxd is not running (or undoes it).
    public func setUsbmuxdDown(_ down: Bool) throws {
        let marker = simDirectory.appendingPathComponent("usbmuxd-down")
        if down { try Data().write(to: marker) } else { try? FileManager.default.removeItem(at: marker) }
    }

    /// Which ideviceinstaller the stand-in plays: "1.1.1" (`-l -o xml`, the default) or "1.2.0" (`list --xml`).
    public func setInstallerVersion(_ version: String) throws {
        try JSONSerialization.data(withJSONObject: ["ideviceinstaller": version]).write(to: simDirectory.appendingPathComponent("tools.json"))
    }

    /// Faults for every call, whatever the device.
    public func setGlobalFaults(_ faults: IOSStandInFaults) throws {
        try JSONEncoder().encode(faults).write(to: simDirectory.appendingPathComponent("faults.json"))
    }

    /// Takes one tool away (as if its package were not installed).
    public func removeTool(_ name: String) throws {
        try FileManager.default.removeItem(at: tool(name))
    }

    /// Every call the stand-ins received, oldest first.
    public func requests() throws -> [IOSStandInRequest] {
        let file = simDirectory.appendingPathComponent("requests.jsonl")
        guard let data = try? Data(contentsOf: file) else { return [] }
        return try data.split(separator: 0x0A).map { try JSONDecoder().decode(IOSStandInRequest.self, from: Data($0)) }
    }
}

/// An app on a stand-in device.
public struct IOSStandInApp: Codable, Sendable {
    public var name: String?
    public var version: String?
    public var build: String?
    /// house_arrest vends the container (a development-signed build).
    public var container: Bool
    /// house_arrest vends Documents (UIFileSharingEnabled).
    public var documents: Bool
    public var system: Bool

    public init(name: String? = nil, version: String? = "1.0", build: String? = nil, container: Bool = true,
                documents: Bool = false, system: Bool = false) {
        self.name = name
        self.version = version
        self.build = build
        self.container = container
        self.documents = documents
        self.system = system
    }
}

/// One stand-in device: its folder under the sim directory.
public struct IOSStandInDevice: Sendable {
    public enum State: String, Sendable { case ready, locked, unpaired }

    struct Config: Codable {
        var name: String
        var productVersion: String
        var state: String
        var network: Bool
        var apps: [String: IOSStandInApp]
    }

    public let udid: String
    public let folder: URL

    /// The app's container folder (what `afcclient --container BUNDLE` shows as `/`).
    public func container(_ bundle: String) -> URL {
        folder.appendingPathComponent("containers", isDirectory: true).appendingPathComponent(bundle, isDirectory: true)
    }

    func write(_ config: Config) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try encoder.encode(config).write(to: folder.appendingPathComponent("device.json"), options: .atomic)
    }

    func read() throws -> Config {
        try JSONDecoder().decode(Config.self, from: Data(contentsOf: folder.appendingPathComponent("device.json")))
    }

    /// Locks, unlocks or unpairs the device.
    public func setState(_ state: State) throws {
        var config = try read()
        config.state = state.rawValue
        try write(config)
    }

    /// Unplugs the device: usbmuxd no longer lists it, every call to it fails as with no device.
    /// Its files stay (as on a real phone).
    public func unplug() throws {
        try Data().write(to: folder.appendingPathComponent("unplugged"))
    }

    /// Plugs the device back in.
    public func plug() {
        try? FileManager.default.removeItem(at: folder.appendingPathComponent("unplugged"))
    }

    public func setFaults(_ faults: IOSStandInFaults) throws {
        try JSONEncoder().encode(faults).write(to: folder.appendingPathComponent("faults.json"), options: .atomic)
    }

    public func clearFaults() {
        try? FileManager.default.removeItem(at: folder.appendingPathComponent("faults.json"))
    }

    /// Pids (the tool and its child) of calls that hung on `hangSeconds`.
    public func hangPIDs() -> [Int32] {
        guard let text = try? String(contentsOf: folder.appendingPathComponent("hang-pids"), encoding: .utf8) else { return [] }
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int32($0) }
    }
}

/// Fault hooks read by the stand-ins on every call.
public struct IOSStandInFaults: Codable, Sendable {
    public var latencyMs: Int?
    /// How many of the next calls fail, printing `failMessage`.
    public var failNext: Int?
    public var failMessage: String?
    public var failTool: String?
    public var failExitCode: Int32?
    /// "stdout" (default) or "stderr".
    public var failStream: String?
    /// Calls hang this long (with a child process in their group).
    public var hangSeconds: Double?
    public var hangTool: String?
    /// The next `get`/`put` moves half the bytes and reports an error.
    public var dropNextTransfer: Bool?

    public init(latencyMs: Int? = nil, failNext: Int? = nil, failMessage: String? = nil, failTool: String? = nil,
                failExitCode: Int32? = nil, failStream: String? = nil, hangSeconds: Double? = nil, hangTool: String? = nil,
                dropNextTransfer: Bool? = nil) {
        self.latencyMs = latencyMs
        self.failNext = failNext
        self.failMessage = failMessage
        self.failTool = failTool
        self.failExitCode = failExitCode
        self.failStream = failStream
        self.hangSeconds = hangSeconds
        self.hangTool = hangTool
        self.dropNextTransfer = dropNextTransfer
    }
}

/// One call a stand-in received.
public struct IOSStandInRequest: Decodable, Sendable, Equatable {
    public var time: String
    public var tool: String
    public var args: [String]
}
