import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Apps: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the apps installed on a device.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "A device serial/UDID, or a unique prefix of one.") var device: String
        @Flag(help: "Include system apps.") var all = false

        func run() async throws {
            let apps = try await global.engine().apps(device: device, includeSystem: all)
            if global.json { return try Output.json("apps", apps) }
            if apps.isEmpty { return Output.line("No apps\(all ? "" : " (third-party); try --all").") }
            // Debuggable apps are the ones flippio can reach (run-as); "-" when the device did not say.
            Output.table(["APP", "DEBUGGABLE", "NAME"], apps.map {
                [$0.id, $0.debuggable.map { $0 ? "yes" : "no" } ?? "-", $0.name ?? ""]
            })
        }
    }
}
