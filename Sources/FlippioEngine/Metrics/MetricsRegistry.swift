import Foundation
import Synchronization

/// A tiny in-process registry of counters, gauges and histograms, rendered in the Prometheus
/// text exposition format (version 0.0.4).
///
/// Every update is a short critical section under one mutex: no allocation on the hot path beyond
/// the label key, no background task, no timer. A registry counts its changes (``generation``) and
/// lets a writer *await* the next change (``waitForChange(after:)``), so that an idle agent wakes
/// up for nothing: the metrics file is rewritten only after something changed.
///
/// For example:
///
/// ```swift
/// let registry = MetricsRegistry()
/// let pushes = registry.counter("flippio_pushes_total", help: "Push attempts by outcome.")
/// pushes.increment(labels: ["outcome": "pushed"])
/// print(registry.exposition())
/// // # HELP flippio_pushes_total Push attempts by outcome.
/// // # TYPE flippio_pushes_total counter
/// // flippio_pushes_total{outcome="pushed"} 1
/// ```
///
/// Metric and label names must match `[a-zA-Z_:][a-zA-Z0-9_:]*` (checked with a precondition:
/// they are constants of the program, not input). Label values are escaped.
public final class MetricsRegistry: Sendable {
    /// The kind of a metric family.
    public enum Kind: Sendable, Equatable {
        case counter
        case gauge
        /// Upper bounds of the buckets, ascending; `+Inf` is implicit.
        case histogram(buckets: [Double])

        var typeName: String {
            switch self {
            case .counter: "counter"
            case .gauge: "gauge"
            case .histogram: "histogram"
            }
        }
    }

    struct HistogramValue: Sendable {
        /// Non-cumulative counts per bucket, plus one for `+Inf`.
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }

    struct Family: Sendable {
        let name: String
        let help: String
        let kind: Kind
        /// Rendered label set (`{a="x",b="y"}` or "") → value.
        var values: [String: Double] = [:]
        var histograms: [String: HistogramValue] = [:]
    }

    struct State: Sendable {
        var families: [String: Family] = [:]
        /// Family names in registration order (the exposition keeps it).
        var order: [String] = []
        var generation: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<UInt64, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    // MARK: - Registration

    /// Registers (or returns the existing) counter family `name`.
    public func counter(_ name: String, help: String) -> Counter {
        register(name, help: help, kind: .counter)
        return Counter(registry: self, name: name)
    }

    /// Registers (or returns the existing) gauge family `name`.
    public func gauge(_ name: String, help: String) -> Gauge {
        register(name, help: help, kind: .gauge)
        return Gauge(registry: self, name: name)
    }

    /// Registers (or returns the existing) histogram family `name`.
    ///
    /// - parameter buckets: upper bounds, in the metric's unit (seconds for durations); sorted
    ///   and deduplicated here, `+Inf` added.
    public func histogram(_ name: String, help: String, buckets: [Double]) -> Histogram {
        let bounds = Array(Set(buckets.filter { $0.isFinite })).sorted()
        register(name, help: help, kind: .histogram(buckets: bounds))
        return Histogram(registry: self, name: name)
    }

    private func register(_ name: String, help: String, kind: Kind) {
        precondition(Self.isValidName(name), "invalid metric name \(name)")
        state.withLock { state in
            guard state.families[name] == nil else { return }
            state.families[name] = Family(name: name, help: help, kind: kind)
            state.order.append(name)
        }
    }

    // MARK: - Updates

    /// How many changes the registry has seen; grows with every update that changed a value.
    public var generation: UInt64 { state.withLock { $0.generation } }

    func add(_ name: String, _ delta: Double, labels: [String: String]) {
        guard delta != 0 else { return }
        let key = Self.labelKey(labels)
        update { state in
            state.families[name]?.values[key, default: 0] += delta
            return true
        }
    }

    func set(_ name: String, _ value: Double, labels: [String: String], notify: Bool) {
        let key = Self.labelKey(labels)
        let changed = state.withLock { state -> Bool in
            guard state.families[name] != nil, state.families[name]!.values[key] != value else { return false }
            state.families[name]!.values[key] = value
            return true
        }
        if changed && notify { bump() }
    }

    func observe(_ name: String, _ value: Double, labels: [String: String]) {
        let key = Self.labelKey(labels)
        update { state in
            guard let family = state.families[name], case .histogram(let bounds) = family.kind else { return false }
            var histogram = family.histograms[key] ?? HistogramValue(counts: Array(repeating: 0, count: bounds.count + 1))
            // First bucket whose bound is ≥ value (`le` is inclusive); past the last: +Inf.
            var index = bounds.count
            for (i, bound) in bounds.enumerated() where value <= bound {
                index = i
                break
            }
            histogram.counts[index] += 1
            histogram.sum += value
            histogram.count += 1
            state.families[name]!.histograms[key] = histogram
            return true
        }
    }

    private func update(_ body: (inout State) -> Bool) {
        let changed = state.withLock { body(&$0) }
        if changed { bump() }
    }

    private func bump() {
        let (generation, waiters) = state.withLock { state -> (UInt64, [CheckedContinuation<UInt64, Never>]) in
            state.generation &+= 1
            let waiters = Array(state.waiters.values)
            state.waiters = [:]
            return (state.generation, waiters)
        }
        for waiter in waiters { waiter.resume(returning: generation) }
    }

