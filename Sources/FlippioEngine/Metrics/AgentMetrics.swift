import Foundation

/// The metrics the agent keeps, by name, and the one-line hooks the engine calls on each event.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `flippio_push_duration_seconds` | histogram | `outcome` (pushed, unchanged, conflict, invalid, failed) |
/// | `flippio_pushes_total` | counter | `outcome` |
/// | `flippio_command_duration_seconds` | histogram | `tool` (adb, idevice_id, ...) |
/// | `flippio_command_timeouts_total` | counter | `tool` |
/// | `flippio_retries_total` | counter | `kind` (the error code retried) |
/// | `flippio_conflicts_total` | counter | |
/// | `flippio_errors_total` | counter | `kind` (the ``FlippioError/Code`` name) |
/// | `flippio_tracked_databases` | gauge | |
/// | `flippio_resident_memory_bytes` | gauge | sampled when the file is written |
/// | `flippio_cpu_seconds_total` | counter-like gauge | sampled when the file is written |
///
/// The process-wide instance is ``shared``; tests make their own with ``init(registry:)``.
///
/// For example:
///
/// ```swift
/// let started = ContinuousClock.now
/// let outcome = await pipeline.push(database)
/// AgentMetrics.shared.pushEnded(outcome, after: .now - started)
/// ```
public struct AgentMetrics: Sendable {
    /// The agent's metrics (one agent per process).
    public static let shared = AgentMetrics(registry: MetricsRegistry())

    public let registry: MetricsRegistry
    let pushDuration: Histogram
    let pushes: Counter
    let commandDuration: Histogram
    let commandTimeouts: Counter
    let retries: Counter
    let conflicts: Counter
    let merges: Counter
    let rowsBroughtIn: Counter
    let rowConflicts: Counter
    let errors: Counter
    let tracked: Gauge
    let residentMemory: Gauge
    let cpuSeconds: Gauge

    /// Pushes take from milliseconds (unchanged: one snapshot) to minutes (large files over USB 2).
    public static let pushBuckets: [Double] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
    /// One `adb` / `idevice*` call: a few ms (local adb server) to the command timeout.
    public static let commandBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    public init(registry: MetricsRegistry) {
        self.registry = registry
        pushDuration = registry.histogram("flippio_push_duration_seconds",
                                          help: "Time from the start of a push (lock, snapshot) to its recorded outcome.",
                                          buckets: Self.pushBuckets)
        pushes = registry.counter("flippio_pushes_total", help: "Push attempts by outcome.")
        commandDuration = registry.histogram("flippio_command_duration_seconds",
                                             help: "Duration of each external tool call (adb, idevice_id, ideviceinfo, ideviceinstaller, afcclient).",
                                             buckets: Self.commandBuckets)
        commandTimeouts = registry.counter("flippio_command_timeouts_total", help: "Tool calls killed at their deadline.")
        retries = registry.counter("flippio_retries_total", help: "Transient failures retried with backoff, by error kind.")
        conflicts = registry.counter("flippio_conflicts_total", help: "Pushes stopped because the app changed its copy on the device.")
        merges = registry.counter("flippio_merges_total", help: "Pushes that merged the app's and the desktop's changes row by row.")
        rowsBroughtIn = registry.counter("flippio_rows_brought_in_total", help: "Rows the app wrote that following brought into local copies.")
        rowConflicts = registry.counter("flippio_row_conflicts_total", help: "Rows changed on both sides that stopped a merge.")
        errors = registry.counter("flippio_errors_total", help: "Failed or refused pushes, by error kind.")
        tracked = registry.gauge("flippio_tracked_databases", help: "Databases the agent tracks.")
        residentMemory = registry.gauge("flippio_resident_memory_bytes", help: "The agent's resident memory (VmRSS), sampled when this file is written.")
        cpuSeconds = registry.gauge("flippio_cpu_seconds_total", help: "The agent's user+system CPU time, sampled when this file is written.")
    }

    // MARK: - Hooks (one call per event)

    /// A push attempt ended with `outcome` after `duration`.
    public func pushEnded(_ outcome: PushPipeline.Outcome, after duration: Duration) {
        let label: String
        switch outcome {
        case .pushed: label = "pushed"
        case .unchanged: label = "unchanged"
        case .forgotten: label = "forgotten"
        case .conflict:
            label = "conflict"
            conflicts.increment()
        case .invalid(let error):
            label = "invalid"
            errors.increment(labels: ["kind": error.code.name])
        case .failed(let error):
            label = "failed"
            errors.increment(labels: ["kind": error.code.name])
        }
        pushes.increment(labels: ["outcome": label])
        pushDuration.observe(duration, labels: ["outcome": label])
    }

    /// A push merged both sides' changes.
    public func merged() { merges.increment() }

    /// Following wrote `count` rows the app changed into a local copy.
    public func broughtIn(_ count: Int) { rowsBroughtIn.increment(by: Double(count)) }

    /// A merge stopped on `count` rows changed on both sides.
    public func rowConflicts(_ count: Int) { rowConflicts.increment(by: Double(count)) }

    /// A transient failure is retried (pass as `RetryPolicy.run(onRetry:)`).
    public func retried(attempt: Int, error: FlippioError, delay: Duration) {
        retries.increment(labels: ["kind": error.code.name])
    }

    /// An external tool call ended.
    public func commandEnded(executable: String, duration: Duration, timedOut: Bool) {
        let tool = Self.toolName(executable)
        commandDuration.observe(duration, labels: ["tool": tool])
        if timedOut { commandTimeouts.increment(labels: ["tool": tool]) }
    }

    /// The number of tracked databases changed (or may have).
    public func trackedDatabases(_ count: Int) {
        tracked.set(Double(count))
    }

    /// Samples the process's resident memory and CPU time (without counting as a change).
    public func sampleProcess() {
        if let rss = ProcessStats.residentMemoryBytes() { residentMemory.set(Double(rss), notify: false) }
        if let cpu = ProcessStats.cpuSeconds() { cpuSeconds.set(cpu, notify: false) }
    }

    /// `/usr/bin/adb` → `adb`. Only known tool names become label values (bounded cardinality).
    static func toolName(_ executable: String) -> String {
        let base = (executable as NSString).lastPathComponent
        return Tool(rawValue: base) != nil ? base : "other"
    }
}

/// Resident memory and CPU time of this process, from `/proc/self`.
enum ProcessStats {
    /// `VmRSS` from `/proc/self/status`, in bytes.
    static func residentMemoryBytes(status path: String = "/proc/self/status") -> Int64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kb = Int64(fields[1]) else { return nil }
            return kb * 1024
        }
        return nil
    }

    /// utime + stime from `/proc/self/stat`, in seconds.
    static func cpuSeconds(stat path: String = "/proc/self/stat") -> Double? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ticks > 0 ? (utime + stime) / ticks : nil
    }
}
