import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a conflict by keeping the local copy or the device's.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The local copy in conflict.", completion: Completions.trackedFiles) var file: String
        @Flag(help: "Push the local copy over the device's version.") var keepLocal = false
        @Flag(help: "Replace the local copy with the device's version.") var keepDevice = false

        func validate() throws {
            guard keepLocal != keepDevice else {
                throw ValidationError("Choose exactly one of --keep-local and --keep-device.")
            }
        }

        func run() async throws {
            let resolution: Engine.Resolution = keepLocal ? .keepLocal : .keepDevice
            _ = try await global.engine().resolve(file, keeping: resolution)
            if global.json { return try Output.json(["resolved": file, "kept": resolution.rawValue]) }
            Output.line(keepLocal ? "pushed the local copy; the device now has your version" : "replaced the local copy with the device's version (your old copy is kept beside it as .local-<time>)")
        }
    }
}
