import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Doctor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check tools and versions, inotify limits, the adb server and devices, and say what to fix.")

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let report = await try global.engine().doctor()
            if global.json { return try Output.json(report) }
            for tool in report.tools {
                Output.line("\(tool.path == nil ? "✗" : "✓") \(tool.tool.rawValue): \(tool.path.map { "\($0) \(tool.version ?? "")" } ?? (tool.problem ?? "not found"))")
            }
            for check in report.checks where check.name != "adb" {
                Output.line("\(check.ok ? "✓" : "✗") \(check.name): \(check.detail)")
                if let fix = check.fix { Output.line("    fix: \(fix)") }
            }
            for device in report.devices {
                Output.line("  device \(device.id) (\(device.platform.rawValue)): \(device.state.rawValue)\(device.model.map { ", \($0)" } ?? "")")
            }
            if report.tools.first(where: { $0.tool == .adb })?.path == nil { throw CommandFailed() }
        }
    }
}
