import Foundation

/// Turns what `adb` and the device printed into ``FlippioError`` codes.
///
/// `adb` reports most failures as text: its own (`error: device offline`, `error: device 'X' not
/// found`, `cannot connect to daemon`) on stderr with exit status 1, and the device's (`run-as:
/// package not debuggable: P`, `cat: F: No such file or directory`) on stderr with the remote
/// exit status, or inside the byte stream for `exec-out`. The texts are those of adb 29 and
/// toybox; matching is case-insensitive.
enum AndroidErrors {
    /// What a failing call was about, for the message and the error's context.
    struct Subject: Sendable {
        var serial: String?
        var package: String?
        var path: String?

        init(serial: String? = nil, package: String? = nil, path: String? = nil) {
            self.serial = serial
            self.package = package
            self.path = path
        }

        var context: [String: String] {
            var context: [String: String] = [:]
            if let serial { context["serial"] = serial }
            if let package { context["package"] = package }
            if let path { context["path"] = path }
            return context
        }

        /// "device S", for messages.
        var device: String { serial.map { "device \($0)" } ?? "the device" }
        var app: String { package.map { "app \($0)" } ?? "the app" }
        var file: String { path ?? "the file" }
    }

    // MARK: - Remedies

    static let unauthorizedRemedy = "Unlock the device and accept the 'Allow USB debugging' prompt; if none appears, revoke USB debugging authorizations and reconnect."
    static let offlineRemedy = "Reconnect the cable or run `adb reconnect offline`."
    static let connectingRemedy = "Wait a few seconds; if the device shows an 'Allow USB debugging' prompt, accept it."
    static let notDebuggableRemedy = "Install a debuggable build (android:debuggable=true / a debug variant), or use an emulator image with root."
    static let serverRemedy = "Run `adb start-server` (and check ANDROID_ADB_SERVER_PORT / ADB_SERVER_SOCKET if you use a non-default server)."
    static let noPermissionsRemedy = "Add a udev rule for the device (and join the plugdev group), then reconnect it; see https://developer.android.com/studio/run/device."
    static let otherModeRemedy = "Boot the device into Android (for example `adb reboot`)."
    static let transientRemedy = "Check the cable and the device; flippio retries by itself."

    /// The remedy shown beside a device in `adb devices` state `rawState`, nil for a ready device.
    static func remedy(forDeviceState rawState: String) -> String? {
        switch rawState {
        case "device": nil
        case "unauthorized": unauthorizedRemedy
        case "offline": offlineRemedy
        case "authorizing", "connecting": connectingRemedy
        case let state where state.hasPrefix("no permissions"): noPermissionsRemedy
        case "recovery", "sideload", "bootloader", "rescue", "host": otherModeRemedy
        default: "Check the device with `adb devices -l`."
        }
    }

    // MARK: - Recognising texts

    /// The error that `text` (adb's or the device's output) names, or nil when it names none.
    ///
    /// adb's own failures (device state, server, transport) are checked first: they explain every
    /// other symptom of the same call.
    static func recognise(_ text: String, _ subject: Subject) -> FlippioError? {
        adbLevel(text, subject) ?? deviceLevel(text, subject)
    }

    /// Failures of adb itself: the device's state, the server, the transport.
    static func adbLevel(_ text: String, _ s: Subject) -> FlippioError? {
        let t = text.lowercased()
        let ctx = s.context
        if t.contains("device unauthorized") {
            return FlippioError(.deviceUnauthorized, "\(s.device.capitalizedFirst) has not authorized this computer for USB debugging.",
                                remedy: unauthorizedRemedy, context: ctx)
        }
        if t.contains("device still authorizing") || t.contains("device still connecting") {
            return FlippioError(.deviceConnecting, "\(s.device.capitalizedFirst) is still connecting.", remedy: connectingRemedy, context: ctx)
        }
        if t.contains("device offline") {
            return FlippioError(.deviceOffline, "\(s.device.capitalizedFirst) is offline.", remedy: offlineRemedy, context: ctx)
        }
        if t.contains("more than one device") || t.contains("more than one emulator") {
            return FlippioError(.deviceAmbiguous, "More than one device is connected and no serial was given.",
                                remedy: "Name the device by its serial (see `flippio devices`).", context: ctx)
        }
        if t.contains("no devices/emulators found") || t.contains("no devices found") || t.contains("no emulators found")
            || (t.contains("device '") && t.contains("' not found")) || t.contains("device not found") {
            return FlippioError(.deviceNotFound, "\(s.device.capitalizedFirst) is not connected.",
                                remedy: "Connect the device and check that `adb devices` lists it.", context: ctx)
        }
        if t.contains("cannot connect to daemon") || t.contains("failed to start daemon") || t.contains("cannot start server")
            || t.contains("connection refused") || t.contains("failed to check server version") {
            return FlippioError(.adbServerUnavailable, "The adb server is not reachable.", remedy: serverRemedy, context: ctx)
        }
        if t.contains("connection reset") || t.contains("failed to read copy response") || t.contains("error: closed")
            || t.contains("connect failed: closed") || t.contains("broken pipe") || t.contains("failed to read data")
            || t.contains("unexpected eof") || t.contains("couldn't read from device") {
            return FlippioError(.connectionReset, "The connection to \(s.device) broke during the transfer.",
                                remedy: transientRemedy, context: ctx)
        }
        if t.contains("protocol fault") {
            return FlippioError(.protocolFault, "adb reported a protocol fault talking to \(s.device).", remedy: transientRemedy, context: ctx)
        }
        return nil
    }

