// flippio-ios-standin: acts as the libimobiledevice tool it is named after (argv[0]'s basename):
// `idevice_id`, `ideviceinfo`, `ideviceinstaller`, `afcclient`, `ifuse` or `fusermount`, reproducing the real tools'
// output byte for byte (see Tests/FlippioEngineTests/Fixtures/ios/README.md for the versions).
//
// The "devices" live in the folder named by FLIPPIO_IOS_SIM_DIR:
//   DIR/UDID/device.json            the device (name, productVersion, state, network, apps)
//   DIR/UDID/containers/BUNDLE/     the app's container (Documents/, Library/, ...)
//   DIR/UDID/unplugged              when present, the device is not connected (usbmuxd does not list it)
//   DIR/UDID/faults.json            fault hooks (latencyMs, failNext/failMessage, hangSeconds, dropNextTransfer)
//   DIR/faults.json                 the same hooks for every call (e.g. `idevice_id -l`)
//   DIR/usbmuxd-down                when present, every tool fails as it does without usbmuxd
//   DIR/requests.jsonl              every call is appended here: {"time", "tool", "args"}
//   DIR/UDID/mounts                 mount points `ifuse` made for the device (one a line)
//   DIR/tools.json                  optional {"ideviceinstaller": "1.1.1" | "1.2.0"}
import Foundation
#if canImport(Glibc)
import Glibc
#endif

let invokedAs = URL(fileURLWithPath: CommandLine.arguments.first ?? "flippio-ios-standin").lastPathComponent
let arguments = Array(CommandLine.arguments.dropFirst())
/// What `--version` prints when no devices folder is set (the versions the stand-ins play by default).
let defaultVersions = [
    "idevice_id": "idevice_id 1.3.0", "ideviceinfo": "ideviceinfo 1.3.0",
    "ideviceinstaller": "ideviceinstaller 1.1.1", "afcclient": "afcclient 1.3.1 (readline)",
]

// fusermount needs no device (it only unmounts), and ifuse prints its version on stderr.
if invokedAs == "fusermount" { FuserMount().run(arguments) }
if invokedAs == "ifuse", arguments == ["--version"] || arguments == ["-V"] {
    Output.err("ifuse 1.1.3\n")
    Output.finish(0)
}

guard let simPath = ProcessInfo.processInfo.environment["FLIPPIO_IOS_SIM_DIR"], !simPath.isEmpty else {
    // Tool discovery checks each tool with `--version` and may not pass the devices folder on:
    // answer it as the real tools do.
    if arguments == ["--version"] || arguments == ["-v"], let version = defaultVersions[invokedAs] {
        Output.out(version + "\n")
        Output.finish(0)
    }
    Output.err("flippio-ios-standin: FLIPPIO_IOS_SIM_DIR is not set\n")
    Output.finish(2)
}
let sim = Simulator(root: URL(fileURLWithPath: simPath, isDirectory: true))
sim.logRequest(tool: invokedAs, args: arguments)

switch invokedAs {
case "idevice_id": IdeviceID(sim: sim).run(arguments)
case "ideviceinfo": IdeviceInfo(sim: sim).run(arguments)
case "ideviceinstaller": IdeviceInstaller(sim: sim).run(arguments)
case "afcclient": AFCClient(sim: sim).run(arguments)
case "ifuse": IFuse(sim: sim).run(arguments)
default:
    Output.err("flippio-ios-standin: unknown tool name '\(invokedAs)' (link me as idevice_id, ideviceinfo, ideviceinstaller, afcclient, ifuse or fusermount)\n")
    Output.finish(2)
}
