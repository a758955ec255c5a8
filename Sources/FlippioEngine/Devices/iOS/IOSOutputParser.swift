import Foundation

/// Parsers for what `idevice_id`, `ideviceinfo`, `ideviceinstaller` and `afcclient` print.
///
/// Everything here is untrusted input from a device: names are checked before they become paths,
/// and output that does not have the expected shape is rejected rather than guessed at.
enum IOSOutputParser {
    // MARK: - idevice_id / ideviceinfo

    /// UDIDs from `idevice_id -l` / `-n` (one per line; `" (USB)"`/`" (Network)"` suffixes dropped).
    static func udids(_ text: String) -> [String] {
        var seen = Set<String>()
        return text.split(whereSeparator: \.isNewline).compactMap { line in
            var id = line.trimmingCharacters(in: .whitespaces)
            for suffix in [" (USB)", " (Network)"] where id.hasSuffix(suffix) { id = String(id.dropLast(suffix.count)) }
            guard isUDID(id), seen.insert(id).inserted else { return nil }
            return id
        }
    }

    /// Whether `id` looks like a UDID (hex and dashes; 25 or 40 characters on real devices).
    static func isUDID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 64 && !id.hasPrefix("-")
            && id.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || $0 == "-" }
    }

    /// The value `ideviceinfo -k KEY` printed (one line), without control characters; nil when empty.
    static func value(_ text: String) -> String? {
        guard let line = text.split(separator: "\n", omittingEmptySubsequences: false).first else { return nil }
        let clean = String(line.unicodeScalars.filter { !CharacterSet.controlCharacters.contains($0) }.prefix(256))
            .trimmingCharacters(in: .whitespaces)
        return clean.isEmpty ? nil : clean
    }

    /// `ERROR: Could not connect to lockdownd: Password protected (-17)` → ("Password protected", -17);
    /// also idevicepair's `..., error code -17`.
    static func lockdownError(_ text: String) -> (message: String, code: Int)? {
        for line in text.split(whereSeparator: \.isNewline) {
            guard let range = line.range(of: "Could not connect to lockdownd") else { continue }
            let rest = line[range.upperBound...]
            if rest.hasPrefix(": "), let open = rest.lastIndex(of: "("), rest.hasSuffix(")"),
               let code = Int(rest[rest.index(after: open)..<rest.index(before: rest.endIndex)]) {
                let message = rest[rest.index(rest.startIndex, offsetBy: 2)..<open].trimmingCharacters(in: .whitespaces)
                return (message, code)
            }
            if let codeRange = rest.range(of: "error code "),
               let code = Int(rest[codeRange.upperBound...].prefix(while: { $0 == "-" || $0.isNumber })) {
                return ("error code \(code)", code)
            }
        }
        return nil
    }

    /// Lines that say a command failed: `Error: ...` (afcclient) or `ERROR: ...` (the others).
    /// afcclient's progress output uses `\r`, so both separate lines.
    static func errorLines(_ text: String) -> [String] {
        text.split(whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" }).compactMap { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            return trimmed.hasPrefix("Error:") || trimmed.hasPrefix("ERROR:") ? trimmed : nil
        }
    }

    // MARK: - ideviceinstaller

    /// Apps from `ideviceinstaller -l -o xml` (or `list --xml`): an XML property list, an array of
    /// dictionaries. Throws when the output is not one.
    static func apps(fromPropertyList data: Data) throws -> [AppInfo] {
        guard let start = data.firstRange(of: Data("<?xml".utf8)) ?? data.firstRange(of: Data("<plist".utf8)) else {
            throw FlippioError(.unexpectedOutput, "ideviceinstaller did not print a property list.")
        }
        let plist = try PropertyListSerialization.propertyList(from: data[start.lowerBound...], options: [], format: nil)
        guard let array = plist as? [Any] else {
            throw FlippioError(.unexpectedOutput, "ideviceinstaller printed a property list that is not an array of apps.")
        }
        return array.compactMap { item -> AppInfo? in
            guard let dict = item as? [String: Any], let id = dict["CFBundleIdentifier"] as? String, isBundleID(id) else {
                return nil
            }
            let name = (dict["CFBundleDisplayName"] as? String) ?? (dict["CFBundleName"] as? String)
            let version = (dict["CFBundleShortVersionString"] as? String) ?? (dict["CFBundleVersion"] as? String)
            return AppInfo(id: id, name: name.flatMap(value), version: version.flatMap(value))
        }
    }

    /// Apps from the text listing: a header naming the columns (1.1.1:
    /// `CFBundleIdentifier, CFBundleVersion, CFBundleDisplayName`; later:
    /// `CFBundleIdentifier, CFBundleShortVersionString, CFBundleDisplayName`), then
    /// `id, "version", "name"` lines. Nil when there is no such header.
    static func apps(fromText text: String) -> [AppInfo]? {
        let lines = text.split(whereSeparator: \.isNewline).map(String.init)
        guard let headerIndex = lines.firstIndex(where: { $0.hasPrefix("CFBundleIdentifier") }) else { return nil }
        let columns = lines[headerIndex].components(separatedBy: ", ")
        return lines[(headerIndex + 1)...].compactMap { line -> AppInfo? in
            // The id is unquoted and has no ", "; the version never has `", "`; the name is the rest
            // (it may hold quotes and commas: ideviceinstaller does not escape them).
            let parts = line.components(separatedBy: ", ")
            guard let id = parts.first, isBundleID(id) else { return nil }
            var rest = String(line.dropFirst(id.count))
            var fields: [String] = []
            while rest.hasPrefix(", ") {
                rest.removeFirst(2)
                if fields.count + 2 < columns.count, let end = rest.range(of: ", ") {
                    fields.append(String(rest[..<end.lowerBound]))
                    rest = String(rest[end.lowerBound...])
                } else {
                    fields.append(rest)
                    rest = ""
                }
            }
            func unquote(_ s: String) -> String? {
                let t = s.count >= 2 && s.hasPrefix("\"") && s.hasSuffix("\"") ? String(s.dropFirst().dropLast()) : s
                return value(t)
            }
            var name: String?, version: String?
            if fields.count == columns.count - 1 {
                for (column, field) in zip(columns.dropFirst(), fields) {
                    if column == "CFBundleDisplayName" { name = unquote(field) }
                    if column == "CFBundleShortVersionString" || column == "CFBundleVersion" { version = unquote(field) }
                }
            } else if let last = fields.last {
                // 1.1.1 leaves the version out when an app has none: `id, "name"`.
                name = unquote(last)
            }
            return AppInfo(id: id, name: name == id ? nil : name, version: version)
        }
    }

    /// Whether `id` is a plausible bundle identifier (also safe as an `afcclient` argument).
    static func isBundleID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 255 && !id.hasPrefix("-") && !id.hasPrefix(".")
            && id.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-._".unicodeScalars.contains($0)) }
    }

    // MARK: - afcclient

    /// One entry of an `afcclient ls -l` listing.
    struct AFCEntry: Sendable, Equatable {
        enum Kind: Sendable, Equatable { case file, directory, symlink, other }
        var name: String
        var kind: Kind
        var size: Int64?
    }

    /// `afcclient -- ls -l PATH`: lines like
    /// `-rw-r--r--    1 mobile mobile       8192 22 May 2024 10:00:00 notes.db`.
    /// Nil when a line has another shape (an afcclient without `ls -l`).
    static func longListing(_ text: String) -> [AFCEntry]? {
        var entries: [AFCEntry] = []
        for raw in text.split(separator: "\n") {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw[...]
            if line.isEmpty { continue }
            // mode, nlink, "mobile", "mobile", size, day, month, year, time, then the name (may hold spaces).
            var fields: [Substring] = []
            var rest = line[...]
            for _ in 0..<9 {
                rest = rest.drop(while: { $0 == " " })
                guard let end = rest.firstIndex(of: " ") else { return nil }
                fields.append(rest[..<end])
                rest = rest[rest.index(after: end)...]
            }
            let name = String(rest)
            let mode = fields[0]
            guard mode.count == 10, fields[2] == "mobile", fields[3] == "mobile", let size = Int64(fields[4]),
                  fields[8].count == 8, fields[8].filter({ $0 == ":" }).count == 2 else { return nil }
            guard isSafeName(name) else { continue }
            let kind: AFCEntry.Kind = switch mode.first {
            case "d": .directory
            case "-": .file
            case "l": .symlink
            default: .other
            }
            entries.append(AFCEntry(name: name, kind: kind, size: size))
        }
        return entries
    }

    /// `afcclient ls PATH` without `-l`: one name per line.
    static func names(_ text: String) -> [String] {
        text.split(separator: "\n").map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }.filter(isSafeName)
    }

    /// `afcclient info PATH`: libplist JSON (`"st_ifmt": "S_IFDIR"`), or the older `key: value` text.
    static func info(_ text: String) -> AFCEntry? {
        func field(_ key: String) -> String? {
            for line in text.split(whereSeparator: \.isNewline) {
                var t = line.trimmingCharacters(in: .whitespaces)
                if t.hasSuffix(",") { t.removeLast() }
                for prefix in ["\"\(key)\":", "\(key):"] where t.hasPrefix(prefix) {
                    return t.dropFirst(prefix.count).trimmingCharacters(in: CharacterSet(charactersIn: " \""))
                }
            }
            return nil
        }
        guard let ifmt = field("st_ifmt") else { return nil }
        let kind: AFCEntry.Kind = switch ifmt {
        case "S_IFDIR": .directory
        case "S_IFREG": .file
        case "S_IFLNK": .symlink
        default: .other
        }
        return AFCEntry(name: "", kind: kind, size: field("st_size").flatMap { Int64($0) })
    }

    /// A directory entry name that can be joined to a path: not empty, not `.`/`..`, no `/`, no
    /// control characters.
    static func isSafeName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.contains("/") && name.utf8.count <= 255
            && !name.unicodeScalars.contains { CharacterSet.controlCharacters.contains($0) }
    }

    /// Whether `name` is a SQLite database by its extension, never a `-wal`/`-shm`/`-journal`.
    /// Whether a file is worth reading the header of: not a journal (`-wal`, `-shm`,
    /// `-journal`), not one of flippio's temp files (`.flippio-tmp`, `.flippio-pull-…`), at
    /// least a SQLite header long (100 bytes; an empty file is SQLite's empty database, but no
    /// app's), and not of a kind that is plainly something else. Size nil means unknown.
    static func mayBeDatabase(_ name: String, size: Int64?) -> Bool {
        let lower = name.lowercased()
        if lower.hasSuffix("-wal") || lower.hasSuffix("-shm") || lower.hasSuffix("-journal") { return false }
        if lower.contains(".flippio-") { return false }
        if let size, size < 100 { return false }
        if let dot = lower.lastIndex(of: "."), notDatabaseExtensions.contains(String(lower[lower.index(after: dot)...])) {
            return false
        }
        return true
    }

    /// Extensions of files apps keep beside their databases that are never SQLite.
    static let notDatabaseExtensions: Set<String> = [
        "png", "jpg", "jpeg", "gif", "heic", "webp", "pdf", "plist", "json", "txt", "html", "js", "css",
        "mp3", "mp4", "m4a", "mov", "caf", "wav", "zip", "gz", "ttf", "otf", "car", "nib", "strings", "log",
    ]

    static func isDatabaseName(_ name: String) -> Bool {
        let lower = name.lowercased()
        if lower.hasSuffix("-wal") || lower.hasSuffix("-shm") || lower.hasSuffix("-journal") { return false }
        guard let dot = lower.lastIndex(of: "."), dot != lower.startIndex else { return false }
        return ["db", "sqlite", "sqlite3", "db3", "sqlitedb"].contains(String(lower[lower.index(after: dot)...]))
    }
}
