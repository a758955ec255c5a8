import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Devices: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List connected devices, including unauthorized and offline ones (with what to do).")

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let engine = try global.engine()
            let (devices, problems) = await engine.devices()
            if global.json {
                // `error` (the first problem) when nothing could be listed: the command failed.
                struct Listing: Encodable { var devices: [Device]; var problems: [Output.ErrorJSON]; var error: Output.ErrorJSON? }
                try Output.json(Listing(devices: devices, problems: problems.map(Output.ErrorJSON.init),
                                        error: devices.isEmpty ? problems.first.map(Output.ErrorJSON.init) : nil))
            } else if devices.isEmpty {
                Output.line("No devices. Connect a device with USB debugging on (Android) or trusted (iOS).")
            } else {
                Output.table(["DEVICE", "PLATFORM", "STATE", "MODEL", "OS"], devices.map {
                    [$0.id, $0.platform.rawValue, $0.state.rawValue, $0.model ?? "-", $0.osVersion ?? "-"]
                })
                for device in devices where device.remedy != nil && device.state != .ready {
                    Output.info("\(device.id): \(device.state.rawValue): \(device.remedy!)")
                }
            }
            // Under --json the problems are in the document; stderr keeps them for the terminal.
            for problem in problems { Output.printError(problem) }
            if devices.isEmpty && !problems.isEmpty { throw CommandFailed() }
        }
    }
}
