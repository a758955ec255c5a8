import Foundation
import Logging

/// A swift-log handler that writes one line per event to stderr, in the shape journald reads best.
///
/// Under systemd (`$JOURNAL_STREAM` is set: stderr is connected to the journal) each line starts with
/// a syslog priority prefix that journald turns into the entry's priority, and carries no timestamp
/// (the journal has its own):
///
/// ```
/// <6>pushed app.db serial=emulator-5554 bytes=40960
/// ```
///
/// In a terminal each line starts with the local time and the level:
///
/// ```
/// 2026-11-29 17:42:03.120 info  pushed app.db serial=emulator-5554 bytes=40960
/// ```
///
/// Metadata follows the message as `key=value`, sorted by key; a value with spaces, quotes or `=` is
/// double-quoted. Newlines inside the message or a value are escaped (`\n`), so one event is always
/// one line and journald never splits it.
///
/// Given a ``JournalSocket`` (under systemd, see ``FlippioLogging/bootstrap(level:environment:)``),
/// journal-format events go to journald's native socket instead, with the same line as `MESSAGE`
/// and each metadata key as a field of its own (`device` → `FLIPPIO_DEVICE`), so entries can be
/// selected by device or app (`journalctl FLIPPIO_DEVICE=emulator-5554`). When the socket does not
/// take an entry, the line goes to the sink as without one.
public struct JournalLogHandler: LogHandler {
    /// How lines look.
    public enum Format: Sendable, Equatable {
        /// `<6>message key=value`: for journald.
        case journal
        /// `2026-11-29 17:42:03.120 info  message key=value`: for a terminal.
        case human

        /// ``journal`` when `$JOURNAL_STREAM` is set (systemd connected stderr to the journal), else ``human``.
        public static func detect(environment: [String: String]) -> Format {
            (environment["JOURNAL_STREAM"] ?? "").isEmpty ? .human : .journal
        }
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    public let format: Format
    private let sink: @Sendable (String) -> Void
    private let now: @Sendable () -> Date
    private let journal: JournalSocket?

    /// Creates a handler.
    ///
    /// - parameters:
    ///   - label: the logger's label (not printed; kept for handlers that want it).
    ///   - level: the lowest level written. The default is `.info`.
    ///   - format: journald or terminal lines.
    ///   - metadataProvider: adds task-local metadata to each event.
    ///   - now: the clock for terminal timestamps. The default is the wall clock.
    ///   - journal: journald's native socket, used in ``Format/journal`` format for structured
    ///     fields. The default is none: lines go to `sink`.
    ///   - sink: receives each finished line, newline included. The default writes it to stderr in one
    ///     `write(2)` call, so lines from several threads never interleave.
    public init(
        label: String,
        level: Logger.Level = .info,
        format: Format,
        metadataProvider: Logger.MetadataProvider? = nil,
        now: @escaping @Sendable () -> Date = { Date() },
        journal: JournalSocket? = nil,
        sink: @escaping @Sendable (String) -> Void = JournalLogHandler.writeToStandardError
    ) {
        self.journal = journal
        self.label = label
        self.logLevel = level
        self.format = format
        self.metadataProvider = metadataProvider
        self.now = now
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        if let error = event.error { merged["error"] = .string(String(describing: error)) }
        let line = render(level: event.level, message: event.message.description, metadata: merged, date: now())
        if format == .journal, let journal, journal.send(Self.journalFields(line: line, level: event.level, metadata: merged)) { return }
        sink(line)
    }

    /// The native journal entry of a rendered journal-format line: the line (without its `<N>`
    /// prefix and newline) as `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER=flippio`, and each
    /// metadata key as `FLIPPIO_<KEY>` (sorted).
    public static func journalFields(line: String, level: Logger.Level, metadata: Logger.Metadata) -> [(name: String, value: String)] {
        var message = Substring(line)
        if message.hasPrefix("<"), let close = message.firstIndex(of: ">") { message = message[message.index(after: close)...] }
        if message.hasSuffix("\n") { message = message.dropLast() }
        var fields: [(name: String, value: String)] = [("MESSAGE", String(message)), ("PRIORITY", String(priority(of: level))),
                                                       ("SYSLOG_IDENTIFIER", "flippio")]
        for key in metadata.keys.sorted() {
            fields.append((JournalSocket.fieldName(forMetadataKey: key), render(metadata[key]!)))
        }
        return fields
    }

