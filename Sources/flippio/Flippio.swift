import ArgumentParser
import FlippioEngine

@main
struct Flippio: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flippio",
        abstract: "Edit an app's SQLite database on an Android or iOS device as if it were a local file.",
        subcommands: []
    )
}
