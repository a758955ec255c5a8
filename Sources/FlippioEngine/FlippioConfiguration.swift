import Foundation

/// Everything the engine can be told, with a default for each.
///
/// Values come, in order of precedence, from command-line flags (the CLI sets them on the value
/// it gets from ``FlippioConfiguration/load(environment:)``), then the environment (`FLIPPIO_*`), then
/// the optional config file `$XDG_CONFIG_HOME/flippio/config.json`, then these defaults.
///
/// For example, the config file
///
/// ```json
/// { "workspace": "/home/ana/dbs", "settleMs": 500, "stopApp": false }
/// ```
///
/// and `FLIPPIO_SETTLE_MS=200` give a workspace of `/home/ana/dbs`, a 200 ms settle window and
/// pushes that leave the app running.
public struct FlippioConfiguration: Sendable {
    /// Where local copies live. The default is `$XDG_DATA_HOME/flippio` (`~/.local/share/flippio`).
    public var workspace: URL
    /// The environment passed to every tool (so `ANDROID_ADB_SERVER_PORT`, `ADB_SERVER_SOCKET`,
    /// `ANDROID_SERIAL` work as adb users expect).
    public var environment: [String: String]
    /// Explicit tool paths (`--adb`, `FLIPPIO_ADB`, ...), by tool name (`adb`, `idevice_id`, ...).
    public var toolPaths: [String: String]
    /// How long a database must be quiet before it is pushed. The default is 300 ms.
    public var settleWindow: Duration
    /// The longest a database that never goes quiet waits before it is pushed anyway. The default is 10 s.
    public var settleMaxWait: Duration
    /// Whether `am force-stop` runs before a push. The default is true.
    public var stopAppBeforePush: Bool
    /// At most this many warm SQLite connections. The default is 256.
    public var poolCapacity: Int
    /// The timeout of a control command (`adb shell ...`). The default is 20 s (env `FLIPPIO_COMMAND_TIMEOUT_MS`).
    public var commandTimeout: Duration
    /// Backoff for transient failures.
    public var retry: RetryPolicy
    /// `trace`...`critical`, or nil for the command's default (`info` for the agent, `warning`
    /// for one-shot commands, whose output is their result).
    public var logLevel: String?

    public init(workspace: URL, environment: [String: String]) {
        self.workspace = workspace
        self.environment = environment
        self.toolPaths = [:]
        self.settleWindow = .milliseconds(300)
        self.settleMaxWait = .seconds(10)
        self.stopAppBeforePush = true
        self.poolCapacity = 256
        self.commandTimeout = .seconds(20)
        self.retry = RetryPolicy()
        self.logLevel = nil
    }

    /// The environment variables for explicit tool paths.
    public static let toolEnvironmentVariables: [String: String] = [
        "adb": "FLIPPIO_ADB",
        "idevice_id": "FLIPPIO_IDEVICE_ID",
        "ideviceinfo": "FLIPPIO_IDEVICEINFO",
        "ideviceinstaller": "FLIPPIO_IDEVICEINSTALLER",
        "afcclient": "FLIPPIO_AFCCLIENT",
        "ifuse": "FLIPPIO_IFUSE",
        "fusermount": "FLIPPIO_FUSERMOUNT",
    ]

