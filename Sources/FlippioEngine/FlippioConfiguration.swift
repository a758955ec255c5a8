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
    /// At most this many warm SQLite connections. The default is 32: a connection is worth
    /// keeping only for a database pushed again soon, and the pool (an LRU) opens the others
    /// on demand in about 0.4 ms; each kept one costs memory (GRDB's queue, SQLite's caches).
    public var poolCapacity: Int
    /// A push sends only the changed pages (a page delta) when they are less than this fraction
    /// of the file, and the whole file otherwise; 0 always sends the whole file. A delta costs a
    /// copy and a hash of the file on the device, so past half the file the whole file is as
    /// cheap. The default is 0.5 (env `FLIPPIO_DELTA_THRESHOLD`).
    public var deltaThreshold: Double
    /// The timeout of a control command (`adb shell ...`). The default is 20 s (env `FLIPPIO_COMMAND_TIMEOUT_MS`).
    public var commandTimeout: Duration
    /// Backoff for transient failures.
    public var retry: RetryPolicy
    /// How often the agent looks at folders it could not watch (inotify limits). The default is
    /// 10 s (env `FLIPPIO_UNWATCHED_RESCAN_MS`).
    public var unwatchedRescanInterval: Duration
    /// Whether the agent shows a desktop notification when a database enters `conflict` or fails for
    /// good (``DesktopNotifier``). The default is true (config `notifications`, env `FLIPPIO_NOTIFICATIONS`).
    public var desktopNotifications: Bool
    /// Whether the app is started again (its launcher activity) after a verified push, so the edit
    /// shows at once. The default is false (config `restartApp`, env `FLIPPIO_RESTART_APP`, `--restart-app`).
    public var restartApp: Bool
    /// Whether a tracked database follows the app's changes on the device unless its sidecar says
    /// otherwise (`flippio follow|unfollow`, `pull --no-follow`). The default is true (env `FLIPPIO_FOLLOW`).
    public var follow: Bool
    /// How often an Android app whose device has no usable `inotifyd` is polled (its databases'
    /// fingerprints). The default is 5 s (env `FLIPPIO_FOLLOW_POLL_MS`).
    public var followPollInterval: Duration
    /// How often followed iOS databases' fingerprints are polled while their device is connected
    /// (the libimobiledevice tools report no file changes); zero turns following off for iOS.
    /// The default is 5 s (env `FLIPPIO_IOS_FOLLOW_MS`).
    public var iosFollowInterval: Duration
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
        self.poolCapacity = 32
        self.deltaThreshold = 0.5
        self.commandTimeout = .seconds(20)
        self.retry = RetryPolicy()
        self.unwatchedRescanInterval = .seconds(10)
        self.desktopNotifications = true
        self.restartApp = false
        self.logLevel = nil
        self.follow = true
        self.followPollInterval = .seconds(5)
        self.iosFollowInterval = .seconds(5)
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
    /// - throws: ``FlippioError/Code/invalidConfiguration`` when the config file has an unknown
    ///   key or a bad value, or a variable a bad value, naming the key or variable and what it
    ///   accepts. A missing config file is not an error.
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
            workspace = URL(fileURLWithPath: Self.expandTilde(value, environment: env), isDirectory: true)
        }
        if let value = env["FLIPPIO_SETTLE_MS"] {
            settleWindow = .milliseconds(try Self.parseMilliseconds(value, name: "FLIPPIO_SETTLE_MS"))
        }
        if let value = env["FLIPPIO_SETTLE_MAX_MS"] {
            settleMaxWait = .milliseconds(try Self.parseMilliseconds(value, name: "FLIPPIO_SETTLE_MAX_MS"))
        }
        if let value = env["FLIPPIO_STOP_APP"] { stopAppBeforePush = try Self.parseBoolean(value, name: "FLIPPIO_STOP_APP") }
        if let value = env["FLIPPIO_NOTIFICATIONS"] { desktopNotifications = try Self.parseBoolean(value, name: "FLIPPIO_NOTIFICATIONS") }
        if let value = env["FLIPPIO_RESTART_APP"] { restartApp = try Self.parseBoolean(value, name: "FLIPPIO_RESTART_APP") }
        if let value = env["FLIPPIO_DELTA_THRESHOLD"] {
            guard let fraction = Double(value), fraction >= 0, fraction <= 1 else {
                throw FlippioError(.invalidConfiguration, "FLIPPIO_DELTA_THRESHOLD=\(value) is not a fraction from 0 to 1.",
                                   remedy: "FLIPPIO_DELTA_THRESHOLD accepts a number from 0 (never send page deltas) to 1, e.g. 0.5.")
            }
            deltaThreshold = fraction
        }
        if let value = env["FLIPPIO_FOLLOW"] {
            switch value.lowercased() {
            case "1", "true", "yes", "on": follow = true
            case "0", "false", "no", "off": follow = false
            default: throw FlippioError(.invalidConfiguration, "FLIPPIO_FOLLOW=\(value) is not a boolean.",
                                        remedy: "FLIPPIO_FOLLOW accepts 1, true, yes, on or 0, false, no, off.")
            }
        }
        if let value = env["FLIPPIO_FOLLOW_POLL_MS"] {
            followPollInterval = .milliseconds(max(100, try Self.parseMilliseconds(value, name: "FLIPPIO_FOLLOW_POLL_MS")))
        }
        if let value = env["FLIPPIO_IOS_FOLLOW_MS"] {
            let ms = try Self.parseMilliseconds(value, name: "FLIPPIO_IOS_FOLLOW_MS")
            iosFollowInterval = ms == 0 ? .zero : .milliseconds(max(100, ms))
        }
        if let value = env["FLIPPIO_POOL_SIZE"] {
            guard let n = Int(value), n > 0 else {
                throw FlippioError(.invalidConfiguration, "FLIPPIO_POOL_SIZE=\(value) is not a positive number.",
                                   remedy: "FLIPPIO_POOL_SIZE accepts a whole number of at least 1, e.g. 32.")
            }
            poolCapacity = n
        }
        if let value = env["FLIPPIO_COMMAND_TIMEOUT_MS"] {
            let ms = try Self.parseMilliseconds(value, name: "FLIPPIO_COMMAND_TIMEOUT_MS")
            guard ms > 0 else {
                throw FlippioError(.invalidConfiguration, "FLIPPIO_COMMAND_TIMEOUT_MS=\(value) is not a positive number of milliseconds.",
                                   remedy: "FLIPPIO_COMMAND_TIMEOUT_MS accepts a whole number from 1 to 3600000, e.g. 20000.")
            }
            commandTimeout = .milliseconds(ms)
        }
        if let value = env["FLIPPIO_LOG_LEVEL"], !value.isEmpty { logLevel = try Self.checkLogLevel(value, name: "FLIPPIO_LOG_LEVEL") }
        if let value = env["FLIPPIO_UNWATCHED_RESCAN_MS"] {
            unwatchedRescanInterval = .milliseconds(max(100, try Self.parseMilliseconds(value, name: "FLIPPIO_UNWATCHED_RESCAN_MS")))
        }
        if let value = env["FLIPPIO_RETRY_ATTEMPTS"] {
            guard let n = Int(value), (1...100).contains(n) else {
                throw FlippioError(.invalidConfiguration, "FLIPPIO_RETRY_ATTEMPTS=\(value) is not a number of tries.",
                                   remedy: "FLIPPIO_RETRY_ATTEMPTS accepts a whole number from 1 to 100 (1 means no retry).")
            }
            retry.maxAttempts = n
        }
        for (tool, variable) in Self.toolEnvironmentVariables {
            if let path = env[variable], !path.isEmpty { toolPaths[tool] = Self.expandTilde(path, environment: env) }
        }
    }

    /// Parses a whole number of milliseconds, 0...3_600_000.
    ///
    /// - throws: ``FlippioError/Code/invalidConfiguration`` naming `name` and the accepted range.
    /// Parses a yes/no value: 1, true, yes, on or 0, false, no, off.
    static func parseBoolean(_ text: String, name: String) throws -> Bool {
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw FlippioError(.invalidConfiguration, "\(name)=\(text) is not a boolean.",
                                    remedy: "\(name) accepts 1, true, yes, on or 0, false, no, off.")
        }
    }

    public static func parseMilliseconds(_ text: String, name: String) throws -> Int {
        guard let n = Int(text.trimmingCharacters(in: .whitespaces)), (0...3_600_000).contains(n) else {
            throw FlippioError(.invalidConfiguration, "\(name)=\(text) is not a number of milliseconds.",
                               remedy: "\(name) accepts a whole number between 0 and 3600000, e.g. 300.")
        }
        return n
    }

    /// The log level names `--log-level`, `FLIPPIO_LOG_LEVEL` and `logLevel` accept.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// `text` when it names a log level (case-insensitive), lowercased.
    ///
    /// - throws: ``FlippioError/Code/invalidConfiguration`` naming `name` and the levels.
    public static func checkLogLevel(_ text: String, name: String) throws -> String {
        let level = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard logLevels.contains(level) else {
            throw FlippioError(.invalidConfiguration, "\(name)=\(text) is not a log level.",
                               remedy: "\(name) accepts one of: \(logLevels.joined(separator: ", ")).")
        }
        return level
    }

    /// `path` with a leading `~` or `~/` replaced by `$HOME` (as a shell would, so a path
    /// written in the config file or a unit's `Environment=` means what it means in a terminal).
    /// `~user` forms and `~` elsewhere are left as they are.
    public static func expandTilde(_ path: String, environment: [String: String]) -> String {
        guard path == "~" || path.hasPrefix("~/") else { return path }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + path.dropFirst()
    }

    /// Where the config file is read from: `$XDG_CONFIG_HOME/flippio/config.json`.
    public static func configFileURL(environment: [String: String]) -> URL {
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0, isDirectory: true) }
            ?? URL(fileURLWithPath: environment["HOME"] ?? NSHomeDirectory(), isDirectory: true).appendingPathComponent(".config")
        return base.appendingPathComponent("flippio/config.json")
    }
}

