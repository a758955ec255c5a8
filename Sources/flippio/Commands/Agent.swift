import ArgumentParser
import FlippioEngine
import Foundation
import Logging
import ServiceLifecycle

extension Flippio {
    struct AgentCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent",
            abstract: "Run the sync agent in the foreground (what the systemd service runs).",
            discussion: "Watches every tracked database and pushes each save. SIGTERM or Ctrl-C stops it cleanly.")

        @OptionGroup var global: GlobalOptions
        @Option(help: ArgumentHelp("Quiet period before a push, in ms (env FLIPPIO_SETTLE_MS; default 300).", valueName: "ms"))
        var settleMs: Int?
        @Option(help: ArgumentHelp("Longest wait for a file that never goes quiet, in ms (default 10000).", valueName: "ms"))
        var settleMaxMs: Int?
        @Flag(help: "Do not stop the app (am force-stop) before a push.") var noStopApp = false
        @Flag(help: "After a verified push, start the app again (its launcher activity; config restartApp).")
        var restartApp = false
        @Option(help: ArgumentHelp("Most warm SQLite connections kept open (default 32).", valueName: "n"))
        var poolSize: Int?

        func validate() throws {
            if let settleMs, !(0...3_600_000).contains(settleMs) { throw ValidationError("--settle-ms must be 0...3600000.") }
            if let settleMaxMs, !(0...3_600_000).contains(settleMaxMs) { throw ValidationError("--settle-max-ms must be 0...3600000.") }
            if let poolSize, poolSize < 1 { throw ValidationError("--pool-size must be at least 1.") }
        }

        func run() async throws {
            var config = try global.configuration()
            if let settleMs { config.settleWindow = .milliseconds(settleMs) }
            if let settleMaxMs { config.settleMaxWait = .milliseconds(settleMaxMs) }
            if noStopApp { config.stopAppBeforePush = false }
            if restartApp { config.restartApp = true }
            if let poolSize { config.poolCapacity = poolSize }
            FlippioLogging.bootstrap(level: try .parse(config.logLevel ?? "info"), environment: config.environment)
            let logger = Logger(label: "flippio.agent")
            let systemdEnvironment = config.environment
            // Children (adb) must not talk to systemd in our name.
            config.environment = SystemdNotifier.scrubbedEnvironment(config.environment)
            let runner = MeteredProcessRunner(ProcessRunner())
            let agent = Agent(configuration: config, bridges: BridgeProvider(configuration: config, runner: runner),
                              logger: logger, systemdEnvironment: systemdEnvironment)
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: agent, successTerminationBehavior: .gracefullyShutdownGroup,
                                 failureTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
            try await group.run()
        }
    }
}
