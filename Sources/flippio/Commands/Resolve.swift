import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a conflict: keep the local copy, the device's, or merge preferring one side.",
            discussion: "--merge-prefer merges row by row and takes the chosen side's version only of the rows changed on both (see `flippio conflicts FILE`).")

        enum Side: String, ExpressibleByArgument, CaseIterable { case local, device }

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The local copy in conflict.", completion: Completions.trackedFiles) var file: String
        @Flag(help: "Push the local copy over the device version saved with the conflict.") var keepLocal = false
        @Flag(help: "Replace the local copy with the device's version (yours is kept beside it).") var keepDevice = false
        @Option(help: "Merge both sides; for rows changed on both, keep this side's version.") var mergePrefer: Side?

        func validate() throws {
            guard [keepLocal, keepDevice, mergePrefer != nil].filter({ $0 }).count == 1 else {
                throw ValidationError("Choose exactly one of --keep-local, --keep-device and --merge-prefer local|device.")
            }
        }

        func run() async throws {
            let resolution: Engine.Resolution = switch (keepLocal, keepDevice, mergePrefer) {
            case (true, _, _): .keepLocal
            case (_, true, _): .keepDevice
            case (_, _, .local?): .mergePreferLocal
            default: .mergePreferDevice
            }
            let outcome = try await global.engine().resolve(file, keeping: resolution)
            if global.json { return try Output.json(["resolved": file, "kept": resolution.rawValue]) }
            switch resolution {
            case .keepLocal: Output.line("pushed the local copy; the device now has your version")
            case .keepDevice: Output.line("replaced the local copy with the device's version (your old copy is kept beside it as .local-<time>)")
            case .mergePreferLocal, .mergePreferDevice:
                if case .pushed(let record)? = outcome, let merged = record.merged {
                    Output.line("merged: \(merged.rowsFromDevice) rows from the app, \(merged.rowsFromDesktop) from the desktop; both copies hold the result")
                } else {
                    Output.line("merged; both copies hold the result")
                }
            }
        }
    }
}
