import ArgumentParser
import FlippioEngine
import Foundation

extension Flippio {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every tracked database and its sync state.",
            discussion: "Paths are shown relative to the workspace (--json keeps them absolute). With --exit-code the exit status is 1 when a database is in conflict or failed, for scripts and shell prompts.")

        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print the agent's metrics (Prometheus text format, from $XDG_STATE_HOME/flippio/metrics.prom).")
        var metrics = false
        @Flag(help: "Exit with 1 when any database is in conflict or failed (after printing as usual).")
        var exitCode = false

        /// The states that need the user: `--exit-code` fails on them.
        static let needsAttention: Set<SyncState> = [.conflict, .failed]

        func validate() throws {
            if metrics && exitCode { throw ValidationError("--metrics and --exit-code do not go together.") }
        }

        func run() async throws {
            if metrics {
                let config = try global.configuration()
                guard let url = MetricsFile.defaultURL(environment: config.environment) else {
                    throw FlippioError(.invalidArgument, "FLIPPIO_METRICS_FILE is empty: the agent writes no metrics.",
                                       remedy: "Unset FLIPPIO_METRICS_FILE (default: $XDG_STATE_HOME/flippio/metrics.prom) and restart the agent.")
                }
                return FileHandle.standardOutput.write(Data(try MetricsFile.read(at: url).utf8))
            }
            let root = try global.configuration().workspace
            let workspace = root.path
            // The workspace as given, and as the file system spells it (a symlinked /tmp...).
            let roots = Array(Set([root.path, root.standardizedFileURL.path, root.resolvingSymlinksInPath().path]))
            let engine = try global.engine()
            let statuses = try await engine.status()
            let attention = statuses.contains { $0.state.map(Self.needsAttention.contains) ?? false }
            defer { if exitCode && attention { Foundation.exit(1) } }
            if global.json {
                struct Listing: Encodable { var workspace: String; var databases: [Engine.TrackedStatus] }
                return try Output.json(Listing(workspace: workspace, databases: statuses))
            }
            if statuses.isEmpty { return Output.line("Nothing tracked yet. Start with `flippio devices`, then `flippio pull`.") }
            Output.table(["STATE", "DEVICE", "APP", "LOCAL COPY", "LAST PUSH", "FOLLOW"], statuses.map {
                [($0.state?.rawValue ?? "unreadable") + ($0.localChanges && $0.state == .clean ? "*" : ""), $0.device ?? "-", $0.app ?? "-",
                 Self.relative($0.path, to: roots), Output.date($0.lastPushAt), $0.follow.map { $0 ? "yes" : "no" } ?? "-"]
            })
            for status in statuses {
                if let error = status.lastError, status.state != .clean {
                    Output.line("")
                    Output.line("\(Self.relative(status.path, to: roots)): \(error.message)")
                    if let fix = error.remedy { Output.line("  fix: \(fix)") }
                    if let retry = status.nextRetryAt { Output.line("  next try: \(Output.date(retry))") }
                }
            }
            if let agent = engine.agentStatus(), agent.unwatchedFolders > 0 {
                Output.line("")
                Output.line("The agent (PID \(agent.pid)) cannot watch \(agent.unwatchedFolders) workspace folder\(agent.unwatchedFolders == 1 ? "" : "s") (inotify limit); it rescans them every few seconds instead.")
                if let fix = agent.unwatchedRemedy { Output.line("  fix: \(fix)") }
            }
            if let agent = engine.agentStatus(), let polling = agent.pollingApps, !polling.isEmpty {
                Output.line("")
                for app in polling {
                    Output.line("Following \(app) by polling its fingerprint (the device has no usable inotifyd): changes arrive within a few seconds.")
                }
            }
            Output.info("(paths are relative to \(workspace))")
        }

        /// `path` relative to the workspace when it is inside one of `roots` (spellings of the
        /// workspace); else unchanged.
        static func relative(_ path: String, to roots: [String]) -> String {
            for root in roots.sorted(by: { $0.count > $1.count }) {
                let prefix = root.hasSuffix("/") ? root : root + "/"
                if path.hasPrefix(prefix) { return String(path.dropFirst(prefix.count)) }
            }
            return path
        }
    }
}
