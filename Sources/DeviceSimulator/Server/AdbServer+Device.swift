import Foundation
import Glibc

/// Device services: `shell:` (raw and shell protocol v2) and `exec:`.
extension AdbServer {
    func handleDevice(_ service: String, selection: Selection, connection: SocketConnection) throws {
        let device = selection.device
        let serial = device.serial

        if service.hasPrefix("shell:") || service.hasPrefix("shell,") {
            // shell[,arg,arg...]:command — args: v2, TERM=..., raw, pty.
            let colon = service.firstIndex(of: ":") ?? service.endIndex
            let args = service[service.index(service.startIndex, offsetBy: 5)..<colon].split(separator: ",")
            let command = colon < service.endIndex ? String(service[service.index(after: colon)...]) : ""
            registry.log(serial: serial, service: "shell", command: command)
            guard hang(selection, connection, command: command) else { return }
            try connection.sendOkay()
            if args.contains("v2") {
                try runShellProtocol(command, device: device, connection: connection, replyLatencyMs: selection.faults.replyLatencyMs)
            } else {
                try runRaw(command, device: device, connection: connection, dropping: false, replyLatencyMs: selection.faults.replyLatencyMs)
            }
            return
        }
        if service.hasPrefix("exec:") {
            let command = String(service.dropFirst("exec:".count))
            registry.log(serial: serial, service: "exec", command: command)
            guard hang(selection, connection, command: command) else { return }
            try connection.sendOkay()
            let dropping = registry.takeDropTransfer(serial: serial)
            try runRaw(command, device: device, connection: connection, dropping: dropping, replyLatencyMs: selection.faults.replyLatencyMs)
            return
        }
        if service == "sync:" || service.hasPrefix("sync:") {
            guard hang(selection, connection, command: nil) else { return }
            try connection.sendOkay()
            try runSync(device: device, connection: connection)
            return
        }
        registry.log(serial: serial, service: service)
        try connection.sendFail("closed")
        connection.finish()
    }

    /// The `hangSeconds` fault: the request was accepted, the answer comes late (or never, if the
    /// client gives up first), or as soon as `faults.json` no longer asks for it. With
    /// `hangMatching`, only shell/exec commands containing that text hang. False when the client
    /// left or the server stopped.
    private func hang(_ selection: Selection, _ connection: SocketConnection, command: String?) -> Bool {
        let faults = selection.faults
        guard faults.hangSeconds > 0 else { return true }
        if let pattern = faults.hangMatching, !(command ?? "").contains(pattern) { return true }
        let deadline = Date().addingTimeInterval(faults.hangSeconds)
        while Date() < deadline {
            guard pause(seconds: min(0.1, deadline.timeIntervalSinceNow), connection: connection) else { return false }
            if !registry.isHanging(serial: selection.device.serial) { return true }
        }
        return !isStopped
    }

    /// The `replyLatencyMs` fault: waits before a command's answer ends; false when the client
    /// left or the server stopped meanwhile.
    private func replied(after milliseconds: Int, _ connection: SocketConnection) -> Bool {
        milliseconds <= 0 || pause(seconds: Double(milliseconds) / 1000, connection: connection)
    }

    private func makeShell(_ device: SimulatedDevice, _ connection: SocketConnection) -> DeviceShell {
        DeviceShell(device: device, user: .shell, cwd: "/", cancelled: { [weak self] in self?.isStopped ?? true },
                    hungUp: { connection.hungUp() })
    }

    /// Shell protocol v2: stdout and stderr as separate packets, then the exit status.
    private func runShellProtocol(_ command: String, device: SimulatedDevice, connection: SocketConnection, replyLatencyMs: Int) throws {
        let io = ShellIO(
            stdin: ShellPacketInput(socket: connection),
            stdout: ShellPacketSink(socket: connection, id: ShellPacketSink.stdout),
            stderr: ShellPacketSink(socket: connection, id: ShellPacketSink.stderr))
        let shell = makeShell(device, connection)
        let status = command.isEmpty ? try shell.sh([], io) : try shell.run(script: command, io: io)
        guard replied(after: replyLatencyMs, connection) else { return }
        try connection.write(ShellPacketSink.header(id: ShellPacketSink.exit, length: 1) + [UInt8(truncatingIfNeeded: status)])
        connection.finish()
    }

    /// `exec:` and protocol-less `shell:`: stdout and stderr in one byte stream, no exit status.
    private func runRaw(_ command: String, device: SimulatedDevice, connection: SocketConnection, dropping: Bool,
                        replyLatencyMs: Int) throws {
        var sink: OutputSink = SocketSink(socket: connection)
        if dropping { sink = DroppingSink(inner: sink, socket: connection) }
        let io = ShellIO(stdin: SocketInput(socket: connection), stdout: sink, stderr: sink)
        let shell = makeShell(device, connection)
        _ = command.isEmpty ? try shell.sh([], io) : try shell.run(script: command, io: io)
        guard replied(after: replyLatencyMs, connection) else { return }
        if dropping {
            // Nothing was written (empty output): still cut the transfer short.
            connection.abort()
            return
        }
        connection.finish()
    }
}
