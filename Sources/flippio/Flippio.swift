import ArgumentParser
import FlippioEngine
import Foundation
import Synchronization

@main
struct Flippio: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flippio",
        abstract: "Edit an app's SQLite database on an Android or iOS device as if it were a local file.",
        discussion: """
            Pull a database into the workspace, edit it with any SQLite tool, and the agent pushes \
            each save back to the device: safely, atomically, never over the app's own changes.
            """,
        version: FlippioVersion.current,
        subcommands: [Devices.self, Apps.self, Dbs.self, Pull.self, Status.self, Push.self, Resolve.self, Conflicts.self,
                      Follow.self, Unfollow.self, Forget.self, AgentCommand.self, ServiceCommand.self, Doctor.self]
    )

    /// Whether `--json` was asked for, read from the raw arguments so that even a command line
    /// that fails to parse answers in JSON (words after `--` are operands, not options).
    static let wantsJSON = CommandLine.arguments.dropFirst().prefix { $0 != "--" }.contains("--json")

    /// Exit codes follow common CLI conventions: 0 success, 1 failure, 2 usage (a bad flag,
    /// argument, variable or config key). Under `--json` a failure also prints
    /// `{"schemaVersion": 1, "error": {"code", "message", "remedy"}}` on stdout.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
                await releaseDeviceFiles()
            } else {
                try command.run()
            }
        } catch let error as FlippioError {
            await releaseDeviceFiles()
            Output.printError(error)
            if wantsJSON { Output.jsonError(.init(error)) }
            Foundation.exit(error.code == .invalidConfiguration ? 2 : 1)
        } catch let error as CommandFailed {
            await releaseDeviceFiles()
            Foundation.exit(error.status)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                let message = fullMessage(for: error)
                FileHandle.standardError.write(Data((message + "\n").utf8))
                if wantsJSON {
                    Output.jsonError(.init(code: "usage", message: message.split(separator: "\n").first.map(String.init) ?? message,
                                           remedy: "See `flippio help` for the commands and their options."))
                }
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// The bridge providers of the engines this run made: their ifuse mounts are let go of when the
/// command ends (a one-shot command leaves no mount behind; the agent releases its own on stop).
let oneShotBridges = Mutex<[BridgeProvider]>([])

extension Flippio {
    static func releaseDeviceFiles() async {
        for bridges in oneShotBridges.withLock({ $0 }) { await bridges.releaseDeviceFiles() }
    }
}

/// Thrown by a command that already printed what went wrong.
struct CommandFailed: Error {
    var status: Int32 = 1
}
