import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The iOS tool stand-ins for a test: a temp `bin` folder with `idevice_id`, `ideviceinfo`,
/// `ideviceinstaller` and the file backend's tools (`afcclient`, or `ifuse` and `fusermount`;
/// symlinks to the built `flippio-ios-standin`), the simulated devices folder they read
/// (`FLIPPIO_IOS_SIM_DIR`), and a private `XDG_RUNTIME_DIR` for the ifuse mounts.
///
/// With `.afcclient` all six tools are there (flippio picks afcclient, as on a newer
/// libimobiledevice); with `.ifuse` `afcclient` is left out, as on Debian 12.
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
    public static let toolNames = ["idevice_id", "ideviceinfo", "ideviceinstaller", "afcclient", "ifuse", "fusermount"]

    private let root: TemporaryDirectory
    public let binDirectory: URL
    public let simDirectory: URL
    /// The `XDG_RUNTIME_DIR` of the flippio processes (0700); ifuse mounts go under `flippio/mnt`.
    public let runtimeDirectory: URL
    /// The file backend flippio will pick with these tools.
    public let backend: IOSStandInBackend

    /// Where flippio mounts apps with ifuse.
    public var mountRoot: URL { runtimeDirectory.appendingPathComponent("flippio/mnt", isDirectory: true) }

    public init(backend: IOSStandInBackend = .afcclient) throws {
        self.backend = backend
        root = try TemporaryDirectory("flippio-ios")
        binDirectory = root.url.appendingPathComponent("bin", isDirectory: true)
        simDirectory = root.url.appendingPathComponent("sim", isDirectory: true)
        runtimeDirectory = root.url.appendingPathComponent("runtime", isDirectory: true)
        let fm = FileManager.default
        try fm.createDirectory(at: binDirectory, withIntermediateDirectories: true)
        try fm.createDirectory(at: simDirectory, withIntermediateDirectories: true)
        try fm.createDirectory(at: runtimeDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let standIn = Products.executable("flippio-ios-standin")
        guard fm.isExecutableFile(atPath: standIn.path) else {
            throw ShellError("flippio-ios-standin is not built at \(standIn.path); run `swift build --build-tests`")
        }
        for name in Self.toolNames where !(backend == .ifuse && name == "afcclient") {
            try fm.createSymbolicLink(at: binDirectory.appendingPathComponent(name), withDestinationURL: standIn)
        }
    }

    /// Unmounts whatever is still mounted under the stand-ins' folder (a test that failed half-way,
    /// an agent that was killed) before the folder is removed: removing through a bind mount would
    /// reach into the container, and a dead FUSE mount cannot be removed at all.
    deinit {
        for point in MountPoints.under(root.url.path + "/") { umount2(point, Int32(MNT_DETACH)) }
    }

    /// `FLIPPIO_IOS_SIM_DIR`, `PATH` with the stand-ins first, and `XDG_RUNTIME_DIR`.
    public var environment: [String: String] {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return ["FLIPPIO_IOS_SIM_DIR": simDirectory.path, "PATH": binDirectory.path + ":" + path,
                "XDG_RUNTIME_DIR": runtimeDirectory.path]
    }

    /// The ifuse mounts flippio has under ``mountRoot`` right now (per the kernel).
    public func activeMounts() -> [String] {
        MountPoints.under(mountRoot.path + "/")
    }

    /// Why the ifuse stand-in cannot mount here (not root, no CAP_SYS_ADMIN, no /dev/fuse), or nil
    /// when it can: ifuse tests are skipped with this reason.
    public static let ifuseUnavailableReason: String? = {
        guard getuid() == 0 else { return "the ifuse stand-in bind-mounts, which needs root" }
        guard access("/dev/fuse", R_OK | W_OK) == 0 else { return "/dev/fuse is not usable (an unplugged device is a dead FUSE mount)" }
        let probe = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("flippio-mount-probe-\(getpid())")
        try? FileManager.default.createDirectory(at: probe, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: probe) }
        guard mount(probe.path, probe.path, nil, UInt(MS_BIND), nil) == 0 else {
            return "mount(2) is not permitted here: \(String(cString: strerror(errno)))"
        }
        umount2(probe.path, 0)
        return nil
    }()

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

