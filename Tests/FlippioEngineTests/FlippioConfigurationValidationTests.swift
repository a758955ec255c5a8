import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// Typos and bad values in the config file and the environment are errors that name the key and
/// what it accepts; `~` means `$HOME`.
@Suite struct FlippioConfigurationValidationTests {
    let home: TemporaryDirectory
    var environment: [String: String] {
        ["HOME": home.url.path, "XDG_CONFIG_HOME": home.child("config").path, "XDG_DATA_HOME": home.child("data").path]
    }

    init() throws { home = try TemporaryDirectory("config") }

    func writeConfig(_ text: String) throws {
        let url = FlippioConfiguration.configFileURL(environment: environment)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    func loadError(_ extra: [String: String] = [:]) -> FlippioError? {
        #expect(throws: FlippioError.self) { try FlippioConfiguration.load(environment: environment.merging(extra) { $1 }) }
    }

    @Test func everyKey_isApplied_andTildeMeansHome() throws {
        try writeConfig("""
            {"workspace": "~/dbs", "settleMs": 500, "settleMaxMs": 2000, "stopApp": false, "poolSize": 8,
             "logLevel": "Debug", "tools": {"adb": "~/sdk/adb", "afcclient": "/opt/afcclient"}}
            """)
        let config = try FlippioConfiguration.load(environment: environment)
        #expect(config.workspace.path == home.url.path + "/dbs")
        #expect(config.settleWindow == .milliseconds(500))
        #expect(config.settleMaxWait == .milliseconds(2000))
        #expect(config.stopAppBeforePush == false)
        #expect(config.poolCapacity == 8)
        #expect(config.logLevel == "debug")
        #expect(config.toolPaths == ["adb": home.url.path + "/sdk/adb", "afcclient": "/opt/afcclient"])
        // The environment wins over the file, and expands ~ too.
        let overridden = try FlippioConfiguration.load(environment: environment.merging(["FLIPPIO_WORKSPACE": "~/other", "FLIPPIO_ADB": "~/adb2"]) { $1 })
        #expect(overridden.workspace.path == home.url.path + "/other")
        #expect(overridden.toolPaths["adb"] == home.url.path + "/adb2")
    }

    @Test func unknownKey_isAnError_withTheNearestKey() throws {
        try writeConfig(#"{"setleMs": 500}"#)
        let error = loadError()
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("unknown key \"setleMs\" (did you mean \"settleMs\"?)") == true, "\(error?.message ?? "")")
        #expect(error?.remedy?.contains("workspace, settleMs, settleMaxMs, stopApp, notifications, restartApp, follow, followPollMs, iosFollowMs, poolSize, logLevel, tools") == true)

        try writeConfig(#"{"tools": {"adbb": "/x"}}"#)
        #expect(loadError()?.message.contains("\"tools.adbb\" (did you mean \"tools.adb\"?)") == true)
        try writeConfig(#"{"completelyDifferent": 1}"#)
        #expect(loadError()?.message.contains("did you mean") == false)
    }

    @Test func wrongValues_nameTheKeyAndWhatItAccepts() throws {
        let cases: [(String, String, String)] = [
            (#"{"settleMs": "500"}"#, #""settleMs" to "500""#, "a whole number of milliseconds from 0 to 3600000"),
            (#"{"settleMs": 99999999}"#, #""settleMs" to 99999999"#, "from 0 to 3600000"),
            (#"{"stopApp": 0}"#, #""stopApp" to 0"#, "true or false"),
            (#"{"poolSize": 0}"#, #""poolSize" to 0"#, "at least 1"),
            (#"{"logLevel": "loud"}"#, #""logLevel" to "loud""#, "trace, debug, info, notice, warning, error, critical"),
            (#"{"workspace": 3}"#, #""workspace" to 3"#, "a path"),
            (#"{"tools": ["adb"]}"#, #""tools" to an array"#, "keys adb, afcclient"),
            (#"{"tools": {"adb": 1}}"#, #""tools.adb" to 1"#, "the path of the adb executable"),
        ]
        for (file, message, accepts) in cases {
            try writeConfig(file)
            let error = loadError()
            #expect(error?.code == .invalidConfiguration, "\(file)")
            #expect(error?.message.contains(message) == true, "\(file): \(error?.message ?? "")")
            #expect(error?.remedy?.contains(accepts) == true, "\(file): \(error?.remedy ?? "")")
        }
        try writeConfig("[1, 2]")
        #expect(loadError()?.message.contains("holds an array, not an object") == true)
        try writeConfig("{\"settleMs\": 5")
        #expect(loadError()?.message.contains("is not valid JSON") == true)
    }

    @Test func badEnvironmentValues_nameTheVariableAndWhatItAccepts() throws {
        let cases: [(String, String, String)] = [
            ("FLIPPIO_SETTLE_MS", "soon", "between 0 and 3600000"),
            ("FLIPPIO_STOP_APP", "maybe", "1, true, yes, on or 0, false, no, off"),
            ("FLIPPIO_POOL_SIZE", "-1", "at least 1"),
            ("FLIPPIO_LOG_LEVEL", "loud", "trace, debug"),
            ("FLIPPIO_RETRY_ATTEMPTS", "0", "from 1 to 100"),
        ]
        for (variable, value, accepts) in cases {
            let error = loadError([variable: value])
            #expect(error?.code == .invalidConfiguration, "\(variable)")
            #expect(error?.message.hasPrefix("\(variable)=\(value)") == true, "\(error?.message ?? "")")
            #expect(error?.remedy?.contains(accepts) == true, "\(variable): \(error?.remedy ?? "")")
        }
    }

    @Test func tildeExpansion_onlyAtTheStart() {
        let env = ["HOME": "/home/ana"]
        #expect(FlippioConfiguration.expandTilde("~", environment: env) == "/home/ana")
        #expect(FlippioConfiguration.expandTilde("~/a/b", environment: env) == "/home/ana/a/b")
        #expect(FlippioConfiguration.expandTilde("/x/~/y", environment: env) == "/x/~/y")
        #expect(FlippioConfiguration.expandTilde("~bob/x", environment: env) == "~bob/x")
    }
}
