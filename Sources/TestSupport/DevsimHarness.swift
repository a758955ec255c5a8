import DeviceSimulator
import Foundation

/// A running device simulator for a test: a temp devices folder and an adb server on a free port.
///
/// By default it runs the built `flippio-devsim` executable as a real process; `inProcess: true`
/// runs ``AdbServer`` inside the test process instead. Either way the real `/usr/bin/adb` talks to it.
///
/// For example:
///
/// ```swift
/// let sim = try Devsim()
/// let phone = try sim.addDevice("emulator-5554", packages: ["com.example.notes": true])
/// try Shell.sqlite(phone.appData("com.example.notes").appendingPathComponent("databases/notes.db"),
///                  "CREATE TABLE t(x)")
/// let result = try sim.adb(["-s", phone.serial, "shell", "run-as", "com.example.notes", "ls", "databases"])
/// ```
///
/// - Important: pass ``environment`` to every `adb` you start (or use ``adb(_:input:timeout:)``), so the
///   client talks to the simulator and never starts an adb server of its own. The environment sets
///   `ADB_SERVER_SOCKET=tcp:127.0.0.1:PORT` as well as `ANDROID_ADB_SERVER_PORT`: with that socket
///   spec the client treats the server as remote and refuses to spawn one.
public final class Devsim: @unchecked Sendable {
    public let port: Int
    /// `DIR`: one `SERIAL/` folder per device, and `requests.jsonl`.
    public let devicesDirectory: URL
    /// The folder holding `DIR` and the simulator's log files (removed when the harness goes).
    public let workDirectory: URL

    private let temp: TemporaryDirectory
    private let lock = NSLock()
    private var process: Process?
    private var server: AdbServer?

    /// Starts a simulator with no devices.
    ///
    /// - parameter inProcess: run ``AdbServer`` in this process instead of the `flippio-devsim`
    ///   executable. The default is false (a real process, as flippio meets it).
    /// - throws: ``ShellError`` when the executable is missing or does not come up in 30 s.
    public init(inProcess: Bool = false) throws {
        temp = try TemporaryDirectory("devsim")
        workDirectory = temp.url
        devicesDirectory = temp.url.appendingPathComponent("devices", isDirectory: true)
        try FileManager.default.createDirectory(at: devicesDirectory, withIntermediateDirectories: true)
        if inProcess {
            let server = AdbServer(devicesDirectory: devicesDirectory)
            port = try server.start()
            self.server = server
            return
        }
        let executable = Products.executable("flippio-devsim")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw ShellError("\(executable.path) is not built (run `swift build --build-tests`)")
        }
        let outURL = temp.url.appendingPathComponent("devsim.out")
        let errURL = temp.url.appendingPathComponent("devsim.err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let process = Process()
        process.executableURL = executable
        process.arguments = ["--port", "0", "--devices", devicesDirectory.path]
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process

        // The first line of output is `listening on 127.0.0.1:PORT`.
        let deadline = Date().addingTimeInterval(30)
        var found: Int?
        while found == nil && Date() < deadline && process.isRunning {
            let text = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on 127.0.0.1:") }),
               let n = Int(line.split(separator: ":").last ?? "") {
                found = n
            } else {
                usleep(20_000)
            }
        }
        guard let found else {
            let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
            process.terminate()
            process.waitUntilExit()
            throw ShellError("flippio-devsim did not start: \(err)")
        }
        port = found
    }

    deinit { stop() }

    /// Environment for an `adb` child process: `ANDROID_ADB_SERVER_PORT` and `ADB_SERVER_SOCKET`.
    public var environment: [String: String] {
        ["ANDROID_ADB_SERVER_PORT": "\(port)", "ADB_SERVER_SOCKET": "tcp:127.0.0.1:\(port)"]
    }

    /// Whether the simulator still serves.
    public var isRunning: Bool {
        lock.lock(); defer { lock.unlock() }
        if let process { return process.isRunning }
        return server != nil
    }

    // MARK: - Devices

