import Foundation

/// Turns what the libimobiledevice tools print into ``FlippioError``s that name the fix.
///
/// The texts are the real tools' (libimobiledevice 1.3.0, ideviceinstaller 1.1.1, afcclient from
/// libimobiledevice after 1.3.0); see `Tests/FlippioEngineTests/Fixtures/ios/README.md`.
///
/// - Important: `afcclient` reports a failed command (`get`, `put`, `ls`...) with an `Error: ...`
///   line on stdout and exit status 0, and a refused house_arrest container with `ERROR: ...` on
///   stderr and status 0. Exit status alone never means success.
enum IOSErrors {
    /// The tools flippio runs, with the Debian package that ships each.
    enum Tool: String, Sendable, CaseIterable {
        case ideviceID = "idevice_id"
        case ideviceInfo = "ideviceinfo"
        case ideviceInstaller = "ideviceinstaller"
        case afcClient = "afcclient"
        case ifuse
        case fusermount

        var package: String {
            switch self {
            case .ideviceID, .ideviceInfo, .afcClient: "libimobiledevice-utils"
            case .ideviceInstaller: "ideviceinstaller"
            case .ifuse: "ifuse"
            case .fusermount: "fuse3"
            }
        }
    }

    static let pairRemedy = "pair it: `idevicepair pair` and tap Trust on the device (unlock it first)."
    static let unlockRemedy = "Unlock the device with its passcode and keep it unlocked while flippio works."
    static let usbmuxdRemedy = "start it: `sudo systemctl start usbmuxd` (Debian package usbmuxd), then reconnect the device."

    static func toolMissing(_ tool: Tool, path: String? = nil) -> FlippioError {
        let remedy = switch tool {
        case .afcClient, .ifuse:
            "Install an iOS file backend: " + IOSFileBackendKind.installAdvice + "; or name the tool with FLIPPIO_AFCCLIENT / FLIPPIO_IFUSE."
        default:
            "Install it: `sudo apt install \(tool.package)`."
        }
        return FlippioError(.toolNotFound, "`\(tool.rawValue)` was not found\(path.map { " at \($0)" } ?? "").",
                            remedy: remedy, context: ["tool": tool.rawValue, "package": tool.package])
    }

    static func notConnected(_ deviceID: String) -> FlippioError {
        FlippioError(.deviceNotFound, "The device \(deviceID) is not connected.",
                     remedy: "Connect it by USB (or join its Wi-Fi) and check `idevice_id -l`; flippio goes on when it is back.",
                     context: ["device": deviceID])
    }

    static func containerRefused(appID: String, deviceID: String) -> FlippioError {
        FlippioError(
            .iosContainerRefused,
            "The device \(deviceID) refused access to the files of \(appID) (house_arrest: InstallationLookupFailed).",
            remedy: "Install a development-signed build of \(appID) (Xcode, run on device), or set UIFileSharingEnabled in its Info.plist so flippio can use its Documents (`afcclient --documents`).",
            context: ["device": deviceID, "app": appID])
    }

    /// The failure an `ifuse` mount call reports, or nil when it mounted. ifuse 1.1.4 prints
    /// its reasons on stderr and exits with status 1 (the texts are in the stand-in, `IFuse.swift`).
    static func ifuseFailure(in result: ProcessResult, command: String, files: IOSAppFiles) -> FlippioError? {
        let context = ["tool": "ifuse", "command": command, "device": files.deviceID, "app": files.appID,
                       "output": String(result.stderrText.prefix(500))]
        if result.timedOut {
            return FlippioError(.timedOut, "`ifuse` did not mount \(files.appID) in time and was stopped.",
                                remedy: "Check the cable and that the device is unlocked; flippio tries again.", context: context)
        }
        guard !result.succeeded else { return nil }
        let stderr = result.stderrText
        let device = files.deviceID
        if stderr.contains("No device found") {
            return notConnected(device)
        }
        if stderr.contains("disable the password protection") {
            return FlippioError(.iosDeviceLocked, "The device \(device) is locked (ifuse could not pair with it).",
                                remedy: unlockRemedy, context: context)
        }
        if stderr.contains("dismiss the trust dialog") || stderr.contains("Failed to connect to lockdownd") {
            return FlippioError(.iosNotPaired, "The device \(device) did not accept a lockdown session (locked or not trusted).",
                                remedy: "Unlock it, then " + pairRemedy, context: context)
        }
        if stderr.contains("InstallationLookupFailed") || stderr.contains("document sharing service")
            || stderr.contains("house_arrest command") || stderr.contains("Failed to start AFC service") {
            return FlippioError(.iosContainerRefused, "house_arrest refused the files of \(files.appID) (\(command)).",
                                remedy: "Use a development-signed build, or set UIFileSharingEnabled and use --documents.",
                                context: context)
        }
        if stderr.contains("/dev/fuse") || stderr.contains("modprobe fuse") || stderr.contains("Operation not permitted") {
            return FlippioError(.toolFailed, "ifuse could not mount (FUSE is not usable here): \(stderr.split(whereSeparator: \.isNewline).first ?? "").",
                                remedy: "Install fuse3 and check /dev/fuse; under systemd, the unit must allow the setuid fusermount (see systemd/flippio-agent.service). Or use afcclient: FLIPPIO_IOS_BACKEND=afcclient.",
                                context: context)
        }
        let first = stderr.split(whereSeparator: \.isNewline).first.map(String.init) ?? "exit status \(result.status)"
        return FlippioError(.toolFailed, "`ifuse` failed (status \(result.status)): \(first)",
                            remedy: "Run `\(command)` by hand to see why; unmount leftovers with `fusermount -u`.", context: context)
    }

