import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Conflicts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the rows a conflict is about: table, key, and the base, local and device values.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The local copy in conflict.", completion: Completions.trackedFiles) var file: String

        func run() async throws {
            let report = try global.engine().conflicts(file)
            if global.json { return try Output.json(report) }
            if let copy = report.deviceCopy { Output.line("the device's version: \(copy)") }
            guard let detail = report.detail else {
                return Output.line("The app changed the database, and there was no common version to merge against; compare the two files.")
            }
            if let schema = detail.schema { Output.line(schema.explanation) }
            for row in detail.rows {
                let key = row.primaryKey.map { "\($0.column)=\($0.value)" }.joined(separator: ", ")
                Output.line("")
                Output.line("\(row.table) [\(key)]: \(row.explanation)")
                for (side, values) in [("base", row.base), ("local", row.local), ("device", row.device)] {
                    Output.line("  \(side.padding(toLength: 6, withPad: " ", startingAt: 0)) " + (values.map { $0.map { "\($0.column)=\($0.value)" }.joined(separator: " ") } ?? "(no row)"))
                }
            }
            Output.line("")
            Output.line("End it with `flippio resolve \(report.path)` and --keep-local, --keep-device or --merge-prefer local|device.")
        }
    }
}