    /// Creates `DIR/SERIAL/` with a `device.json` and an `fs/` holding a phone's folders
    /// (``DeviceLayout``: `/data/local/tmp`, `/sdcard`, `/data/user/0 -> /data/data`, ...) and
    /// `/data/data/PKG` for each package. Replaces the `device.json` of a device of the same serial.
    ///
    /// - parameter packages: package name → debuggable.
    @discardableResult
    public func addDevice(
        _ serial: String, state: String = "device", model: String = "Pixel 7", su: Bool = false,
        packages: [String: Bool] = [:]
    ) throws -> DevsimDevice {
        let device = DevsimDevice(serial: serial, devicesDirectory: devicesDirectory)
        let fm = FileManager.default
        try DeviceLayout.create(fs: device.fs)
        for name in packages.keys {
            try fm.createDirectory(at: device.appData(name), withIntermediateDirectories: true)
        }
        let config = DeviceConfig(
            state: state, model: model, su: su,
            packages: packages.mapValues { PackageConfig(debuggable: $0) })
        try device.writeConfig(config)
        return device
    }

    /// A handle on an existing device folder.
    public func device(_ serial: String) -> DevsimDevice {
        DevsimDevice(serial: serial, devicesDirectory: devicesDirectory)
    }

    // MARK: - adb

    /// Path of the real adb client.
    public static var adbPath: URL { Products.systemTool("adb") ?? URL(fileURLWithPath: "/usr/bin/adb") }

    /// Runs `/usr/bin/adb -H 127.0.0.1 -P PORT ARGS...` against the simulator and waits for it.
    ///
    /// - throws: ``ShellError`` when the simulator is not running (so adb never starts a server).
    public func adb(_ arguments: [String], input: Data? = nil, timeout: TimeInterval = 60) throws -> ShellResult {
        guard isRunning else { throw ShellError("devsim is not running; refusing to run adb") }
        return try Shell.run(
            Self.adbPath, ["-H", "127.0.0.1", "-P", "\(port)"] + arguments, input: input,
            environment: environment, timeout: timeout)
    }

    // MARK: - Requests

    /// Every request so far, parsed from `DIR/requests.jsonl`.
    public func requests() throws -> [DevsimRequest] {
        let url = devicesDirectory.appendingPathComponent("requests.jsonl")
        guard let data = try? Data(contentsOf: url) else { return [] }
        let decoder = JSONDecoder()
        return try data.split(separator: 0x0A).map { try decoder.decode(DevsimRequest.self, from: Data($0)) }
    }

    /// Forgets the requests so far (truncates `requests.jsonl`).
    public func clearRequests() throws {
        try Data().write(to: devicesDirectory.appendingPathComponent("requests.jsonl"))
    }

    // MARK: - Stopping

