import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show every tracked database and its sync state.")

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let statuses = try await global.engine().status()
            if global.json { return try Output.json(statuses) }
            if statuses.isEmpty { return Output.line("Nothing tracked yet. Start with `flippio devices`, then `flippio pull`.") }
            Output.table(["STATE", "DEVICE", "APP", "LOCAL COPY", "LAST PUSH"], statuses.map {
                [$0.state + ($0.localChanges && $0.state == "clean" ? "*" : ""), $0.device ?? "-", $0.app ?? "-", $0.path, Output.date($0.lastPushAt)]
            })
            for status in statuses {
                if let error = status.lastError, status.state != "clean" {
                    Output.line("")
                    Output.line("\(status.path): \(error.message)")
                    if let fix = error.remedy { Output.line("  fix: \(fix)") }
                    if let retry = status.nextRetryAt { Output.line("  next try: \(Output.date(retry))") }
                }
            }
        }
    }
}