    /// The line (with its trailing newline) that an event becomes.
    public func render(level: Logger.Level, message: String, metadata: Logger.Metadata, date: Date) -> String {
        var line: String
        switch format {
        case .journal:
            line = "<\(Self.priority(of: level))>"
        case .human:
            line = Self.timestamp(date) + " " + Self.paddedName(level) + " "
        }
        line += Self.escape(message)
        for key in metadata.keys.sorted() {
            line += " " + Self.escape(key) + "=" + Self.quoteIfNeeded(Self.render(metadata[key]!))
        }
        return line + "\n"
    }

    // MARK: - Pieces

    /// The syslog priority journald reads from a `<N>` prefix: 3 err, 4 warning, 5 notice, 6 info, 7 debug.
    public static func priority(of level: Logger.Level) -> Int {
        switch level {
        case .critical, .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug, .trace: 7
        }
    }

    /// The level name padded to five columns, so the common levels line up.
    static func paddedName(_ level: Logger.Level) -> String {
        let name = level.rawValue
        return name.count >= 5 ? name : name + String(repeating: " ", count: 5 - name.count)
    }

    /// `yyyy-MM-dd HH:mm:ss.SSS` in local time.
    static func timestamp(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970
        var whole = time_t(seconds.rounded(.down))
        let millis = min(999, Int(((seconds - Double(whole)) * 1000).rounded(.down)))
        var parts = tm()
        localtime_r(&whole, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)"
    }

    /// Escapes the characters that would break one event into several lines.
    static func escape(_ text: String) -> String {
        guard text.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Double-quotes a metadata value that contains spaces, quotes, `=` or is empty.
    static func quoteIfNeeded(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.contains(where: { $0.isWhitespace || $0 == "\"" || $0 == "=" })
        guard needsQuotes else { return escape(value) }
        let inner = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        return "\"" + escape(inner) + "\""
    }

    static func render(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): "[" + values.map(render).joined(separator: ", ") + "]"
        case .dictionary(let entries):
            "[" + entries.keys.sorted().map { "\($0): \(render(entries[$0]!))" }.joined(separator: ", ") + "]"
        }
    }

    /// Writes `line` to file descriptor 2 in one `write(2)` call.
    public static let writeToStandardError: @Sendable (String) -> Void = { line in
        writeLine(line, to: 2)
    }

    /// Writes `line` to `fd`, retrying on EINTR and short writes; errors are dropped (there is
    /// nowhere left to report them).
    public static func writeLine(_ line: String, to fd: Int32) {
        var bytes = Array(line.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            bytes = bytes.dropFirst(written)
        }
    }
}

// MARK: - Levels and bootstrap

extension Logger.Level {
    /// Parses a level name as given to `--log-level` or `FLIPPIO_LOG_LEVEL` (case-insensitive).
    ///
    /// - throws: ``FlippioError`` with code `invalid-argument` naming the accepted values.
    public static func parse(_ text: String) throws -> Logger.Level {
        let name = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard let level = Logger.Level(rawValue: name) else {
            let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw FlippioError(.invalidArgument, "'\(text)' is not a log level.",
                               remedy: "Use one of: \(names).", context: ["value": text])
        }
        return level
    }
}

/// Sets up swift-log for the flippio process.
public enum FlippioLogging {
    /// The variable that sets the level when `--log-level` is not given.
    public static let levelVariable = "FLIPPIO_LOG_LEVEL"

    /// The level to use: `option` (from `--log-level`) if given, else `$FLIPPIO_LOG_LEVEL`, else `.info`.
    ///
    /// - throws: ``FlippioError`` with code `invalid-argument` for a name that is not a level.
    public static func level(option: String?, environment: [String: String]) throws -> Logger.Level {
        if let option { return try .parse(option) }
        if let value = environment[levelVariable], !value.isEmpty { return try .parse(value) }
        return .info
    }

    /// Installs ``JournalLogHandler`` as the process-wide log handler.
    ///
    /// Only the first call has an effect (swift-log allows one bootstrap per process); later calls
    /// return false.
    @discardableResult
    public static func bootstrap(level: Logger.Level, environment: [String: String]) -> Bool {
        let first = bootstrapped.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return false }
        let format = JournalLogHandler.Format.detect(environment: environment)
        // Under systemd, entries go to journald's socket with device and app as fields of their own.
        let journal = format == .journal ? JournalSocket.detect(environment: environment) : nil
        LoggingSystem.bootstrap { label in
            JournalLogHandler(label: label, level: level, format: format, journal: journal)
        }
        return true
    }

    private static let bootstrapped = LockedFlag()
}

/// A Bool behind a lock (Foundation's NSLock keeps this free of the Synchronization module's availability rules).
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    func withLock<T>(_ body: (inout Bool) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
