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

    /// The engine configuration: config file, then environment, then these flags.
    func configuration() throws -> FlippioConfiguration {
        var config = try FlippioConfiguration.load()
        if let workspace {
            config.workspace = URL(fileURLWithPath: (workspace as NSString).expandingTildeInPath, isDirectory: true)
        }
        if let adb { config.toolPaths["adb"] = adb }
        if let logLevel { config.logLevel = logLevel }
        return config
    }

    func engine() throws -> Engine {
        let config = try configuration()
        FlippioLogging.bootstrap(level: try .parse(config.logLevel ?? "warning"), environment: config.environment)
        let engine = Engine(configuration: config)
        oneShotBridges.withLock { $0.append(engine.bridges) }
        return engine
    }
}
