import ArgumentParser
import FlippioEngine
import Foundation

/// Options every command takes. Flags win over the environment, which wins over the config file.
struct GlobalOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Where local copies live (default: $XDG_DATA_HOME/flippio; env FLIPPIO_WORKSPACE).", valueName: "dir"))
    var workspace: String?

    @Option(help: ArgumentHelp("The adb executable (env FLIPPIO_ADB; default: found on PATH or in $ANDROID_HOME).", valueName: "path"))
    var adb: String?

    @Flag(help: "Print machine-readable JSON.")
    var json = false

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (env FLIPPIO_LOG_LEVEL).", valueName: "level"))
    var logLevel: String?

    func validate() throws {
        if let logLevel, !FlippioConfiguration.logLevels.contains(logLevel.lowercased()) {
            throw ValidationError("--log-level accepts one of: \(FlippioConfiguration.logLevels.joined(separator: ", ")); not '\(logLevel)'.")
        }
        if workspace?.isEmpty == true { throw ValidationError("--workspace needs a folder.") }
        if adb?.isEmpty == true { throw ValidationError("--adb needs the path of the adb executable.") }
    }

    /// The engine configuration: config file, then environment, then these flags (`~` in a
    /// path means `$HOME`, also when the shell did not expand it, as in `--workspace=~/dbs`).
    func configuration() throws -> FlippioConfiguration {
        var config = try FlippioConfiguration.load()
        if let workspace {
            config.workspace = URL(fileURLWithPath: FlippioConfiguration.expandTilde(workspace, environment: config.environment),
                                   isDirectory: true)
        }
        if let adb { config.toolPaths["adb"] = FlippioConfiguration.expandTilde(adb, environment: config.environment) }
        if let logLevel { config.logLevel = logLevel.lowercased() }
        return config
    }

    /// The engine for a one-shot command; `adjust` applies the command's own flags.
    func engine(_ adjust: (inout FlippioConfiguration) -> Void = { _ in }) throws -> Engine {
        var config = try configuration()
        adjust(&config)
        FlippioLogging.bootstrap(level: try .parse(config.logLevel ?? "warning"), environment: config.environment)
        let engine = Engine(configuration: config)
        oneShotBridges.withLock { $0.append(engine.bridges) }
        return engine
    }
}