    /// Returns as soon as ``generation`` is past `seen` (at once if it already is), or when the
    /// calling task is cancelled. Waiting costs no wake-up: it is a suspended continuation.
    ///
    /// - returns: the generation at the time of return.
    public func waitForChange(after seen: UInt64) async -> UInt64 {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiter &+= 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<UInt64, Never>) in
                let immediate = state.withLock { state -> UInt64? in
                    if state.generation != seen || Task.isCancelled { return state.generation }
                    state.waiters[id] = continuation
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> (CheckedContinuation<UInt64, Never>, UInt64)? in
                state.waiters.removeValue(forKey: id).map { ($0, state.generation) }
            }
            if let (continuation, generation) = waiter { continuation.resume(returning: generation) }
        }
    }

    // MARK: - Reading

    /// The current value of a counter or gauge (0 if never set), for tests and `status`.
    public func value(_ name: String, labels: [String: String] = [:]) -> Double {
        state.withLock { $0.families[name]?.values[Self.labelKey(labels)] ?? 0 }
    }

    /// The number of observations of a histogram with these labels.
    public func observationCount(_ name: String, labels: [String: String] = [:]) -> UInt64 {
        state.withLock { $0.families[name]?.histograms[Self.labelKey(labels)]?.count ?? 0 }
    }

    /// Every family in the Prometheus text exposition format, in registration order, series sorted
    /// by their labels. A family with no series yet still gets its `# HELP` and `# TYPE` lines.
    public func exposition() -> String {
        let families = state.withLock { state in state.order.compactMap { state.families[$0] } }
        var out = ""
        out.reserveCapacity(families.count * 160)
        for family in families {
            out += "# HELP \(family.name) \(Self.escapeHelp(family.help))\n"
            out += "# TYPE \(family.name) \(family.kind.typeName)\n"
            switch family.kind {
            case .counter, .gauge:
                for key in family.values.keys.sorted() {
                    out += "\(family.name)\(key) \(Self.format(family.values[key]!))\n"
                }
            case .histogram(let bounds):
                for key in family.histograms.keys.sorted() {
                    let histogram = family.histograms[key]!
                    var cumulative: UInt64 = 0
                    for (i, bound) in bounds.enumerated() {
                        cumulative += histogram.counts[i]
                        out += "\(family.name)_bucket\(Self.adding("le", Self.format(bound), to: key)) \(cumulative)\n"
                    }
                    out += "\(family.name)_bucket\(Self.adding("le", "+Inf", to: key)) \(histogram.count)\n"
                    out += "\(family.name)_sum\(key) \(Self.format(histogram.sum))\n"
                    out += "\(family.name)_count\(key) \(histogram.count)\n"
                }
            }
        }
        return out
    }

    // MARK: - Format

    static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCII,
              first == "_" || first == ":" || (first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0 == ":" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) }
    }

    /// `{a="x",b="y"}` with keys sorted, or "" for no labels.
    static func labelKey(_ labels: [String: String]) -> String {
        guard !labels.isEmpty else { return "" }
        return "{" + labels.sorted { $0.key < $1.key }.map { key, value in
            precondition(isValidName(key) && !key.contains(":"), "invalid label name \(key)")
            return "\(key)=\"\(escapeLabelValue(value))\""
        }.joined(separator: ",") + "}"
    }

    /// Appends `name="value"` to a rendered label set.
    static func adding(_ name: String, _ value: String, to key: String) -> String {
        key.isEmpty ? "{\(name)=\"\(value)\"}" : String(key.dropLast()) + ",\(name)=\"\(value)\"}"
    }

    /// Label values escape `\`, `"` and newlines.
    static func escapeLabelValue(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for character in value.unicodeScalars {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// HELP text escapes `\` and newlines.
    static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Integers without a fraction; `+Inf`, `-Inf`, `NaN` as Prometheus spells them.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}

// MARK: - Handles

/// A monotonically increasing count.
public struct Counter: Sendable {
    let registry: MetricsRegistry
    public let name: String

    public func increment(by delta: Double = 1, labels: [String: String] = [:]) {
        precondition(delta >= 0, "a counter never decreases")
        registry.add(name, delta, labels: labels)
    }
}

/// A value that goes up and down.
public struct Gauge: Sendable {
    let registry: MetricsRegistry
    public let name: String

    /// - parameter notify: false for values sampled at write time (resident memory), so that
    ///   sampling them does not count as a change that asks for another write.
    public func set(_ value: Double, labels: [String: String] = [:], notify: Bool = true) {
        registry.set(name, value, labels: labels, notify: notify)
    }
}

/// Counts of observations in buckets, with their sum.
public struct Histogram: Sendable {
    let registry: MetricsRegistry
    public let name: String

    public func observe(_ value: Double, labels: [String: String] = [:]) {
        registry.observe(name, value, labels: labels)
    }

    /// Observes a duration in seconds.
    public func observe(_ duration: Duration, labels: [String: String] = [:]) {
        let (seconds, attoseconds) = duration.components
        observe(Double(seconds) + Double(attoseconds) / 1e18, labels: labels)
    }
}
