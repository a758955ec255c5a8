import Foundation

/// A ``ProcessRunning`` that records each call's duration by tool in ``AgentMetrics``, then
/// returns what the wrapped runner returned (or throws what it threw).
///
/// For example:
///
/// ```swift
/// let runner = MeteredProcessRunner(ProcessRunner())
/// let bridges = BridgeProvider(configuration: config, runner: runner)
/// ```
public struct MeteredProcessRunner: ProcessRunning {
    public let base: any ProcessRunning
    public let metrics: AgentMetrics

    public init(_ base: any ProcessRunning, metrics: AgentMetrics = .shared) {
        self.base = base
        self.metrics = metrics
    }

    public func run(_ command: ProcessCommand) async throws -> ProcessResult {
        let started = ContinuousClock.now
        do {
            let result = try await base.run(command)
            metrics.commandEnded(executable: command.executable, duration: result.duration, timedOut: result.timedOut)
            return result
        } catch {
            metrics.commandEnded(executable: command.executable, duration: .now - started, timedOut: false)
            throw error
        }
    }
}