    /// Stops the simulator (SIGTERM, then SIGKILL after 5 s). Also done on deinit.
    public func stop() {
        lock.lock()
        let process = self.process
        let server = self.server
        self.server = nil
        lock.unlock()
        server?.stop()
        guard let process, process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// One simulated device's folder: `DIR/SERIAL/` with `device.json`, `faults.json` and `fs/`.
public struct DevsimDevice: Sendable {
    public let serial: String
    public let devicesDirectory: URL

    public init(serial: String, devicesDirectory: URL) {
        self.serial = serial
        self.devicesDirectory = devicesDirectory
    }

    /// `DIR/SERIAL/`.
    public var root: URL { devicesDirectory.appendingPathComponent(serial, isDirectory: true) }
    /// `DIR/SERIAL/fs/`: the device's `/`.
    public var fs: URL { root.appendingPathComponent("fs", isDirectory: true) }

    /// `fs/data/data/PKG`: the app's private folder.
    public func appData(_ package: String) -> URL {
        fs.appendingPathComponent("data/data/\(package)", isDirectory: true)
    }

    /// The host URL of a device path, e.g. `url("/sdcard/x.db")`.
    public func url(_ devicePath: String) -> URL {
        fs.appendingPathComponent(String(devicePath.drop(while: { $0 == "/" })))
    }

    /// Writes a file at a device path (creating folders), as if something on the device wrote it.
    public func write(_ data: Data, to devicePath: String) throws {
        let target = url(devicePath)
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: target)
    }

    // MARK: - device.json

    public func config() throws -> DeviceConfig {
        try JSONDecoder().decode(DeviceConfig.self, from: Data(contentsOf: root.appendingPathComponent("device.json")))
    }

    /// Writes `device.json` atomically (the simulator never sees half a file).
    public func writeConfig(_ config: DeviceConfig) throws {
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(config).write(to: root.appendingPathComponent("device.json"), options: .atomic)
    }

    /// `device`, `offline` or `unauthorized`.
    public func setState(_ state: String) throws {
        var config = try config()
        config.state = state
        try writeConfig(config)
    }

    /// Adds or replaces a package (and creates its data folder).
    public func setPackage(_ name: String, debuggable: Bool, system: Bool = false) throws {
        var config = try config()
        config.packages[name] = PackageConfig(debuggable: debuggable, system: system)
        try writeConfig(config)
        try FileManager.default.createDirectory(at: appData(name), withIntermediateDirectories: true)
    }

    public func setSu(_ su: Bool) throws {
        var config = try config()
        config.su = su
        try writeConfig(config)
    }

    // MARK: - Faults

    /// Writes `faults.json`, e.g. `["failNext": 2, "failMessage": "device offline"]`,
    /// `["latencyMs": 300]`, `["dropNextTransfer": true]`, `["hangSeconds": 30]`.
    public func setFaults(_ json: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try data.write(to: root.appendingPathComponent("faults.json"), options: .atomic)
    }

    public func clearFaults() throws {
        try? FileManager.default.removeItem(at: root.appendingPathComponent("faults.json"))
    }

    /// The current `faults.json` (the simulator rewrites it as it consumes `failNext` and `dropNextTransfer`).
    public func faults() throws -> [String: Any] {
        guard let data = try? Data(contentsOf: root.appendingPathComponent("faults.json")) else { return [:] }
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    // MARK: - Plugging

    private var parkedRoot: URL {
        devicesDirectory.appendingPathComponent(".unplugged", isDirectory: true).appendingPathComponent(serial)
    }

    /// Unplugs the device: its folder moves to `DIR/.unplugged/` (one rename, so the simulator sees
    /// it vanish at once); ``plugIn()`` brings it back with its files.
    public func unplug() throws {
        let fm = FileManager.default
        try fm.createDirectory(at: parkedRoot.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? fm.removeItem(at: parkedRoot)
        try fm.moveItem(at: root, to: parkedRoot)
    }

    /// Plugs an unplugged device back in.
    public func plugIn() throws {
        try FileManager.default.moveItem(at: parkedRoot, to: root)
    }
}

/// One line of `requests.jsonl`: what a client asked the simulator.
public struct DevsimRequest: Decodable, Sendable, Equatable {
    /// ISO 8601 with milliseconds.
    public let time: String
    public let serial: String?
    /// `shell`, `exec`, `sync`, or the host request (`host:version`, `host-serial:S:features`, ...).
    public let service: String
    /// The shell command, or the sync path.
    public let command: String?
    /// For `sync`: `STAT`, `LIST`, `RECV`, `SEND`, or `DONE` when a SEND's payload has arrived.
    public let op: String?
    /// For a `DONE`: the bytes of the file sent.
    public let bytes: Int?
}

extension [DevsimRequest] {
    /// Every byte these requests carried from the host to the device: sync SEND payloads and
    /// shell/exec command lines (a device script travels as its command line).
    public var bytesSentToDevice: Int {
        reduce(0) { total, request in
            switch (request.service, request.op) {
            case ("sync", "DONE"): return total + (request.bytes ?? 0)
            case ("shell", _), ("exec", _): return total + (request.command?.utf8.count ?? 0)
            default: return total
            }
        }
    }
}
