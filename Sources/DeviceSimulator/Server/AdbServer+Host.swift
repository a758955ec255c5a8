import Foundation
import Glibc

/// Host services: what the adb server answers itself (versions, device lists, transport selection).
extension AdbServer {
    /// Which device a host request is about.
    enum Selector: Equatable {
        case any, usb, local
        case serial(String)
        case transportID(UInt64)

        var serial: String? {
            if case .serial(let s) = self { return s }
            return nil
        }
    }

    /// A selected device and the faults planned for this request.
    struct Selection {
        let device: SimulatedDevice
        let faults: DeviceRegistry.FaultPlan
    }

    // MARK: - Connection

    func serve(_ connection: SocketConnection) {
        do {
            while true {
                let request = try connection.readProtocolString()
                log("request: \(request)")
                guard let selection = try handleHost(request, connection) else { return }
                // The connection now talks to the device: exactly one device service follows.
                let service = try connection.readProtocolString()
                log("device \(selection.device.serial): \(service)")
                try handleDevice(service, selection: selection, connection: connection)
                return
            }
        } catch {
            // The client went away or the server is stopping: nothing to answer.
        }
    }

    // MARK: - Host requests

    /// Answers a host request; returns the selection when the connection switched to a device.
    private func handleHost(_ request: String, _ connection: SocketConnection) throws -> Selection? {
        let (selector, command) = parseHostRequest(request)
        registry.log(serial: transportSwitch(command)?.selector?.serial ?? selector.serial, service: request)

        switch command {
        case "version":
            try connection.sendOkay(String(format: "%04x", Self.protocolVersion))
            connection.finish()
        case "kill":
            try connection.sendOkay()
            connection.finish()
            killHandler?()
        case "devices", "devices-l":
            try connection.sendOkay(deviceList(long: command == "devices-l"))
            connection.finish()
        case "track-devices", "track-devices-l":
            try trackDevices(long: command == "track-devices-l", connection)
        case "host-features":
            try connection.sendOkay(Self.deviceFeatures.joined(separator: ","))
            connection.finish()
        case "features", "get-state", "get-serialno", "get-devpath":
            switch acquire(selector, connection: connection) {
            case .failure(let message):
                try connection.sendFail(message.text)
            case .success(let selection):
                let device = selection.device
                let answer: String
                switch command {
                case "features": answer = Self.deviceFeatures.joined(separator: ",")
                case "get-state": answer = device.config.state
                case "get-serialno": answer = device.serial
                default: answer = "unknown"
                }
                try connection.sendOkay(answer)
            }
            connection.finish()
        case "reconnect", "reconnect-offline":
            try connection.sendOkay("done")
            connection.finish()
        case "list-forward":
            try connection.sendOkay("")
            connection.finish()
        default:
            if let target = transportSwitch(command) {
                let selector = target.selector ?? selector
                switch acquire(selector, connection: connection) {
                case .failure(let message):
                    try connection.sendFail(message.text)
                    connection.finish()
                    return nil
                case .success(let selection):
                    try connection.sendOkay()
                    if target.sendsID {
                        var id = registry.transportID(for: selection.device.serial).littleEndian
                        try withUnsafeBytes(of: &id) { try connection.write(raw: $0) }
                    }
                    return selection
                }
            }
            if command.hasPrefix("wait-for-") {
                try waitFor(command, selector: selector, connection)
                return nil
            }
            try connection.sendFail("unknown host service '\(command)'")
            connection.finish()
        }
        return nil
    }

    /// Splits `host:CMD`, `host-serial:SERIAL:CMD`, `host-transport-id:N:CMD`, `host-usb:CMD`, `host-local:CMD`.
    func parseHostRequest(_ request: String) -> (Selector, String) {
        func after(_ prefix: String) -> String { String(request.dropFirst(prefix.count)) }
        if request.hasPrefix("host-serial:") {
            let rest = after("host-serial:")
            // The serial may contain ':' (`127.0.0.1:5555`); the command is the last field.
            if let colon = rest.lastIndex(of: ":") {
                return (.serial(String(rest[..<colon])), String(rest[rest.index(after: colon)...]))
            }
            return (.serial(rest), "")
        }
        if request.hasPrefix("host-transport-id:") {
            let rest = after("host-transport-id:")
            if let colon = rest.firstIndex(of: ":") {
                return (.transportID(UInt64(rest[..<colon]) ?? 0), String(rest[rest.index(after: colon)...]))
            }
        }
        if request.hasPrefix("host-usb:") { return (.usb, after("host-usb:")) }
        if request.hasPrefix("host-local:") { return (.local, after("host-local:")) }
        if request.hasPrefix("host:") { return (.any, after("host:")) }
        return (.any, request)
    }

