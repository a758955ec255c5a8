import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Unfollow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop bringing the app's changes into a local copy (edits are still pushed).",
            discussion: "The copy then stays as pulled until you push it or pull it again; an edit still merges with what the app wrote meanwhile.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The local copy.", completion: Completions.trackedFiles) var file: String

        func run() async throws {
            let database = try await global.engine().setFollow(file, false)
            if global.json { return try Output.json(["notFollowing": database.path]) }
            Output.line("not following the device for \(database.path); `flippio follow` turns it back on")
        }
    }
}
