import ArgumentParser
import FlippioEngine
import Foundation

extension Flippio {
    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Push local copies to their devices now, through the same engine as the agent.",
            discussion: "Safe while the agent runs: a per-database lock keeps the two from pushing at once. A conflict is never overwritten; use `flippio resolve`.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Local copies to push (default: every tracked database).", completion: Completions.trackedFiles)
        var files: [String] = []
        @Flag(help: "Push even if the content equals what the device has.") var force = false
        @Flag(help: "Do not stop the app (am force-stop) before the push (env FLIPPIO_STOP_APP=0).") var noStopApp = false
        @Flag(help: "After a verified push, start the app again (its launcher activity; config restartApp).")
        var restartApp = false

        struct Result: Encodable {
            var path: String
            var outcome: String
            var bytes: Int64?
            var durationMs: Int?
            var error: Output.ErrorJSON?
            var deviceCopy: String?
            var restarted: Bool?
        }

        func run() async throws {
            let results = try await global.engine {
                if noStopApp { $0.stopAppBeforePush = false }
                if restartApp { $0.restartApp = true }
            }.push(files, force: force)
            var failed = false
            var json: [Result] = []
            for (database, outcome) in results {
                var result = Result(path: database.path, outcome: "")
                switch outcome {
                case .pushed(let record):
                    result.outcome = "pushed"; result.bytes = record.bytes; result.durationMs = record.durationMilliseconds
                    result.restarted = record.appRestarted
                    if !global.json { Output.line("pushed \(database.path) (\(Output.formatBytes(record.bytes)) in \(record.durationMilliseconds) ms)\(record.appRestarted == true ? "; app restarted" : "")") }
                case .unchanged:
                    result.outcome = "unchanged"
                    if !global.json { Output.line("unchanged \(database.path): the device already has this content") }
                case .conflict(let copy):
                    failed = true
                    result.outcome = "conflict"; result.deviceCopy = copy.path
                    if !global.json {
                        Output.printError(FlippioError(.conflict, "\(database.path): the app changed its copy on the device; nothing was overwritten. The device's version is at \(copy.path).",
                                                       remedy: "flippio resolve \(database.path) --keep-local | --keep-device"))
                    }
                case .forgotten:
                    result.outcome = "forgotten"
                    if !global.json { Output.line("skipped \(database.path): no longer tracked") }
                case .invalid(let error), .failed(let error):
                    failed = true
                    result.outcome = "failed"; result.error = .init(error)
                    if !global.json { Output.printError(error) }
                }
                json.append(result)
            }
            if global.json { try Output.json("results", json) }
            if failed { throw CommandFailed() }
        }
    }
}
