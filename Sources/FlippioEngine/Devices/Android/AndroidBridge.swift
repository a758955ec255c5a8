import Foundation
import Logging

/// The Android side of ``DeviceBridge``: every call is one run of the real `adb` client.
///
/// The bridge runs the commands of the shared device contract (`adb devices -l`, `run-as PKG
/// find/cat/sha256sum`, `adb push` then an atomic `mv` on the device), each through
/// ``ProcessRunning`` with a deadline from ``Timeouts``, parses the output as untrusted text and
/// turns failures into ``FlippioError`` codes (see `AndroidErrors`). It does not retry: callers
/// wrap calls in their retry policy.
///
/// The environment is passed through to `adb`, so `ANDROID_ADB_SERVER_PORT`, `ADB_SERVER_SOCKET`
/// and `ANDROID_SERIAL` work as usual; `environment` adds to it.
///
/// For example:
///
/// ```swift
/// let bridge = AndroidBridge(adbPath: "/usr/bin/adb", runner: ProcessRunner())
/// let device = try AndroidBridge.resolve("emu", among: try await bridge.devices())
/// let dbs = try await bridge.databases(deviceID: device.id, appID: "com.example.notes")
/// let pulled = try await bridge.pull(dbs[0], into: staging, progress: nil)
/// ```
///
/// ## Topics
/// - ``Timeouts``
/// - ``resolve(_:among:)``
/// - ``DeviceTracker``
public struct AndroidBridge: DeviceBridge {
    /// Deadlines for adb calls.
    public struct Timeouts: Sendable, Equatable {
        /// Every call that moves no file: listings, hashes, `mv`, `am force-stop`. The default is 20 s.
        public var control: Duration
        /// The `getprop` calls made while listing devices (best effort). The default is 5 s.
        public var deviceInfo: Duration
        /// The fixed part of a transfer's deadline. The default is 30 s.
        public var transferBase: Duration
        /// The slowest transfer rate still considered alive, in bytes per second. The default is 5 MB/s.
        public var transferBytesPerSecond: Int64
        /// The deadline of a transfer whose size is not known. The default is 10 minutes.
        public var unknownSizeTransfer: Duration

        public init(control: Duration = .seconds(20), deviceInfo: Duration = .seconds(5), transferBase: Duration = .seconds(30),
                    transferBytesPerSecond: Int64 = 5_000_000, unknownSizeTransfer: Duration = .seconds(600)) {
            self.control = control
            self.deviceInfo = deviceInfo
            self.transferBase = transferBase
            self.transferBytesPerSecond = max(1, transferBytesPerSecond)
            self.unknownSizeTransfer = unknownSizeTransfer
        }

        /// The deadline for moving `bytes`: ``transferBase`` plus `bytes` at ``transferBytesPerSecond``.
        public func transfer(bytes: Int64?) -> Duration {
            guard let bytes else { return unknownSizeTransfer }
            return transferBase + .milliseconds(max(0, bytes) / max(1, transferBytesPerSecond / 1000))
        }
    }

    public var platform: Platform { .android }

    /// Absolute path of the `adb` client.
    public let adbPath: String
    public let runner: any ProcessRunning
    /// Variables added to the inherited environment of every `adb` call.
    public let environment: [String: String]
    public let timeouts: Timeouts
    let logger: Logger

    /// Most bytes of stdout read from a listing (`find`, `pm list packages`).
    static let listingLimit = 8 << 20
    /// Most databases listed per app and storage area.
    static let databaseLimit = 10_000

    public init(adbPath: String, runner: any ProcessRunning, environment: [String: String] = [:],
                timeouts: Timeouts = .init(), logger: Logger = Logger(label: "flippio.android")) {
        self.adbPath = adbPath
        self.runner = runner
        self.environment = environment
        self.timeouts = timeouts
        self.logger = logger
    }

    // MARK: - Running adb

