import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Forget: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop tracking a database (the local copy stays).")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The local copy.", completion: Completions.trackedFiles) var file: String

        func run() async throws {
            let database = try await global.engine().forget(file)
            if global.json { return try Output.json(["forgotten": database.path]) }
            Output.line("no longer tracking \(database.path); the file stays")
        }
    }
}
