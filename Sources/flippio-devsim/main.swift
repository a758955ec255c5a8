import ArgumentParser
import DeviceSimulator
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `flippio-devsim --port PORT --devices DIR`: an adb server with simulated devices, for `adb -P PORT`.
@main
struct DevsimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flippio-devsim",
        abstract: "An emulated Android device (adb server protocol) that the real adb client talks to.",
        discussion: """
            Serves one device per DIR/SERIAL/ that holds a device.json; DIR/SERIAL/fs/ is the device's /.
            Then: adb -P PORT devices -l. The first line of output is `listening on 127.0.0.1:PORT`.
            """)

    @Option(help: "TCP port on 127.0.0.1 (0 picks a free port).")
    var port: Int = 5037

    @Option(help: "Folder with one SERIAL/ folder per device (created if missing).")
    var devices: String

    @Flag(help: "Log every request to stderr.")
    var verbose = false

    @Flag(help: "Exit when a client sends host:kill (adb kill-server). By default the simulator keeps serving.")
    var exitOnKill = false

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        // A parent (a test runner) may have blocked or ignored SIGTERM; we must die on it.
        signal(SIGTERM, SIG_DFL)
        signal(SIGINT, SIG_DFL)
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGTERM)
        sigaddset(&unblock, SIGINT)
        sigprocmask(SIG_UNBLOCK, &unblock, nil)
        let verbose = self.verbose
        let exitOnKill = self.exitOnKill
        var logger: (@Sendable (String) -> Void)?
        if verbose {
            logger = { @Sendable line in FileHandle.standardError.write(Data(("devsim: " + line + "\n").utf8)) }
        }
        let onKill: @Sendable () -> Void = { if exitOnKill { Glibc.exit(0) } }
        let server = AdbServer(
            devicesDirectory: URL(fileURLWithPath: devices, isDirectory: true),
            port: port, log: logger, onKill: onKill)
        let bound = try server.start()
        print("listening on 127.0.0.1:\(bound)")
        fflush(nil)
        // Serve until killed (SIGTERM/SIGINT end the process).
        while true { sleep(3600) }
    }
}