/// The optional JSON config file, checked key by key against ``keys``.
///
/// A misspelled key is an error, not a silently ignored line: `"setleMs": 500` would otherwise
/// leave the default in force while its author believes otherwise. So is a value of the wrong
/// kind; each error names the key, what it accepts, and the nearest known key for a typo.
///
/// Adding a setting is one line in ``keys``, for example:
///
/// ```swift
/// .bool("stopApp") { $0.stopAppBeforePush = $1 },
/// ```
struct ConfigFile {
    /// Every key the file accepts, in the order the README documents them.
    static let keys: [ConfigKey] = [
        .path("workspace") { $0.workspace = URL(fileURLWithPath: $1, isDirectory: true) },
        .milliseconds("settleMs") { $0.settleWindow = .milliseconds($1) },
        .milliseconds("settleMaxMs") { $0.settleMaxWait = .milliseconds($1) },
        .bool("stopApp") { $0.stopAppBeforePush = $1 },
        .bool("notifications") { $0.desktopNotifications = $1 },
        .bool("restartApp") { $0.restartApp = $1 },
        .bool("follow") { $0.follow = $1 },
        .milliseconds("followPollMs") { $0.followPollInterval = .milliseconds(max(100, $1)) },
        .milliseconds("iosFollowMs") { $0.iosFollowInterval = $1 == 0 ? .zero : .milliseconds(max(100, $1)) },
        .positiveInt("poolSize") { $0.poolCapacity = $1 },
        .logLevel("logLevel") { $0.logLevel = $1 },
        .toolPaths("tools"),
    ]