    /// The configuration from the config file and the environment (flags are applied by the caller).
    ///
    /// - throws: ``FlippioError/Code/invalidArgument`` when the config file or a variable cannot be
    ///   read, naming the file or variable. A missing config file is not an error.
    public static func load(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> FlippioConfiguration {
        var config = FlippioConfiguration(workspace: Workspace.defaultRoot(environment: environment), environment: environment)
        if let file = try ConfigFile.load(environment: environment) {
            try file.apply(to: &config)
        }
        try config.applyEnvironment(environment)
        return config
    }

    mutating func applyEnvironment(_ env: [String: String]) throws {
        if let value = env["FLIPPIO_WORKSPACE"], !value.isEmpty {
            workspace = URL(fileURLWithPath: value, isDirectory: true)
        }
        if let value = env["FLIPPIO_SETTLE_MS"] {
            settleWindow = .milliseconds(try Self.parseMilliseconds(value, name: "FLIPPIO_SETTLE_MS"))
        }
        if let value = env["FLIPPIO_SETTLE_MAX_MS"] {
            settleMaxWait = .milliseconds(try Self.parseMilliseconds(value, name: "FLIPPIO_SETTLE_MAX_MS"))
        }
        if let value = env["FLIPPIO_STOP_APP"] {
            switch value.lowercased() {
            case "1", "true", "yes", "on": stopAppBeforePush = true
            case "0", "false", "no", "off": stopAppBeforePush = false
            default: throw FlippioError(.invalidArgument, "FLIPPIO_STOP_APP=\(value) is not a boolean.", remedy: "Use 1 or 0.")
            }
        }
        if let value = env["FLIPPIO_POOL_SIZE"] {
            guard let n = Int(value), n > 0 else {
                throw FlippioError(.invalidArgument, "FLIPPIO_POOL_SIZE=\(value) is not a positive number.", remedy: "Use e.g. 256.")
            }
            poolCapacity = n
        }
        if let value = env["FLIPPIO_COMMAND_TIMEOUT_MS"] {
            let ms = try Self.parseMilliseconds(value, name: "FLIPPIO_COMMAND_TIMEOUT_MS")
            guard ms > 0 else {
                throw FlippioError(.invalidArgument, "FLIPPIO_COMMAND_TIMEOUT_MS=\(value) is not a positive number of milliseconds.",
                                   remedy: "Use a whole number above 0, e.g. 20000.")
            }
            commandTimeout = .milliseconds(ms)
        }
        if let value = env["FLIPPIO_LOG_LEVEL"], !value.isEmpty { logLevel = value }
        if let value = env["FLIPPIO_COMMAND_TIMEOUT_MS"] {
            commandTimeout = .milliseconds(max(1, try Self.parseMilliseconds(value, name: "FLIPPIO_COMMAND_TIMEOUT_MS")))
        }
        if let value = env["FLIPPIO_RETRY_ATTEMPTS"] {
            guard let n = Int(value), (1...100).contains(n) else {
                throw FlippioError(.invalidArgument, "FLIPPIO_RETRY_ATTEMPTS=\(value) is not a number of tries.", remedy: "Use 1 to 100 (1 means no retry).")
            }
            retry.maxAttempts = n
        }
        for (tool, variable) in Self.toolEnvironmentVariables {
            if let path = env[variable], !path.isEmpty { toolPaths[tool] = path }
        }
    }

    /// Parses a whole number of milliseconds, 0...3_600_000.
    public static func parseMilliseconds(_ text: String, name: String) throws -> Int {
        guard let n = Int(text.trimmingCharacters(in: .whitespaces)), (0...3_600_000).contains(n) else {
            throw FlippioError(.invalidArgument, "\(name)=\(text) is not a number of milliseconds.",
                               remedy: "Use a whole number between 0 and 3600000, e.g. 300.")
        }
        return n
    }

    /// Where the config file is read from: `$XDG_CONFIG_HOME/flippio/config.json`.
    public static func configFileURL(environment: [String: String]) -> URL {
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0, isDirectory: true) }
            ?? URL(fileURLWithPath: environment["HOME"] ?? NSHomeDirectory(), isDirectory: true).appendingPathComponent(".config")
        return base.appendingPathComponent("flippio/config.json")
    }
}

/// The optional JSON config file.
struct ConfigFile: Decodable {
    var workspace: String?
    var settleMs: Int?
    var settleMaxMs: Int?
    var stopApp: Bool?
    var poolSize: Int?
    var logLevel: String?
    var tools: [String: String]?

    static func load(environment: [String: String]) throws -> ConfigFile? {
        let url = FlippioConfiguration.configFileURL(environment: environment)
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        do {
            return try JSONDecoder().decode(ConfigFile.self, from: data)
        } catch {
            throw FlippioError(.invalidArgument, "The config file \(url.path) is not valid: \(error).",
                               remedy: "Fix it or remove it; every setting has a default.")
        }
    }

    func apply(to config: inout FlippioConfiguration) throws {
        if let workspace { config.workspace = URL(fileURLWithPath: (workspace as NSString).expandingTildeInPath, isDirectory: true) }
        if let settleMs { config.settleWindow = .milliseconds(try FlippioConfiguration.parseMilliseconds(String(settleMs), name: "settleMs")) }
        if let settleMaxMs { config.settleMaxWait = .milliseconds(try FlippioConfiguration.parseMilliseconds(String(settleMaxMs), name: "settleMaxMs")) }
        if let stopApp { config.stopAppBeforePush = stopApp }
        if let poolSize, poolSize > 0 { config.poolCapacity = poolSize }
        if let logLevel { config.logLevel = logLevel }
        for (tool, path) in tools ?? [:] { config.toolPaths[tool] = path }
    }
}
