import Foundation
import Prometheus

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
/// | `flippio_merges_total` | counter | |
/// | `flippio_row_conflicts_total` | counter | |
/// | `flippio_errors_total` | counter | `kind` (the ``FlippioError/Code`` name) |
/// | `flippio_tracked_databases` | gauge | |
/// | `flippio_resident_memory_bytes` | gauge | sampled when the file is written |
/// | `flippio_cpu_seconds_total` | counter-like gauge | sampled when the file is written |
///
/// The values live in a swift-prometheus `PrometheusCollectorRegistry` (``registry``), which
/// renders them in the Prometheus text format; ``changes`` counts the hook calls, because the
/// registry itself cannot say whether anything changed since the last render (``MetricsFile``
/// needs that to stay asleep while the agent is idle).
///
/// What the exposition looks like, as swift-prometheus 2.4.1 renders it:
/// - `# HELP` and `# TYPE` lines for every family, but a labeled family appears only once it has
///   a series (at its first event); unlabeled ones show `0` from the start.
/// - Families and their series come in the registry's dictionary order, which differs from run to
///   run. Prometheus does not mind; sort the lines to compare two files.
/// - Gauges print as floating point (`flippio_tracked_databases 3.0`), bucket bounds as Swift
///   prints a `Double` (`le="1.0"`); integer counters print as integers.
/// - Help text keeps `\` escaped but drops newlines and other control characters instead of
///   escaping them; label values escape `\`, `"` and newlines.
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
///
/// - Important: Give each `AgentMetrics` its own registry, or one whose metrics of these names
///   have the same help texts: swift-prometheus stops the process (`fatalError`) when a name is
///   registered again with a different help text or type.
public struct AgentMetrics: Sendable {
    /// The agent's metrics (one agent per process).
    public static let shared = AgentMetrics(registry: PrometheusCollectorRegistry())

    public let registry: PrometheusCollectorRegistry
    /// Counts the hook calls that changed a value; ``MetricsFile`` waits on it.
    public let changes: MetricsChanges
    let conflicts: Counter
    let merges: Counter
    let rowsBroughtIn: Counter
    let rowConflicts: Counter
    let tracked: Gauge
    let residentMemory: Gauge
    let cpuSeconds: Gauge

