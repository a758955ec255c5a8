import ArgumentParser
import FlippioEngine
import Foundation

extension Flippio {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show every tracked database and its sync state.")

        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print the agent's metrics (Prometheus text format, from $XDG_STATE_HOME/flippio/metrics.prom).")
        var metrics = false

        func run() async throws {
            if metrics {
                let config = try global.configuration()
                guard let url = MetricsFile.defaultURL(environment: config.environment) else {
                    throw FlippioError(.invalidArgument, "FLIPPIO_METRICS_FILE is empty: the agent writes no metrics.",
                                       remedy: "Unset FLIPPIO_METRICS_FILE (default: $XDG_STATE_HOME/flippio/metrics.prom) and restart the agent.")
                }
                return FileHandle.standardOutput.write(Data(try MetricsFile.read(at: url).utf8))
            }
            let engine = try global.engine()
            let statuses = try await engine.status()
            if global.json { return try Output.json(statuses) }
            if statuses.isEmpty { return Output.line("Nothing tracked yet. Start with `flippio devices`, then `flippio pull`.") }
            Output.table(["STATE", "DEVICE", "APP", "LOCAL COPY", "LAST PUSH"], statuses.map {
                [($0.state?.rawValue ?? "unreadable") + ($0.localChanges && $0.state == .clean ? "*" : ""), $0.device ?? "-", $0.app ?? "-", $0.path, Output.date($0.lastPushAt)]
            })
            for status in statuses {
                if let error = status.lastError, status.state != .clean {
                    Output.line("")
                    Output.line("\(status.path): \(error.message)")
                    if let fix = error.remedy { Output.line("  fix: \(fix)") }
                    if let retry = status.nextRetryAt { Output.line("  next try: \(Output.date(retry))") }
                }
            }
            if let agent = engine.agentStatus(), agent.unwatchedFolders > 0 {
                Output.line("")
                Output.line("The agent (PID \(agent.pid)) cannot watch \(agent.unwatchedFolders) workspace folder\(agent.unwatchedFolders == 1 ? "" : "s") (inotify limit); it rescans them every few seconds instead.")
                if let fix = agent.unwatchedRemedy { Output.line("  fix: \(fix)") }
            }
        }
    }
}
