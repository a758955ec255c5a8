import ArgumentParser
import FlippioEngine

extension Flippio {
    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy databases from a device into the workspace and track them.",
            discussion: "The database's -wal and -journal are pulled too and folded into one file, so the copy holds every committed row.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "A device serial/UDID, or a unique prefix of one.", completion: Completions.deviceSerials) var device: String
        @Argument(help: "The app's package name (Android) or bundle identifier (iOS).", completion: Completions.appIDs) var app: String
        @Argument(help: "Databases to pull: device paths, paths relative to the app folder, or file names (default: all).")
        var paths: [String] = []
        @Flag(help: "Replace a local copy even if it has changes not pushed yet.") var overwrite = false
        @Flag(name: .customLong("no-follow"), help: "Do not bring the app's later changes into the copy (`flippio follow FILE` turns it on).")
        var noFollow = false

        func run() async throws {
            let engine = try global.engine()
            let reports = try await engine.pull(device: device, app: app, paths: paths, overwrite: overwrite,
                                                follow: noFollow ? false : nil,
                                                progress: global.json ? nil : Output.progress(label: "pulling"))
            if global.json { return try Output.json("pulled", reports) }
            for report in reports {
                let rows = report.tables.values.reduce(0, +)
                Output.line("pulled \(report.remotePath) → \(report.localPath) (\(Output.formatBytes(report.bytes)), \(report.tables.count) tables, \(rows) rows\(report.foldedWAL ? ", WAL folded in" : ""))")
            }
            Output.info("Edit the copy with any SQLite tool; `flippio agent` pushes each save, or run `flippio push`.")
        }
    }
}