    /// The file's top-level object, as read.
    var values: [String: ConfigValue]
    /// Where it was read from (named in errors).
    var url: URL

    /// The config file, or nil when there is none.
    ///
    /// - throws: ``FlippioError/Code/invalidConfiguration`` when it is not a JSON object.
    static func load(environment: [String: String]) throws -> ConfigFile? {
        let url = FlippioConfiguration.configFileURL(environment: environment)
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        let value: ConfigValue
        do {
            value = try JSONDecoder().decode(ConfigValue.self, from: data)
        } catch {
            throw FlippioError(.invalidConfiguration, "The config file \(url.path) is not valid JSON.",
                               remedy: "Fix it or remove it; every setting has a default. It holds one object, e.g. {\"settleMs\": 500}.",
                               context: ["file": url.path])
        }
        guard case .object(let values) = value else {
            throw FlippioError(.invalidConfiguration, "The config file \(url.path) holds \(value.kind), not an object.",
                               remedy: "Write one JSON object, e.g. {\"settleMs\": 500}.", context: ["file": url.path])
        }
        return ConfigFile(values: values, url: url)
    }

    /// Sets every key of the file on `config`.
    ///
    /// - throws: ``FlippioError/Code/invalidConfiguration`` for the first unknown key (sorted by
    ///   name) or a value its key does not accept.
    func apply(to config: inout FlippioConfiguration) throws {
        for name in values.keys.sorted() {
            guard let key = Self.keys.first(where: { $0.name == name }) else {
                throw unknownKey(name, among: Self.keys.map(\.name))
            }
            try key.apply(values[name]!, &config, self)
        }
    }