    /// Runs `adb [-s serial] arguments...`; throws ``FlippioError/Code/timedOut`` when the deadline
    /// passed, and otherwise returns the result whatever its status.
    func adb(_ arguments: [String], serial: String?, subject: AndroidErrors.Subject, timeout: Duration? = nil,
             output: ProcessCommand.Output = .capture(limit: 1 << 20)) async throws -> ProcessResult {
        let command = ProcessCommand(
            executable: adbPath,
            arguments: (serial.map { ["-s", $0] } ?? []) + arguments,
            environment: environment,
            timeout: timeout ?? timeouts.control,
            output: output
        )
        let started = ContinuousClock.now
        let result = try await runner.run(command)
        // Where a push's time goes, step by step (with --log-level trace).
        logger.trace("adb \(arguments.joined(separator: " ").prefix(80)) took \((ContinuousClock.now - started).milliseconds) ms")
        if result.timedOut { throw AndroidErrors.timedOut(command, subject) }
        return result
    }

    /// Runs `adb -s serial shell COMMAND` (`command` is one string that the device shell parses).
    func shell(_ serial: String, _ command: String, subject: AndroidErrors.Subject, timeout: Duration? = nil,
               limit: Int = 1 << 20) async throws -> ProcessResult {
        try await adb(["shell", command], serial: serial, subject: subject, timeout: timeout, output: .capture(limit: limit))
    }

    /// Like ``shell(_:_:subject:timeout:limit:)`` but throws the mapped error unless it exited 0.
    @discardableResult
    func shellChecked(_ serial: String, _ command: String, subject: AndroidErrors.Subject, timeout: Duration? = nil,
                      limit: Int = 1 << 20) async throws -> ProcessResult {
        let result = try await shell(serial, command, subject: subject, timeout: timeout, limit: limit)
        guard result.succeeded else { throw failure(result, ["shell", command], serial: serial, subject) }
        return result
    }

    /// The error for a failed `adb [-s serial] arguments...`.
    func failure(_ result: ProcessResult, _ arguments: [String], serial: String?, _ subject: AndroidErrors.Subject) -> FlippioError {
        let command = ProcessCommand(executable: adbPath, arguments: (serial.map { ["-s", $0] } ?? []) + arguments,
                                     timeout: timeouts.control)
        return AndroidErrors.failure(result, command, subject)
    }

    static func checkPackage(_ package: String, serial: String) throws {
        guard DeviceShellQuoting.isValidPackageName(package) else {
            throw FlippioError(.invalidArgument, "'\(AndroidErrors.excerpt(package))' is not an Android package name.",
                               remedy: "Use the package name as `flippio apps \(serial)` prints it (for example com.example.notes).",
                               context: ["serial": serial, "package": package])
        }
    }

    static func checkSerial(_ serial: String) throws {
        guard !serial.isEmpty, !serial.hasPrefix("-"), !DeviceShellQuoting.containsControlCharacter(serial) else {
            throw FlippioError(.invalidArgument, "'\(AndroidErrors.excerpt(serial))' is not a device serial.",
                               remedy: "Use a serial as `flippio devices` prints it.", context: ["serial": serial])
        }
    }

    // MARK: - Devices

    public func devices() async throws -> [Device] {
        let subject = AndroidErrors.Subject()
        let result = try await adb(["devices", "-l"], serial: nil, subject: subject)
        guard result.succeeded else { throw failure(result, ["devices", "-l"], serial: nil, subject) }
        var devices = AndroidOutputParser.devices(result.stdoutText)
        // Best effort: the Android release (and the model when adb did not print one) of each ready
        // device, each bounded by the short device-info deadline; a device that does not answer
        // is still listed.
        await withTaskGroup(of: (Int, String?, String?).self) { group in
            for (index, device) in devices.enumerated() where device.state == .ready {
                group.addTask {
                    let release = await property("ro.build.version.release", serial: device.id)
                    let model = device.model == nil ? await property("ro.product.model", serial: device.id) : nil
                    return (index, release, model)
                }
            }
            for await (index, release, model) in group {
                devices[index].osVersion = release
                if let model { devices[index].model = model }
            }
        }
        return devices
    }

