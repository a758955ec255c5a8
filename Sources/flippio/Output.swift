import FlippioEngine
import Foundation

/// Printing for every command: text for people, `--json` for scripts, errors on stderr.
enum Output {
    static let isTerminal = isatty(STDOUT_FILENO) == 1
    static let isErrorTerminal = isatty(STDERR_FILENO) == 1

    static func line(_ text: String = "") {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    static func info(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// The version of every JSON document flippio prints (docs/CLI.md). It goes up when a field
    /// changes meaning or goes away; new fields do not change it, so readers ignore unknown keys.
    static let schemaVersion = 1

    /// Prints `value`, which encodes as a JSON object, with `"schemaVersion"` added to it.
    ///
    /// For example, `Output.json(Listing(devices: devices))` prints
    /// `{"devices": [...], "schemaVersion": 1}`. Every `--json` document goes through here, so
    /// none can lack the version.
    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        line(String(decoding: try encoder.encode(Versioned(value: value)), as: UTF8.self))
    }

    /// `{"schemaVersion": 1, key: value}`: for lists and single values.
    static func json<T: Encodable>(_ key: String, _ value: T) throws {
        try json([key: value])
    }

    /// An object with `schemaVersion` added beside the value's own keys. JSONEncoder hands the
    /// same object to both keyed containers (as for a subclass that calls `super.encode`).
    private struct Versioned<Value: Encodable>: Encodable {
        let value: Value
        enum Keys: String, CodingKey { case schemaVersion }

        func encode(to encoder: Encoder) throws {
            try value.encode(to: encoder)
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(Output.schemaVersion, forKey: .schemaVersion)
        }
    }

    /// `error: <message>` and `  fix: <remedy>` on stderr.
    static func printError(_ error: FlippioError) {
        var text = "error: \(error.message)\n"
        if let remedy = error.remedy { text += "  fix: \(remedy)\n" }
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// An error as JSON: `{"code": "device-offline", "message": ..., "remedy": ...}`.
    struct ErrorJSON: Encodable {
        var code: String
        var message: String
        var remedy: String?
        init(_ error: FlippioError) {
            code = error.code.name
            message = error.message
            remedy = error.remedy
        }
        init(code: String, message: String, remedy: String?) {
            self.code = code
            self.message = message
            self.remedy = remedy
        }
    }

    /// A failed command under `--json`: `{"schemaVersion": 1, "error": {...}}` on stdout (the
    /// human text still goes to stderr, for whoever watches the terminal).
    static func jsonError(_ error: ErrorJSON) {
        struct Failure: Encodable { var error: ErrorJSON }
        try? json(Failure(error: error))
    }

    /// Columns padded to their widest cell.
    static func table(_ header: [String], _ rows: [[String]]) {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        for row in all {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            line(cells.joined(separator: "  "))
        }
    }

    /// A progress line for long transfers, only on a terminal.
    static func progress(label: String) -> TransferProgress? {
        guard isErrorTerminal else { return nil }
        return { done, total in
            let text: String
            if let total, total > 0 {
                text = "\r\(label): \(done * 100 / total)% (\(formatBytes(done)) of \(formatBytes(total)))"
            } else {
                text = "\r\(label): \(formatBytes(done))"
            }
            FileHandle.standardError.write(Data(text.utf8))
            if let total, done >= total { FileHandle.standardError.write(Data("\n".utf8)) }
        }
    }

    static func formatBytes(_ bytes: Int64) -> String {
        switch bytes {
        case ..<1024: return "\(bytes) B"
        case ..<(1 << 20): return String(format: "%.1f KiB", Double(bytes) / 1024)
        case ..<(1 << 30): return String(format: "%.1f MiB", Double(bytes) / 1_048_576)
        default: return String(format: "%.2f GiB", Double(bytes) / 1_073_741_824)
        }
    }

    static func date(_ date: Date?) -> String {
        guard let date else { return "-" }
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: date)
    }
}