    /// The error for a key no setting has, with the nearest known one when it looks like a typo.
    func unknownKey(_ name: String, among known: [String]) -> FlippioError {
        let nearest = known.min { Self.distance($0.lowercased(), name.lowercased()) < Self.distance($1.lowercased(), name.lowercased()) }
        let guess = nearest.flatMap { Self.distance($0.lowercased(), name.lowercased()) <= max(2, name.count / 4) ? $0 : nil }
        return FlippioError(.invalidConfiguration,
                            "The config file \(url.path) has an unknown key \"\(name)\"" + (guess.map { " (did you mean \"\($0)\"?)" } ?? "") + ".",
                            remedy: "It accepts: \(known.joined(separator: ", ")). See the Configuration table in README.md.",
                            context: ["file": url.path, "key": name])
    }

    /// The error for a value `key` does not accept.
    func badValue(_ key: String, _ value: ConfigValue, accepts: String) -> FlippioError {
        FlippioError(.invalidConfiguration, "The config file \(url.path) sets \"\(key)\" to \(value), which it does not accept.",
                     remedy: "\"\(key)\" accepts \(accepts).", context: ["file": url.path, "key": key])
    }

    /// Levenshtein distance: how many one-character edits turn `a` into `b`.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var diagonal = row[0]
            row[0] = i
            for j in 1...b.count {
                let above = row[j]
                row[j] = min(above + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1))
                diagonal = above
            }
        }
        return row[b.count]
    }
}

// MARK: - Keys

/// One key of the config file: its name, what it accepts (said in errors), and how its value
/// sets the configuration. Build keys with the factories (``bool(_:_:)``, ``milliseconds(_:_:)``...).
struct ConfigKey: Sendable {
    let name: String
    let accepts: String
    /// Sets the value on the configuration; throws the file's error for a value it does not accept.
    let apply: @Sendable (ConfigValue, inout FlippioConfiguration, ConfigFile) throws -> Void

    /// A key whose value passes `convert` (nil: not accepted) before `set` receives it.
    static func make<T>(_ name: String, accepts: String, _ convert: @escaping @Sendable (ConfigValue, ConfigFile) -> T?,
                        _ set: @escaping @Sendable (inout FlippioConfiguration, T) -> Void) -> ConfigKey {
        ConfigKey(name: name, accepts: accepts) { value, config, file in
            guard let converted = convert(value, file) else { throw file.badValue(name, value, accepts: accepts) }
            set(&config, converted)
        }
    }

    /// `true` or `false`.
    static func bool(_ name: String, _ set: @escaping @Sendable (inout FlippioConfiguration, Bool) -> Void) -> ConfigKey {
        make(name, accepts: "true or false", { value, _ in if case .bool(let b) = value { b } else { nil } }, set)
    }

