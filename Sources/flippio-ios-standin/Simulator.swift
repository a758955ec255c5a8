import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Buffered stdout/stderr, flushed on exit (the real tools use stdio the same way).
enum Output {
    nonisolated(unsafe) static var out = Data()
    nonisolated(unsafe) static var errBytes = Data()

    static func out(_ text: String) { out.append(Data(text.utf8)) }
    static func err(_ text: String) { errBytes.append(Data(text.utf8)) }

    static func flush() {
        if !out.isEmpty { FileHandle.standardOutput.write(out); out.removeAll() }
        if !errBytes.isEmpty { FileHandle.standardError.write(errBytes); errBytes.removeAll() }
    }

    static func finish(_ code: Int32) -> Never {
        flush()
        exit(code)
    }
}

struct AppConfig: Decodable {
    var name: String?
    var version: String?
    /// CFBundleVersion (defaults to `version`).
    var build: String?
    /// Whether house_arrest vends the container (a development-signed build).
    var container: Bool?
    /// Whether house_arrest vends Documents (UIFileSharingEnabled).
    var documents: Bool?
    /// An Apple system app (ApplicationType System).
    var system: Bool?
}

struct DeviceConfig: Decodable {
    var name: String?
    var productVersion: String?
    var productType: String?
    /// "ready", "locked" or "unpaired".
    var state: String?
    var network: Bool?
    var apps: [String: AppConfig]?
}

struct SimDevice {
    let udid: String
    let config: DeviceConfig
    let folder: URL
    var isNetwork: Bool { config.network ?? false }
    var state: String { config.state ?? "ready" }
    var name: String { config.name ?? "iPhone" }
}

/// Fault hooks, read from `faults.json` (global and per device) and consumed under a lock.
struct Faults: Codable {
    var latencyMs: Int?
    /// How many of the next calls fail (printing `failMessage`).
    var failNext: Int?
    var failMessage: String?
    /// Only calls to this tool fail (default: any).
    var failTool: String?
    /// Exit status of a failed call (default 1).
    var failExitCode: Int32?
    /// "stdout" (default) or "stderr".
    var failStream: String?
    /// Every call (to `hangTool`, or any) hangs this long, with a child process in its group.
    var hangSeconds: Double?
    var hangTool: String?
    /// The next `get`/`put` transfers only half the bytes and reports an error.
    var dropNextTransfer: Bool?
}

final class Simulator {
    let root: URL

    init(root: URL) { self.root = root }

    var usbmuxdDown: Bool { FileManager.default.fileExists(atPath: root.appendingPathComponent("usbmuxd-down").path) }

    func devices() -> [SimDevice] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.sorted().compactMap { device(udid: $0) }
    }

    func device(udid: String) -> SimDevice? {
        guard !udid.isEmpty, !udid.contains("/"), udid != ".", udid != ".." else { return nil }
        let folder = root.appendingPathComponent(udid, isDirectory: true)
        // An unplugged device keeps its folder (its files survive, as on a real phone).
        guard !FileManager.default.fileExists(atPath: folder.appendingPathComponent("unplugged").path) else { return nil }
        guard let data = try? Data(contentsOf: folder.appendingPathComponent("device.json")),
              let config = try? JSONDecoder().decode(DeviceConfig.self, from: data) else { return nil }
        return SimDevice(udid: udid, config: config, folder: folder)
    }

    func installerVersion() -> String {
        guard let data = try? Data(contentsOf: root.appendingPathComponent("tools.json")),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let version = object["ideviceinstaller"] as? String else { return "1.1.1" }
        return version
    }

    // MARK: - Request log

    func logRequest(tool: String, args: [String]) {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let entry: [String: Any] = ["time": formatter.string(from: Date()), "tool": tool, "args": args]
        guard var line = try? JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        line.append(0x0A)
        let path = root.appendingPathComponent("requests.jsonl").path
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        flock(fd, LOCK_EX)
        line.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
        flock(fd, LOCK_UN)
    }

    // MARK: - Faults

    /// Applies latency and hangs, and consumes a `failNext`: prints the failure and exits.
    /// Returns whether the next transfer should be dropped.
    @discardableResult
    func applyFaults(tool: String, device: SimDevice?, consumeTransferDrop: Bool = false) -> Bool {
        var drop = false
        var files = [root.appendingPathComponent("faults.json")]
        if let device { files.append(device.folder.appendingPathComponent("faults.json")) }
        for file in files {
            var sleepMs = 0
            var hangFor: Double?
            let result = withFaults(at: file) { faults -> Bool in
                sleepMs = faults.latencyMs ?? 0
                if let seconds = faults.hangSeconds, seconds > 0, faults.hangTool == nil || faults.hangTool == tool {
                    hangFor = seconds
                    return false
                }
                if let count = faults.failNext, count > 0, faults.failTool == nil || faults.failTool == tool {
                    faults.failNext = count - 1
                    return true
                }
                if consumeTransferDrop, faults.dropNextTransfer == true {
                    faults.dropNextTransfer = false
                    drop = true
                }
                return false
            }
            if sleepMs > 0 { usleep(useconds_t(min(sleepMs, 60_000)) * 1000) }
            if let hangFor { hang(seconds: hangFor, folder: device?.folder ?? root) }
            if let (fail, faults) = result, fail {
                let message = faults.failMessage ?? "ERROR: Could not connect to lockdownd: Mux error (-8)\n"
                if faults.failStream == "stderr" { Output.err(message) } else { Output.out(message) }
                Output.finish(faults.failExitCode ?? 1)
            }
        }
        return drop
    }

    /// Reads, changes and writes back a faults file under an exclusive lock.
    private func withFaults(at file: URL, _ body: (inout Faults) -> Bool) -> (Bool, Faults)? {
        guard FileManager.default.fileExists(atPath: file.path) else { return nil }
        let fd = open(file.path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        flock(fd, LOCK_EX)
        defer { flock(fd, LOCK_UN) }
        guard let data = try? Data(contentsOf: file), var faults = try? JSONDecoder().decode(Faults.self, from: data) else {
            return nil
        }
        let result = body(&faults)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        if let encoded = try? encoder.encode(faults) { try? encoded.write(to: file, options: .atomic) }
        return (result, faults)
    }

    /// Hangs like a tool stuck on a dead USB link: a child `sleep` in the same process group
    /// (so a test can check that the whole group was killed), pids recorded in `hang-pids`.
    private func hang(seconds: Double, folder: URL) -> Never {
        Output.flush()
        var child: pid_t = 0
        let secondsText = String(Int(seconds.rounded(.up)))
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup(secondsText), nil]
        defer { argv.forEach { free($0) } }
        _ = posix_spawn(&child, "/bin/sleep", nil, nil, argv, environ)
        let line = "\(getpid()) \(child)\n"
        let fd = open(folder.appendingPathComponent("hang-pids").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd >= 0 {
            _ = line.withCString { write(fd, $0, strlen($0)) }
            close(fd)
        }
        var remaining = seconds
        while remaining > 0 {
            usleep(100_000)
            remaining -= 0.1
        }
        Output.finish(0)
    }
}

/// Minimal getopt_long-style parsing shared by the tools.
struct ArgumentScanner {
    var args: [String]
    var index = 0

    init(_ args: [String]) { self.args = args }

    mutating func next() -> String? {
        guard index < args.count else { return nil }
        defer { index += 1 }
        return args[index]
    }

    mutating func value(for option: String) -> String? {
        if let eq = option.firstIndex(of: "="), option.hasPrefix("--") {
            return String(option[option.index(after: eq)...])
        }
        return next()
    }
}