    /// `getprop NAME` on the device, or nil when it fails or prints nothing usable.
    func property(_ name: String, serial: String) async -> String? {
        guard let result = try? await shell(serial, "getprop \(name)", subject: .init(serial: serial),
                                            timeout: timeouts.deviceInfo, limit: 4096),
              result.succeeded else { return nil }
        return AndroidOutputParser.property(result.stdoutText)
    }

    /// The device named by `query`: the one whose serial is `query`, else the only one whose
    /// serial starts with it.
    ///
    /// - throws: ``FlippioError/Code/deviceNotFound`` when none matches,
    ///   ``FlippioError/Code/deviceAmbiguous`` (listing the candidates) when several do.
    public static func resolve(_ query: String, among devices: [Device]) throws -> Device {
        if let exact = devices.first(where: { $0.id == query }) { return exact }
        let matches = query.isEmpty ? [] : devices.filter { $0.id.hasPrefix(query) }
        if matches.count == 1 { return matches[0] }
        if matches.isEmpty {
            let known = devices.map(\.id).joined(separator: ", ")
            throw FlippioError(.deviceNotFound, "No device matches '\(query)'" + (known.isEmpty ? "; none is connected." : "; connected: \(known)."),
                               remedy: "Connect the device and check that `adb devices` lists it, or use a serial from `flippio devices`.",
                               context: ["query": query])
        }
        let candidates = matches.map(\.id).joined(separator: ", ")
        throw FlippioError(.deviceAmbiguous, "'\(query)' matches several devices: \(candidates).",
                           remedy: "Give more of the serial, for example \(matches[0].id).",
                           context: ["query": query, "candidates": candidates])
    }

    // MARK: - Apps

    /// The command that lists every package with its flags in one device call: the "Packages:"
    /// section of `dumpsys package`, cut on the device to the two lines per package that say
    /// which app it is and whether it is debuggable (`flags=[ DEBUGGABLE ... ]`) or a system app
    /// (`SYSTEM`). `pm list packages` cannot tell debuggable apps apart, and `run-as PKG true`
    /// per app costs one process (and, from the host, one adb round trip) per app.
    static let appsCommand = #"dumpsys package packages | grep -E '^  Package \[|^    flags=\['"#

    public func apps(deviceID: String, includeSystem: Bool) async throws -> [AppInfo] {
        try Self.checkSerial(deviceID)
        let subject = AndroidErrors.Subject(serial: deviceID)
        let dump = try await shell(deviceID, Self.appsCommand, subject: subject, limit: Self.listingLimit)
        if !dump.succeeded, let error = AndroidErrors.adbLevel(dump.stderrText, subject) { throw error }
        let flagged = AndroidOutputParser.packageFlags(dump.stdoutText)
        if !flagged.isEmpty {
            return flagged.filter { includeSystem || !$0.system }.map { AppInfo(id: $0.name, debuggable: $0.debuggable) }
        }
        // A device whose dumpsys printed nothing usable: the plain list, debuggability unknown.
        logger.info("dumpsys package gave no package flags on \(deviceID); listing packages without them")
        let command = includeSystem ? "pm list packages" : "pm list packages -3"
        let result = try await shellChecked(deviceID, command, subject: subject, limit: Self.listingLimit)
        if result.stdoutTruncated {
            logger.warning("pm list packages printed more than \(Self.listingLimit) bytes on \(deviceID); the rest was ignored")
        }
        return AndroidOutputParser.packages(result.stdoutText).map { AppInfo(id: $0, debuggable: nil) }
    }

    // MARK: - Stopping the app

    public func stopApp(deviceID: String, appID: String) async throws {
        try Self.checkSerial(deviceID)
        try Self.checkPackage(appID, serial: deviceID)
        try await shellChecked(deviceID, "am force-stop \(appID)", subject: .init(serial: deviceID, package: appID))
    }
}
