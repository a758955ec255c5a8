import ArgumentParser
import FlippioEngine
import Foundation

extension Flippio {
    struct ServiceCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "service",
            abstract: "Install, remove or inspect the systemd user service that runs the agent.",
            subcommands: [Install.self, Uninstall.self, ServiceStatusCommand.self])

        struct Install: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Install and start flippio-agent.service for this user.")
            @OptionGroup var global: GlobalOptions
            @Flag(help: "Install even if this flippio binary lies in a build folder (.build*/), which the next build or `make clean` replaces.")
            var allowBuildBinary = false

            func run() async throws {
                var installer = try installer(global)
                installer.allowBuildBinary = allowBuildBinary
                // The iOS ifuse backend needs the setuid fusermount, which the unit's hardening forbids.
                installer.allowsSetuidHelpers = await (try global.engine()).bridges.iosFileBackend() == .ifuse
                let report = try await installer.install()
                if global.json {
                    return try Output.json(["unit": report.unitURL.path, "execStart": report.execStart, "hints": report.hints.joined(separator: "\n")])
                }
                Output.line(report.description)
            }
        }

        struct Uninstall: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Stop and remove flippio-agent.service.")
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let installer = try installer(global)
                let removed = try await installer.uninstall()
                if global.json { return try Output.json(["uninstalled": removed]) }
                guard removed else {
                    return Output.line("flippio-agent.service is not installed (no unit at \(installer.unitURL.path)); nothing to do")
                }
                Output.line("stopped and removed flippio-agent.service; tracked databases and their sidecars stay")
            }
        }

        struct ServiceStatusCommand: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the service's state and the tracked databases.")
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let service = try await installer(global).status()
                let databases = try await global.engine().status()
                if global.json {
                    struct Combined: Encodable { var service: ServiceStatus; var databases: [Engine.TrackedStatus] }
                    return try Output.json(Combined(service: service, databases: databases))
                }
                Output.line("flippio-agent.service: \(service.activeState) (\(service.subState))\(service.statusText.map { ": \($0)" } ?? "")")
                let counts = Dictionary(grouping: databases, by: { $0.state?.rawValue ?? "unreadable" }).mapValues(\.count).sorted { $0.key < $1.key }
                Output.line("\(databases.count) tracked: " + counts.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
            }
        }

        static func installer(_ global: GlobalOptions) throws -> ServiceInstaller {
            let config = try global.configuration()
            let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            var environment = config.environment
            // `service install --adb PATH` means the agent uses that adb: it reaches the unit as FLIPPIO_ADB.
            if let adb = global.adb {
                let expanded = (adb as NSString).expandingTildeInPath
                environment["FLIPPIO_ADB"] = expanded.contains("/")
                    ? URL(fileURLWithPath: expanded).standardizedFileURL.path : expanded
            }
            return ServiceInstaller(environment: environment, runner: ProcessRunner(),
                                    executablePath: executable, workspace: config.workspace)
        }
    }
}