/// Which iOS file backend a test runs through (flippio's `IOSFileBackendKind`, by name).
public enum IOSStandInBackend: String, Sendable, CaseIterable {
    case afcclient
    case ifuse

    /// Why a test cannot run through this backend here (nil: it can). Tests cancel (skip) the
    /// ifuse case with this reason instead of failing.
    public var unavailableReason: String? {
        self == .ifuse ? IOSStandIns.ifuseUnavailableReason.map { "ifuse stand-in: \($0)" } : nil
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
    ///
    /// Its ifuse mounts die as real ones do when the phone goes: the ifuse daemon exits, and the
    /// kernel answers every call through the mount with ENOTCONN ("Transport endpoint is not
    /// connected") until someone runs `fusermount -u`. Each bind mount the ifuse stand-in made is
    /// detached and replaced, at the same mount point, by a FUSE mount whose daemon is already gone
    /// (`/dev/fuse` opened, mounted, closed): the kernel's own dead-FUSE behaviour, not an imitation.
    public func unplug() throws {
        try Data().write(to: folder.appendingPathComponent("unplugged"))
        for point in mountPoints() {
            umount2(point, Int32(MNT_DETACH))
            try DeadFuseMount.mount(at: point)
        }
    }

    /// The mount points the ifuse stand-in made for this device that are still mounted.
    public func mountPoints() -> [String] {
        let recorded = (try? String(contentsOf: folder.appendingPathComponent("mounts"), encoding: .utf8)) ?? ""
        let mounted = Set(MountPoints.under("/"))
        return Set(recorded.split(separator: "\n").map(String.init)).filter { mounted.contains($0) }.sorted()
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

// MARK: - Mounts

/// The kernel's mount table, read from `/proc/self/mountinfo` (mount points with `\040`-style
/// escapes decoded).
public enum MountPoints {
    /// Read in one call: read in pieces while other tests mount and unmount, the kernel's table
    /// can skip lines.
    public static func under(_ prefix: String) -> [String] {
        let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 1 << 22)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        close(fd)
        let text = String(decoding: buffer.prefix(max(0, n)), as: UTF8.self)
        let points = text.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4 else { return nil }
            return String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
                .replacingOccurrences(of: "\\011", with: "\t").replacingOccurrences(of: "\\134", with: "\\")
        }
        return Set(points.filter { $0.hasPrefix(prefix) }).sorted { $0.count > $1.count }
    }
}

/// A FUSE mount with no daemon behind it: what an ifuse mount becomes when its device goes.
///
/// ``mount(at:)`` opens `/dev/fuse`, mounts it (`fuse.ifuse`, source `ifuse`, as the real one shows
/// in `/proc/mounts`) and closes the descriptor at once: the kernel aborts the connection, and
/// every call through the mount fails with ENOTCONN. ``hang(at:)`` keeps the descriptor open
/// without ever answering: every call blocks, as on a wedged USB link, until ``Hung/release()``.
public enum DeadFuseMount {
    public static func mount(at point: String) throws {
        let fd = try attach(at: point)
        close(fd)
    }

    /// A FUSE mount whose daemon never answers.
    public final class Hung: @unchecked Sendable {
        private var fd: Int32
        init(fd: Int32) { self.fd = fd }

        /// Aborts the connection: blocked calls return ENOTCONN.
        public func release() {
            if fd >= 0 { close(fd); fd = -1 }
        }

        deinit { release() }
    }

    public static func hang(at point: String) throws -> Hung {
        Hung(fd: try attach(at: point))
    }

    private static func attach(at point: String) throws -> Int32 {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw ShellError("cannot open /dev/fuse: \(String(cString: strerror(errno)))") }
        let options = "fd=\(fd),rootmode=40000,user_id=\(getuid()),group_id=\(getgid())"
        guard Glibc.mount("ifuse", point, "fuse.ifuse", UInt(MS_NOSUID | MS_NODEV), options) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ShellError("cannot mount a FUSE file system at \(point): \(reason)")
        }
        return fd
    }
}