    /// Pushes take from milliseconds (unchanged: one snapshot) to minutes (large files over USB 2).
    public static let pushBuckets: [Double] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
    /// One `adb` / `idevice*` call: a few ms (local adb server) to the command timeout.
    public static let commandBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    // The families, by name and help text. Labeled series are made on first use (below), since
    // swift-prometheus keys a series by its label values; making one again returns the same one.
    static let pushDuration = Family("flippio_push_duration_seconds", "Time from the start of a push (lock, snapshot) to its recorded outcome.")
    static let pushes = Family("flippio_pushes_total", "Push attempts by outcome.")
    static let commandDuration = Family("flippio_command_duration_seconds", "Duration of each external tool call (adb, idevice_id, ideviceinfo, ideviceinstaller, afcclient).")
    static let commandTimeouts = Family("flippio_command_timeouts_total", "Tool calls killed at their deadline.")
    static let retries = Family("flippio_retries_total", "Transient failures retried with backoff, by error kind.")
    static let errors = Family("flippio_errors_total", "Failed or refused pushes, by error kind.")

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        changes = MetricsChanges()
        conflicts = registry.makeCounter(descriptor: Family("flippio_conflicts_total", "Pushes stopped because the app changed its copy on the device.").descriptor)
        merges = registry.makeCounter(descriptor: Family("flippio_merges_total", "Pushes that merged the app's and the desktop's changes row by row.").descriptor)
        rowConflicts = registry.makeCounter(descriptor: Family("flippio_row_conflicts_total", "Rows changed on both sides that stopped a merge.").descriptor)
        rowsBroughtIn = registry.makeCounter(descriptor: Family("flippio_rows_brought_in_total", "Rows the app wrote that following brought into local copies.").descriptor)
        tracked = registry.makeGauge(descriptor: Family("flippio_tracked_databases", "Databases the agent tracks.").descriptor)
        residentMemory = registry.makeGauge(descriptor: Family("flippio_resident_memory_bytes", "The agent's resident memory (VmRSS), sampled when this file is written.").descriptor)
        cpuSeconds = registry.makeGauge(descriptor: Family("flippio_cpu_seconds_total", "The agent's user+system CPU time, sampled when this file is written.").descriptor)
    }

    /// A family's name and help text. (swift-prometheus's `MetricNameDescriptor` is not
    /// `Sendable`, so it cannot be kept in a `static let`; it is made from this when needed.)
    struct Family: Sendable {
        let name: String
        let help: String

        init(_ name: String, _ help: String) {
            self.name = name
            self.help = help
        }

        /// The full name goes in `metricName` with no `unitName`: the descriptor joins its parts
        /// with `_`, and our names already end in their unit.
        var descriptor: MetricNameDescriptor { MetricNameDescriptor(metricName: name, unitName: "", helpText: help) }
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
            counter(Self.errors, "kind", error.code.name).increment()
        case .failed(let error):
            label = "failed"
            counter(Self.errors, "kind", error.code.name).increment()
        }
        counter(Self.pushes, "outcome", label).increment()
        histogram(Self.pushDuration, "outcome", label, buckets: Self.pushBuckets).record(Self.seconds(duration))
        changes.changed()
    }

    /// A push merged both sides' changes.
    public func merged() {
        merges.increment()
        changes.changed()
    }

    /// Following wrote `count` rows the app changed into a local copy.
    public func broughtIn(_ count: Int) { rowsBroughtIn.increment(by: Double(count)) }

    /// A merge stopped on `count` rows changed on both sides.
    public func rowConflicts(_ count: Int) {
        guard count > 0 else { return }
        rowConflicts.increment(by: Int64(count))
        changes.changed()
    }

    /// A transient failure is retried (pass as `RetryPolicy.run(onRetry:)`).
    public func retried(attempt: Int, error: FlippioError, delay: Duration) {
        counter(Self.retries, "kind", error.code.name).increment()
        changes.changed()
    }

    /// An external tool call ended.
    public func commandEnded(executable: String, duration: Duration, timedOut: Bool) {
        let tool = Self.toolName(executable)
        histogram(Self.commandDuration, "tool", tool, buckets: Self.commandBuckets).record(Self.seconds(duration))
        if timedOut { counter(Self.commandTimeouts, "tool", tool).increment() }
        changes.changed()
    }

    /// The number of tracked databases changed (or may have).
    public func trackedDatabases(_ count: Int) {
        tracked.set(to: Double(count))
        changes.gaugeSet("flippio_tracked_databases", to: Double(count))
    }

    /// Samples the process's resident memory and CPU time (without counting as a change: they are
    /// read when the file is written, and counting them would ask for another write, forever).
    public func sampleProcess() {
        if let rss = ProcessStats.residentMemoryBytes() { residentMemory.set(to: Double(rss)) }
        if let cpu = ProcessStats.cpuSeconds() { cpuSeconds.set(to: cpu) }
    }

    // MARK: - Series

    private func counter(_ family: Family, _ label: String, _ value: String) -> Counter {
        registry.makeCounter(descriptor: family.descriptor, labels: [(label, value)])
    }

    /// A `ValueHistogram` in seconds rather than a `DurationHistogram`: its bounds are our `Double`s
    /// as written (`Duration.seconds(0.01)` need not print as `0.01`).
    private func histogram(_ family: Family, _ label: String, _ value: String, buckets: [Double]) -> ValueHistogram {
        registry.makeValueHistogram(descriptor: family.descriptor, labels: [(label, value)], buckets: buckets)
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
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
