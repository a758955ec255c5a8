import Foundation

/// The devices folder: which devices exist, their transport ids, their faults, and the request log.
///
/// Nothing is cached except transport ids: every call reads the folder again.
final class DeviceRegistry: @unchecked Sendable {
    let directory: URL
    private let lock = NSLock()
    private var transportIDs: [String: UInt64] = [:]
    private var nextTransportID: UInt64 = 1

    init(directory: URL) {
        self.directory = directory
    }

    // MARK: - Devices

    /// Every `DIR/SERIAL/` that holds a readable `device.json`, sorted by serial.
    func scan() -> [SimulatedDevice] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().compactMap { device(serial: $0) }
    }

    func device(serial: String) -> SimulatedDevice? {
        // Hidden folders (`.unplugged/`) are not devices.
        guard !serial.isEmpty, !serial.contains("/"), !serial.hasPrefix(".") else { return nil }
        let root = directory.appendingPathComponent(serial, isDirectory: true)
        let file = root.appendingPathComponent("device.json")
        guard let data = try? Data(contentsOf: file),
              let config = try? JSONDecoder().decode(DeviceConfig.self, from: data)
        else { return nil }
        let fsRoot = root.appendingPathComponent("fs", isDirectory: true)
        // Every phone has /data/local/tmp, /sdcard and friends, also when `fs/` was made by hand
        // with only an app's folder in it (README's example): without them `adb push` fails.
        // Idempotent and cheap (a few stats), so it runs on every request.
        try? DeviceLayout.create(fs: fsRoot)
        return SimulatedDevice(serial: serial, root: root, fsRoot: fsRoot, config: config)
    }

    /// A stable id per serial, handed out on first sight (as the adb server numbers transports).
    func transportID(for serial: String) -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        if let id = transportIDs[serial] { return id }
        let id = nextTransportID
        nextTransportID += 1
        transportIDs[serial] = id
        return id
    }

    func serial(forTransportID id: UInt64) -> String? {
        lock.lock(); defer { lock.unlock() }
        return transportIDs.first { $0.value == id }?.key
    }

    // MARK: - Faults

    /// What `faults.json` asks of one request.
    struct FaultPlan {
        var latencyMs = 0
        /// Shell and exec requests: the pause between the command's end and its answer (the exit
        /// status, the end of the stream), as a slow link adds on the way back.
        var replyLatencyMs = 0
        var failMessage: String?
        var hangSeconds: Double = 0
        /// Only shell/exec requests whose command contains this text hang (all of them when nil).
        var hangMatching: String?
    }

    /// Reads `DIR/SERIAL/faults.json` for a new request; consumes one `failNext` if set.
    func faultPlan(serial: String) -> FaultPlan {
        lock.lock(); defer { lock.unlock() }
        var plan = FaultPlan()
        guard var faults = readFaults(serial: serial) else { return plan }
        plan.latencyMs = Self.int(faults["latencyMs"]) ?? 0
        plan.replyLatencyMs = Self.int(faults["replyLatencyMs"]) ?? 0
        plan.hangSeconds = Self.double(faults["hangSeconds"]) ?? 0
        plan.hangMatching = faults["hangMatching"] as? String
        if let n = Self.int(faults["failNext"]), n > 0 {
            plan.failMessage = faults["failMessage"] as? String ?? "device offline"
            faults["failNext"] = n - 1
            writeFaults(faults, serial: serial)
        }
        return plan
    }

    /// Whether `faults.json` still asks for a hang (read without consuming anything): a hang
    /// ends as soon as the test clears it.
    func isHanging(serial: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return (Self.double(readFaults(serial: serial)?["hangSeconds"]) ?? 0) > 0
    }

    /// `linkBytesPerSecond`: the speed of the modelled cable for sync transfers (nil: as fast as
    /// the local socket). USB 2 moves an `adb push` at roughly 20–40 MB/s.
    func linkBytesPerSecond(serial: String) -> Int? {
        lock.lock(); defer { lock.unlock() }
        return Self.int(readFaults(serial: serial)?["linkBytesPerSecond"]).flatMap { $0 > 0 ? $0 : nil }
    }

    /// True (once) when `dropNextTransfer` is set; clears the flag.
    func takeDropTransfer(serial: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard var faults = readFaults(serial: serial), faults["dropNextTransfer"] as? Bool == true else { return false }
        faults["dropNextTransfer"] = false
        writeFaults(faults, serial: serial)
        return true
    }

    private func faultsURL(_ serial: String) -> URL {
        directory.appendingPathComponent(serial).appendingPathComponent("faults.json")
    }

    private func readFaults(serial: String) -> [String: Any]? {
        guard let data = try? Data(contentsOf: faultsURL(serial)), !data.isEmpty else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    private func writeFaults(_ faults: [String: Any], serial: String) {
        guard let data = try? JSONSerialization.data(withJSONObject: faults, options: [.sortedKeys]) else { return }
        try? data.write(to: faultsURL(serial), options: .atomic)
    }

    private static func int(_ value: Any?) -> Int? {
        if let n = value as? Int { return n }
        if let d = value as? Double { return Int(d) }
        if let s = value as? String { return Int(s) }
        return nil
    }

    private static func double(_ value: Any?) -> Double? {
        if let d = value as? Double { return d }
        if let n = value as? Int { return Double(n) }
        if let s = value as? String { return Double(s) }
        return nil
    }

    // MARK: - Request log

    /// Appends one line to `DIR/requests.jsonl`.
    func log(serial: String?, service: String, command: String? = nil, op: String? = nil, bytes: Int? = nil) {
        var entry: [String: Any] = ["time": Self.timestamp(), "service": service]
        if let bytes { entry["bytes"] = bytes }
        entry["serial"] = serial ?? NSNull()
        if let command { entry["command"] = command }
        if let op { entry["op"] = op }
        guard var line = try? JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        line.append(0x0A)
        lock.lock(); defer { lock.unlock() }
        let path = directory.appendingPathComponent("requests.jsonl").path
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        line.withUnsafeBytes { _ = write(fd, $0.baseAddress!, $0.count) }
        close(fd)
    }

    static func timestamp(_ date: Date = Date()) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}
