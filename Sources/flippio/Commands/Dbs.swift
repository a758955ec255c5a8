import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Dbs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an app's SQLite databases on a device.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "A device serial/UDID, or a unique prefix of one.") var device: String
        @Argument(help: "The app's package name (Android) or bundle identifier (iOS).") var app: String

        func run() async throws {
            let databases = try await global.engine().databases(device: device, app: app)
            if global.json { return try Output.json("databases", databases) }
            if databases.isEmpty { return Output.line("\(app) has no SQLite databases.") }
            Output.table(["PATH", "ACCESS", "SIZE"], databases.map {
                [$0.path, $0.access.rawValue, $0.size.map(Output.formatBytes) ?? "-"]
            })
        }
    }
}
