import Foundation
import Logging

extension Logger {
    /// The logger for everything about one tracked database: each line carries the device, the
    /// app and the file as metadata (`device`, `app`, `db`).
    ///
    /// One agent serves several devices, often the same app on each; without these a line such
    /// as "push failed: device offline" cannot be told apart. In a terminal they follow the
    /// message as `key=value`; in the journal ``JournalLogHandler`` also sends them as fields
    /// (`FLIPPIO_DEVICE`, `FLIPPIO_APP`, `FLIPPIO_DB`), so
    /// `journalctl --user -u flippio-agent FLIPPIO_DEVICE=emulator-5554` shows one device.
    ///
    /// For example:
    ///
    /// ```swift
    /// let logger = Logger.forDatabase(sidecar.origin, file: database, base: agentLogger)
    /// logger.info("pushed 40960 bytes")
    /// // <6>pushed 40960 bytes app=com.example.notes db=notes.db device=emulator-5554
    /// ```
    ///
    /// - parameters:
    ///   - origin: where the database came from (its sidecar's origin).
    ///   - file: the local copy; its file name becomes `db`.
    ///   - base: the logger to derive from (its label, level and metadata are kept). The default
    ///     is a new `flippio.sync` logger.
    public static func forDatabase(_ origin: Sidecar.Origin, file: URL, base: Logger = Logger(label: "flippio.sync")) -> Logger {
        var logger = base
        logger[metadataKey: "device"] = .string(origin.deviceID)
        logger[metadataKey: "app"] = .string(origin.appID)
        logger[metadataKey: "db"] = .string(file.lastPathComponent)
        return logger
    }
}
