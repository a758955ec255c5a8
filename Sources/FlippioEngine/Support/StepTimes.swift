import Foundation

/// How long each step of one operation took, for one debug log line.
///
/// For example:
///
/// ```swift
/// var times = StepTimes()
/// try await transfer(); times.lap("transfer")
/// try fold(); times.lap("fold")
/// logger.debug("pulled x.db: \(times)")   // "transfer 91 ms, fold 40 ms (total 131 ms)"
/// ```
struct StepTimes: CustomStringConvertible, Sendable {
    private let start = ContinuousClock.now
    private var last = ContinuousClock.now
    private var steps: [(name: String, duration: Duration)] = []

    /// Ends the step named `name`: the time since the previous lap (or since creation).
    mutating func lap(_ name: String) {
        let now = ContinuousClock.now
        steps.append((name, now - last))
        last = now
    }

    var description: String {
        (steps.map { "\($0.name) \(Self.milliseconds($0.duration))" } + ["(total \(Self.milliseconds(last - start)))"])
            .joined(separator: ", ")
    }

    private static func milliseconds(_ duration: Duration) -> String {
        let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return String(format: "%.1f ms", ms)
    }
}