    /// Failures reported by the device: run-as, missing files, permissions.
    static func deviceLevel(_ text: String, _ s: Subject) -> FlippioError? {
        let t = text.lowercased()
        let ctx = s.context
        if t.contains("package not debuggable") {
            return FlippioError(.appNotDebuggable, "The \(s.app) on \(s.device) is not debuggable, so run-as cannot read its files.",
                                remedy: notDebuggableRemedy, context: ctx)
        }
        if t.contains("run-as: unknown package") || t.contains("unknown package:") {
            return FlippioError(.unknownPackage, "The \(s.app) is not installed on \(s.device).",
                                remedy: "Check the package name with `flippio apps \(s.serial ?? "DEVICE")`.", context: ctx)
        }
        if t.contains("no such file or directory") {
            return FlippioError(.noSuchFile, "\(s.file) does not exist on \(s.device).",
                                remedy: "List the app's databases again with `flippio dbs \(s.serial ?? "DEVICE") \(s.package ?? "APP")`.",
                                context: ctx)
        }
        if t.contains("permission denied") || t.contains("operation not permitted") {
            return FlippioError(.permissionDenied, "Permission denied for \(s.file) on \(s.device).",
                                remedy: "Check that the file belongs to the \(s.app); files outside the app's data need a rooted device.",
                                context: ctx)
        }
        if t.contains("no space left on device") {
            return FlippioError(.toolFailed, "\(s.device.capitalizedFirst) has no space left for \(s.file).",
                                remedy: "Free some storage on the device; the edit stays local until then.", context: ctx)
        }
        return nil
    }

    // MARK: - Results

    /// The error for a failed or timed-out call: a timeout, a recognised text, or a generic
    /// ``FlippioError/Code/toolFailed`` carrying an excerpt of the output.
    static func failure(_ result: ProcessResult, _ command: ProcessCommand, _ subject: Subject) -> FlippioError {
        if result.timedOut { return timedOut(command, subject) }
        let text = result.stderrText + "\n" + String(decoding: result.stdout.prefix(4096), as: UTF8.self)
        if let error = recognise(text, subject) { return error }
        var context = subject.context
        context["command"] = command.commandLine
        context["status"] = String(result.status)
        context["output"] = excerpt(text)
        return FlippioError(.toolFailed, "`\(commandSummary(command))` failed on \(subject.device) with status \(result.status): \(excerpt(text)).",
                            remedy: "Run the command by hand to see what the device says.", context: context)
    }

    static func timedOut(_ command: ProcessCommand, _ subject: Subject) -> FlippioError {
        var context = subject.context
        context["command"] = command.commandLine
        context["timeout"] = "\(command.timeout)"
        return FlippioError(.timedOut, "`\(commandSummary(command))` did not finish within \(describe(command.timeout)) on \(subject.device); it was stopped.",
                            remedy: "Check that the device answers (`adb -s \(subject.serial ?? "SERIAL") shell true`); flippio retries by itself.",
                            context: context)
    }

    /// The command line without the adb path, short enough for a message.
    static func commandSummary(_ command: ProcessCommand) -> String {
        let line = (["adb"] + command.arguments).joined(separator: " ")
        return line.count > 300 ? String(line.prefix(300)) + "…" : line
    }

    /// The first meaningful line of `text`, control characters removed, at most 200 characters.
    static func excerpt(_ text: String) -> String {
        let line = text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .first { !$0.isEmpty } ?? "no output"
        let clean = String(String.UnicodeScalarView(line.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }))
        return clean.count > 200 ? String(clean.prefix(200)) + "…" : clean
    }

    static func describe(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return seconds == seconds.rounded() ? "\(Int(seconds)) s" : String(format: "%.1f s", seconds)
    }
}

fileprivate extension String {
    var capitalizedFirst: String { prefix(1).uppercased() + dropFirst() }
}
