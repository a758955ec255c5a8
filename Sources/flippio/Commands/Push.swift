import ArgumentParser
import FlippioEngine
import Foundation
import Logging

extension Flippio {
    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Push local copies to their devices now, through the same engine as the agent.",
            discussion: "Safe while the agent runs: a per-database lock keeps the two from pushing at once. A conflict is never overwritten; use `flippio resolve`.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Local copies to push (default: every tracked database).", completion: Completions.trackedFiles)
        var files: [String] = []
        @Flag(help: "Push even if the content equals what the device has.") var force = false
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
            var config = try global.configuration()
            if restartApp { config.restartApp = true }
            FlippioLogging.bootstrap(level: try .parse(config.logLevel ?? "warning"), environment: config.environment)
            let results = try await Engine(configuration: config).push(files, force: force)
            let restarted = config.restartApp ? await Self.restartApps(pushed: results.compactMap { database, outcome in
                if case .pushed = outcome { return database } else { return nil }
            }, configuration: config) : [:]
            var failed = false
            var json: [Result] = []
            for (database, outcome) in results {
                var result = Result(path: database.path, outcome: "")
                switch outcome {
                case .pushed(let record):
                    result.outcome = "pushed"; result.bytes = record.bytes; result.durationMs = record.durationMilliseconds
                    result.restarted = restarted[database]
                    if !global.json { Output.line("pushed \(database.path) (\(Output.formatBytes(record.bytes)) in \(record.durationMilliseconds) ms)\(restarted[database] == true ? "; app restarted" : "")") }
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
                case .invalid(let error), .failed(let error):
                    failed = true
                    result.outcome = "failed"; result.error = .init(error)
                    if !global.json { Output.printError(error) }
                }
                json.append(result)
            }
            if global.json { try Output.json(json) }
            if failed { throw CommandFailed() }
        }

        /// Starts the apps of the pushed databases again, each app once; returns, per database, whether
        /// its app was started. Until the push pipeline does this itself after its verify step, the
        /// command does it here.
        static func restartApps(pushed: [URL], configuration: FlippioConfiguration) async -> [URL: Bool] {
            let launcher = AppLauncher(bridges: BridgeProvider(configuration: configuration, runner: ProcessRunner()),
                                       logger: Logger(label: "flippio.push"))
            var outcomes: [String: AppLauncher.Outcome] = [:]
            var restarted: [URL: Bool] = [:]
            for database in pushed {
                guard let origin = try? SidecarStore.load(forDatabase: database).origin else { continue }
                let key = "\(origin.platform)/\(origin.deviceID)/\(origin.appID)"
                if outcomes[key] == nil {
                    let outcome = await launcher.start(platform: origin.platform, deviceID: origin.deviceID, appID: origin.appID)
                    outcomes[key] = outcome
                    if case .failed(let error) = outcome { Output.printError(error) }
                    if outcome == .notSupported { Output.info("\(origin.appID) was not restarted: the iOS tools cannot start apps; open it on the device.") }
                }
                restarted[database] = outcomes[key] == .started
            }
            return restarted
        }
    }
}
