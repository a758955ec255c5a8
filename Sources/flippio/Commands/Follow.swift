import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Follow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring the app's changes into a local copy as they happen (the default).",
            discussion: "The running agent watches the app's files on the device (Android: run-as PKG inotifyd; iOS: a fingerprint poll) and writes the app's new rows into the copy through SQLite, so an editor that has it open sees them.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The local copy.", completion: Completions.trackedFiles) var file: String

        func run() async throws {
            let database = try await global.engine().setFollow(file, true)
            if global.json { return try Output.json(["following": database.path]) }
            Output.line("following the device: the app's changes now arrive in \(database.path)")
        }
    }
}