    /// The failure `result` reports, or nil when the call succeeded.
    ///
    /// - parameters:
    ///   - ignoring: `Error:` lines on stdout that are not failures for this call (e.g. `rm` of a
    ///     file that is already gone).
    static func failure(in result: ProcessResult, tool: Tool, command: String, deviceID: String?,
                        ignoring: (String) -> Bool = { _ in false }) -> FlippioError? {
        var context = ["tool": tool.rawValue, "command": command]
        if let deviceID { context["device"] = deviceID }
        let device = deviceID.map { "The device \($0)" } ?? "The device"
        if result.timedOut {
            return FlippioError(.timedOut, "`\(tool.rawValue)` did not finish in time and was stopped (\(command)).",
                                remedy: "Check the cable and that the device is unlocked; flippio tries again.", context: context)
        }
        let stderr = result.stderrText
        let errorLines = IOSOutputParser.errorLines(result.stdoutText)
        context["output"] = String((stderr + errorLines.joined(separator: "\n")).prefix(500))

        // usbmuxd and lockdownd: printed on stderr (ideviceinfo prints "Device ... not found" on stdout).
        if stderr.contains("Unable to retrieve device list") {
            return FlippioError(.usbmuxdUnavailable, "usbmuxd is not running, so no iOS device can be reached.",
                                remedy: usbmuxdRemedy, context: context)
        }
        if let lockdown = IOSOutputParser.lockdownError(stderr) {
            context["lockdown"] = String(lockdown.code)
            switch lockdown.code {
            case -17:
                return FlippioError(.iosDeviceLocked, "\(device) is locked (lockdownd: \(lockdown.message)).",
                                    remedy: unlockRemedy, context: context)
            case -18:
                return FlippioError(.iosNotPaired, "\(device) refused to trust this computer (lockdownd: \(lockdown.message)).",
                                    remedy: "Unplug and replug it, then " + pairRemedy, context: context)
            case -4, -5, -19, -20, -21, -29, -31:
                return FlippioError(.iosNotPaired, "\(device) is not paired with this computer (lockdownd: \(lockdown.message)).",
                                    remedy: pairRemedy, context: context)
            case -8:
                return FlippioError(.connectionReset, "The connection to \(deviceID ?? "the device") broke (lockdownd: \(lockdown.message)).",
                                    remedy: "Check the cable; flippio tries again.", context: context)
            default:
                return FlippioError(.toolFailed, "lockdownd refused the connection to \(deviceID ?? "the device"): \(lockdown.message) (\(lockdown.code)).",
                                    remedy: "Unplug and replug the device, unlock it and try again.", context: context)
            }
        }
        if stderr.contains("Could not connect to lockdownd") {
            // ideviceinstaller 1.1.1 does not say why; callers ask ideviceinfo for the reason.
            return FlippioError(.iosNotPaired, "\(device) did not accept a lockdown session (locked or not trusted).",
                                remedy: "Unlock it, then " + pairRemedy, context: context)
        }
        if stderr.contains("InstallationLookupFailed") || stderr.contains("document sharing service")
            || stderr.contains("house_arrest") {
            return FlippioError(.iosContainerRefused, "house_arrest refused the app's files (\(command)).",
                                remedy: "Use a development-signed build, or set UIFileSharingEnabled and use --documents.",
                                context: context)
        }
        if stderr.contains("No device found") || stderr.contains("No device with UDID")
            || errorLines.contains(where: { $0.hasSuffix("not found!") || $0.contains("No device found") }) {
            return FlippioError(.deviceNotFound, "\(device) is not connected.",
                                remedy: "Connect it by USB and check `idevice_id -l`; if no device shows at all, usbmuxd may not be running: " + usbmuxdRemedy,
                                context: context)
        }
        if let line = errorLines.first(where: { !ignoring($0) }) {
            if line.contains("Not found (8)") {
                return FlippioError(.noSuchFile, "No such file on \(deviceID ?? "the device"): \(line)", context: context)
            }
            if line.contains("Permission denied (10)") {
                return FlippioError(.permissionDenied, "Permission denied on \(deviceID ?? "the device"): \(line)",
                                    remedy: "flippio can only reach the app's own container or Documents.", context: context)
            }
            if line.contains("MUX error") || line.contains("Failed to write to device file") || line.contains("Failed to read from file") {
                return FlippioError(.connectionReset, "A transfer to or from \(deviceID ?? "the device") broke off: \(line)",
                                    remedy: "Check the cable; flippio tries again.", context: context)
            }
            return FlippioError(.toolFailed, "`\(tool.rawValue)` failed: \(line)", context: context)
        }
        if !result.succeeded {
            let first = stderr.split(whereSeparator: \.isNewline).first.map(String.init) ?? "exit status \(result.status)"
            return FlippioError(.toolFailed, "`\(tool.rawValue)` failed (status \(result.status)): \(first)", context: context)
        }
        if result.stdoutTruncated {
            return FlippioError(.outputTooLarge, "`\(tool.rawValue)` printed more than flippio reads (\(command)).", context: context)
        }
        return nil
    }
}
