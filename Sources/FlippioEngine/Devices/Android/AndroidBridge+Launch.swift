import Foundation

// MARK: - Starting an app (`--restart-app`)

extension AndroidBridge {
    /// The launcher intent: what the home screen sends when the user taps the app's icon.
    static let launcherIntent = ["-a", "android.intent.action.MAIN", "-c", "android.intent.category.LAUNCHER"]

    /// Starts the app's launcher activity, as tapping its icon would.
    ///
    /// Two device calls: `cmd package resolve-activity --brief` with the launcher intent finds the
    /// activity (`com.example.notes/.MainActivity`), then `am start -n` starts exactly that one. The
    /// usual alternative, `monkey -p PKG -c android.intent.category.LAUNCHER 1`, also works but
    /// injects an input event, prints a page of noise and says nothing useful when the app has no
    /// launcher activity. `cmd package` exists since Android 7.
    ///
    /// - returns: true once `am start` accepted the intent.
    /// - throws: ``FlippioError`` with code `app-not-launchable` when the app has no launcher activity
    ///   (`No activity found`) or `am start` reports an error (`Error: Activity class … does not
    ///   exist.`); the usual adb errors (`device-offline`, `unknown-package`, ...).
    public func startApp(deviceID: String, appID: String) async throws -> Bool {
        try Self.checkSerial(deviceID)
        try Self.checkPackage(appID, serial: deviceID)
        let subject = AndroidErrors.Subject(serial: deviceID, package: appID)
        let resolved = try await shellChecked(
            deviceID, (["cmd", "package", "resolve-activity", "--brief"] + Self.launcherIntent + [appID]).joined(separator: " "),
            subject: subject)
        let component = try Self.launcherComponent(resolved.stdoutText, package: appID, serial: deviceID)
        // Quoted: an inner class as launcher (`Outer$Main`) would otherwise meet the device shell's `$`.
        let started = try await shell(deviceID, DeviceShellQuoting.join(["am", "start", "-n", component] + Self.launcherIntent),
                                      subject: subject)
        let output = started.stdoutText + started.stderrText
        if let error = output.split(separator: "\n").first(where: { $0.hasPrefix("Error") && !$0.hasPrefix("Error type") }) {
            throw FlippioError(.appNotLaunchable, "am start could not start \(component) on \(deviceID): \(AndroidErrors.excerpt(String(error)))",
                               remedy: "Start \(appID) by hand, or push without --restart-app.",
                               context: ["serial": deviceID, "package": appID, "component": component])
        }
        guard started.succeeded else {
            throw failure(started, ["shell", "am", "start", "-n", component], serial: deviceID, subject)
        }
        return true
    }

    /// The component (`package/class`) from `cmd package resolve-activity --brief` output: its last
    /// line, checked to name the package and to hold only characters of Java class names, since it
    /// goes back into a device shell command.
    static func launcherComponent(_ output: String, package: String, serial: String) throws -> String {
        let lines = output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard let last = lines.last, last != "No activity found" else {
            throw FlippioError(.appNotLaunchable, "\(package) on \(serial) has no launcher activity, so it cannot be started after a push.",
                               remedy: "Start the app by hand, or push without --restart-app.",
                               context: ["serial": serial, "package": package])
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._$/")
        guard last.hasPrefix(package + "/"), last.count > package.count + 1, last.allSatisfy(allowed.contains) else {
            throw FlippioError(.unexpectedOutput, "cmd package resolve-activity printed '\(AndroidErrors.excerpt(last))' for \(package) on \(serial).",
                               remedy: "Start the app by hand, or push without --restart-app.",
                               context: ["serial": serial, "package": package])
        }
        return last
    }
}