    /// A whole number of milliseconds, 0...3,600,000.
    static func milliseconds(_ name: String, _ set: @escaping @Sendable (inout FlippioConfiguration, Int) -> Void) -> ConfigKey {
        make(name, accepts: "a whole number of milliseconds from 0 to 3600000, e.g. 300",
             { value, _ in if case .int(let n) = value, (0...3_600_000).contains(n) { n } else { nil } }, set)
    }

    /// A whole number of at least 1.
    static func positiveInt(_ name: String, _ set: @escaping @Sendable (inout FlippioConfiguration, Int) -> Void) -> ConfigKey {
        make(name, accepts: "a whole number of at least 1", { value, _ in if case .int(let n) = value, n >= 1 { n } else { nil } }, set)
    }

    /// A non-empty path; a leading `~` means `$HOME`.
    static func path(_ name: String, _ set: @escaping @Sendable (inout FlippioConfiguration, String) -> Void) -> ConfigKey {
        ConfigKey(name: name, accepts: "a path (a leading ~ is your home folder)") { value, config, file in
            guard case .string(let text) = value, !text.isEmpty else {
                throw file.badValue(name, value, accepts: "a path (a leading ~ is your home folder)")
            }
            set(&config, FlippioConfiguration.expandTilde(text, environment: config.environment))
        }
    }

    /// A log level name.
    static func logLevel(_ name: String, _ set: @escaping @Sendable (inout FlippioConfiguration, String) -> Void) -> ConfigKey {
        let levels = FlippioConfiguration.logLevels
        return make(name, accepts: "one of " + levels.joined(separator: ", "), { value, _ in
            if case .string(let text) = value, levels.contains(text.lowercased()) { text.lowercased() } else { nil }
        }, set)
    }

    /// An object of tool name → path (`{"adb": "~/Android/Sdk/platform-tools/adb"}`).
    static func toolPaths(_ name: String) -> ConfigKey {
        let tools = FlippioConfiguration.toolEnvironmentVariables.keys.sorted()
        let accepts = "an object of tool paths with keys " + tools.joined(separator: ", ")
        return ConfigKey(name: name, accepts: accepts) { value, config, file in
            guard case .object(let entries) = value else { throw file.badValue(name, value, accepts: accepts) }
            for tool in entries.keys.sorted() {
                guard tools.contains(tool) else { throw file.unknownKey("\(name).\(tool)", among: tools.map { "\(name).\($0)" }) }
                guard case .string(let path) = entries[tool]!, !path.isEmpty else {
                    throw file.badValue("\(name).\(tool)", entries[tool]!, accepts: "the path of the \(tool) executable")
                }
                config.toolPaths[tool] = FlippioConfiguration.expandTilde(path, environment: config.environment)
            }
        }
    }
}

/// A JSON value as the config file holds it, before a key checks it. `true` is never a number
/// and `1` never a boolean, so `"stopApp": 0` is reported instead of guessed at.
enum ConfigValue: Decodable, Sendable, CustomStringConvertible {
    case bool(Bool), int(Int), number(Double), string(String), array([ConfigValue]), object([String: ConfigValue]), null

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let b = try? container.decode(Bool.self) { self = .bool(b) }
        else if let n = try? container.decode(Int.self) { self = .int(n) }
        else if let d = try? container.decode(Double.self) { self = .number(d) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else if let a = try? container.decode([ConfigValue].self) { self = .array(a) }
        else { self = .object(try container.decode([String: ConfigValue].self)) }
    }

    /// The value as JSON text (shortened), for error messages.
    var description: String {
        let text: String = switch self {
        case .bool(let b): String(b)
        case .int(let n): String(n)
        case .number(let d): String(d)
        case .string(let s): "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case .array: "an array"
        case .object: "an object"
        case .null: "null"
        }
        return text.count > 60 ? String(text.prefix(57)) + "..." : text
    }

    /// "an object", "a string"...: what kind of value it is.
    var kind: String {
        switch self {
        case .bool: "a boolean"
        case .int, .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        case .null: "null"
        }
    }
}