    /// `transport:S`, `transport-any`, `tport:serial:S`, ...: which device, and whether the id follows the OKAY.
    private func transportSwitch(_ command: String) -> (selector: Selector?, sendsID: Bool)? {
        if command.hasPrefix("tport:") {
            let rest = String(command.dropFirst("tport:".count))
            if rest.hasPrefix("serial:") { return (.serial(String(rest.dropFirst("serial:".count))), true) }
            switch rest {
            case "any": return (.any, true)
            case "usb": return (.usb, true)
            case "local": return (.local, true)
            default: return nil
            }
        }
        if command.hasPrefix("transport:") { return (.serial(String(command.dropFirst("transport:".count))), false) }
        if command.hasPrefix("transport-id:") {
            return (.transportID(UInt64(command.dropFirst("transport-id:".count)) ?? 0), false)
        }
        switch command {
        case "transport-any": return (.any, false)
        case "transport-usb": return (.usb, false)
        case "transport-local": return (.local, false)
        default: return nil
        }
    }

    struct FailMessage: Error { let text: String }

    /// Picks the device a request is for, with the adb server's own error texts; applies the
    /// device's `latencyMs` and `failNext` faults.
    func acquire(_ selector: Selector, connection: SocketConnection) -> Result<Selection, FailMessage> {
        let devices = registry.scan()
        var found: SimulatedDevice?
        switch selector {
        case .serial(let serial):
            found = devices.first { $0.serial == serial }
            if found == nil { return .failure(FailMessage(text: "device '\(serial)' not found")) }
        case .transportID(let id):
            if let serial = registry.serial(forTransportID: id) { found = devices.first { $0.serial == serial } }
            if found == nil { return .failure(FailMessage(text: "no device with transport id '\(id)'")) }
        case .any, .usb:
            if devices.isEmpty {
                return .failure(FailMessage(text: selector == .any ? "no devices/emulators found" : "no devices found"))
            }
            if devices.count > 1 {
                return .failure(FailMessage(text: selector == .any ? "more than one device/emulator" : "more than one device"))
            }
            found = devices[0]
        case .local:
            return .failure(FailMessage(text: "no emulators found"))
        }
        guard let device = found else { return .failure(FailMessage(text: "no devices/emulators found")) }

        let faults = registry.faultPlan(serial: device.serial)
        if faults.latencyMs > 0 { _ = pause(seconds: Double(faults.latencyMs) / 1000, connection: connection) }
        if let message = faults.failMessage { return .failure(FailMessage(text: message)) }

        switch device.config.state {
        case "offline":
            return .failure(FailMessage(text: "device offline"))
        case "unauthorized":
            let keys = ProcessInfo.processInfo.environment["ADB_VENDOR_KEYS"] ?? "not set"
            return .failure(FailMessage(text: "device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is \(keys)\nTry 'adb kill-server' if that seems wrong.\nOtherwise check for a confirmation dialog on your device."))
        case "connecting":
            return .failure(FailMessage(text: "device still connecting"))
        case "authorizing":
            return .failure(FailMessage(text: "device still authorizing"))
        default:
            return .success(Selection(device: device, faults: faults))
        }
    }

    // MARK: - Device lists

    /// The text of `host:devices` / `host:devices-l`, formatted as adb's server formats it.
    func deviceList(long: Bool) -> String {
        var text = ""
        for device in registry.scan() {
            let state = device.config.state
            guard long else {
                text += "\(device.serial)\t\(state)\n"
                continue
            }
            var line = device.serial.padding(toLength: max(22, device.serial.count), withPad: " ", startingAt: 0)
            line += " " + state
            if state == "device" {
                // adb replaces anything but letters and digits in the model with '_'.
                let model = String(device.config.model.map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
                line += " product:\(device.config.productName) model:\(model) device:\(device.config.deviceName)"
            }
            line += " transport_id:\(registry.transportID(for: device.serial))"
            text += line + "\n"
        }
        return text
    }

    /// `host:track-devices`: the list now, then again whenever it changes, until the client leaves.
    private func trackDevices(long: Bool, _ connection: SocketConnection) throws {
        try connection.sendOkay()
        var last: String?
        while !isStopped {
            let text = deviceList(long: long)
            if text != last {
                try connection.write(SocketConnection.hexLength(text) + text)
                last = text
            }
            if connection.peerClosed(waitingMs: 200) { break }
        }
        connection.close()
    }

    /// `wait-for-TRANSPORT-STATE`: OKAY now, OKAY again once a device is in that state.
    private func waitFor(_ command: String, selector: Selector, _ connection: SocketConnection) throws {
        let parts = command.dropFirst("wait-for-".count).split(separator: "-", maxSplits: 1).map(String.init)
        let wanted = parts.count == 2 ? parts[1] : "device"
        try connection.sendOkay()
        while !isStopped {
            let devices = registry.scan().filter { device in
                if let serial = selector.serial { return device.serial == serial }
                return true
            }
            let done: Bool
            switch wanted {
            case "disconnect": done = devices.isEmpty
            case "any": done = !devices.isEmpty
            default: done = devices.contains { $0.config.state == wanted }
            }
            if done {
                try connection.sendOkay()
                connection.finish()
                return
            }
            if connection.peerClosed(waitingMs: 100) { break }
        }
        connection.close()
    }
}
