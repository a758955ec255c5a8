import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

// MARK: - Starting an app

/// ``AndroidBridge/startApp(deviceID:appID:)`` through the real `adb` against flippio-devsim, whose
/// shell answers `cmd package resolve-activity` and `am start` as Android 7+ does.
extension AndroidBridgeDevsimTests {
    func shellCommands() throws -> [String] {
        try sim.requests().filter { $0.serial == Self.serial && $0.service == "shell" }.compactMap(\.command)
    }

    @Test("startApp resolves the launcher activity, then starts exactly that one")
    func startsLauncherActivity() async throws {
        try sim.clearRequests()
        #expect(try await bridge().startApp(deviceID: Self.serial, appID: Self.pkg))
        let commands = try shellCommands()
        #expect(commands == [
            "cmd package resolve-activity --brief -a android.intent.action.MAIN -c android.intent.category.LAUNCHER com.example.notes",
            "am start -n com.example.notes/.MainActivity -a android.intent.action.MAIN -c android.intent.category.LAUNCHER",
        ], "\(commands)")
    }

    @Test("an app without a launcher activity is app-not-launchable, and am start never runs")
    func noLauncher() async throws {
        // A service-only app: nothing for the home screen to start.
        var config = try device.config()
        config.packages["com.example.locked"]?.launcher = ""
        try device.writeConfig(config)
        try sim.clearRequests()
        let error = await #expect(throws: FlippioError.self) {
            try await bridge().startApp(deviceID: Self.serial, appID: "com.example.locked")
        }
        #expect(error?.code == .appNotLaunchable)
        #expect(error?.isRetryable == false)
        #expect(error?.remedy?.contains("--restart-app") == true)
        #expect(try shellCommands().allSatisfy { !$0.hasPrefix("am start") })
    }

    @Test("resolve-activity output: the component on the last line, checked to name the package")
    func launcherComponentParsing() throws {
        let brief = "priority=0 preferredOrder=0 match=0x108000 specificIndex=-1 isDefault=false\ncom.example.notes/.MainActivity\n"
        #expect(try AndroidBridge.launcherComponent(brief, package: Self.pkg, serial: Self.serial) == "com.example.notes/.MainActivity")
        #expect(try AndroidBridge.launcherComponent("com.example.notes/com.example.notes.ui.Home$Launcher\r\n", package: Self.pkg, serial: Self.serial)
            == "com.example.notes/com.example.notes.ui.Home$Launcher")
        #expect(throws: FlippioError.self) { try AndroidBridge.launcherComponent("No activity found\n", package: Self.pkg, serial: Self.serial) }
        #expect(throws: FlippioError.self) { try AndroidBridge.launcherComponent("", package: Self.pkg, serial: Self.serial) }
        #expect(throws: FlippioError.self) { try AndroidBridge.launcherComponent("com.evil/.Main\n", package: Self.pkg, serial: Self.serial) }
        #expect(throws: FlippioError.self) { try AndroidBridge.launcherComponent("com.example.notes/.Main;reboot\n", package: Self.pkg, serial: Self.serial) }
    }
}
