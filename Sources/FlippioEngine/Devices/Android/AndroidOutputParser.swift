import Foundation

/// Parsers for what `adb` and the device print. Everything here is untrusted input: lines that
/// do not have the expected shape are ignored (and, where it matters, reported as warnings),
/// never guessed at.
enum AndroidOutputParser {
    // MARK: - adb devices

    /// Devices from `adb devices -l` (or the short `adb devices` / `track-devices` format).
    ///
    /// ```
    /// List of devices attached
    /// emulator-5554          device product:sdk_gphone_x86 model:Android_SDK_built_for_x86 device:generic_x86 transport_id:1
    /// 0123456789ABCDEF       unauthorized usb:1-1 transport_id:2
    /// ```
    static func devices(_ text: String) -> [Device] {
        var devices: [Device] = []
        var seen = Set<String>()
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = String(rawLine)
            guard let device = device(line), seen.insert(device.id).inserted else { continue }
            devices.append(device)
        }
        return devices
    }

    /// One device line, or nil for headers, daemon chatter and garbage.
    static func device(_ line: String) -> Device? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, !trimmed.hasPrefix("List of devices"), !trimmed.hasPrefix("*"),
              !trimmed.hasPrefix("adb server"), !trimmed.hasPrefix("error:"), !trimmed.hasPrefix("adb:"),
              !DeviceShellQuoting.containsControlCharacter(line.replacingOccurrences(of: "\t", with: " "))
        else { return nil }

        // adb prints an empty serial as "(no serial number)", the one serial with spaces.
        let serial: String
        var rest: Substring
        if trimmed.hasPrefix("(no serial number)") {
            serial = "(no serial number)"
            rest = trimmed.dropFirst(serial.count)
        } else {
            guard let end = trimmed.firstIndex(where: { $0 == " " || $0 == "\t" }) else { return nil }
            serial = String(trimmed[..<end])
            rest = trimmed[end...]
        }
        rest = rest.drop(while: { $0 == " " || $0 == "\t" })
        guard !serial.isEmpty, serial.utf8.count <= 256, !rest.isEmpty else { return nil }

        // "no permissions (...); see [URL]" is the one state with spaces.
        let rawState: String
        if rest.hasPrefix("no permissions") {
            if let close = rest.range(of: "]") , rest.range(of: "; see [") != nil {
                rawState = String(rest[..<close.upperBound])
                rest = rest[close.upperBound...]
            } else if rest.contains("(") , let close = rest.firstIndex(of: ")") {
                rawState = String(rest[...close])
                rest = rest[rest.index(after: close)...]
            } else {
                rawState = "no permissions"
                rest = rest.dropFirst(rawState.count)
            }
        } else {
            let end = rest.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? rest.endIndex
            rawState = String(rest[..<end])
            rest = rest[end...]
        }

        var details: [String: String] = ["state": rawState]
        for token in rest.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            if let colon = token.firstIndex(of: ":"), colon != token.startIndex {
                details[String(token[..<colon])] = String(token[token.index(after: colon)...])
            } else {
                details["devpath"] = String(token)
            }
        }

        let state: Device.State = switch rawState {
        case "device": .ready
        case "offline": .offline
        case "unauthorized": .unauthorized
        case "authorizing", "connecting": .connecting
        default: .unknown
        }
        let model = details["model"].map { $0.replacingOccurrences(of: "_", with: " ") }
        return Device(platform: .android, id: serial, state: state, model: model, details: details,
                      remedy: AndroidErrors.remedy(forDeviceState: rawState))
    }

    // MARK: - pm list packages

    /// Package names from `pm list packages` (`package:NAME` lines), sorted and unique. Lines
    /// whose name is not a well-formed package name are ignored.
    static func packages(_ text: String) -> [String] {
        var names = Set<String>()
        for line in text.split(whereSeparator: \.isNewline) {
            guard line.hasPrefix("package:") else { continue }
            var name = line.dropFirst("package:".count)
            // `pm list packages -f` prints `package:/data/app/.../base.apk=NAME`.
            if name.hasPrefix("/"), let equals = name.lastIndex(of: "=") { name = name[name.index(after: equals)...] }
            let candidate = String(name).trimmingCharacters(in: .whitespaces)
            if DeviceShellQuoting.isValidPackageName(candidate) { names.insert(candidate) }
        }
        return names.sorted()
    }

    // MARK: - dumpsys package

    /// One package as `dumpsys package packages` describes it.
    struct PackageFlags: Sendable, Equatable {
        var name: String
        var debuggable: Bool
        var system: Bool
    }

    /// Packages and their flags from the `Package [NAME] (HASH):` and `flags=[ ... ]` lines of
    /// `dumpsys package packages`, sorted by name. The first description of a package wins (the
    /// "Hidden system packages:" section repeats updated system apps); malformed names are
    /// ignored; a package whose flags line is missing is left out.
    static func packageFlags(_ text: String) -> [PackageFlags] {
        var found: [String: PackageFlags] = [:]
        var current: String?
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("Package ["), let close = line.firstIndex(of: "]") {
                let name = String(line[line.index(line.startIndex, offsetBy: 9)..<close])
                current = DeviceShellQuoting.isValidPackageName(name) && found[name] == nil ? name : nil
            } else if line.hasPrefix("flags=["), let name = current {
                let flags = line.dropFirst("flags=[".count).split(separator: " ").map(String.init)
                found[name] = PackageFlags(name: name, debuggable: flags.contains("DEBUGGABLE"), system: flags.contains("SYSTEM"))
                current = nil
            }
        }
        return found.values.sorted { $0.name < $1.name }
    }

    // MARK: - find (the header scan)

    /// The 16 bytes every SQLite 3 database file starts with.
    static let sqliteHeader = Array("SQLite format 3\0".utf8)

    /// Whether a file name may be a database's main file: never a `-wal`/`-shm`/`-journal`
    /// companion or one of flippio's own `.x.flippio-tmp` files. The name says nothing more:
    /// Room databases often have no extension, so the header decides (``databasesByHeader``).
    static func isDatabaseName(_ name: String) -> Bool {
        let lower = name.lowercased()
        guard !name.isEmpty, name != ".", name != ".." else { return false }
        return !["-wal", "-shm", "-journal", ".flippio-tmp"].contains { lower.hasSuffix($0) }
    }

    /// What a listing held, and what was left out of it and why.
    struct PathListing: Sendable, Equatable {
        var paths: [String] = []
        var warnings: [String] = []
    }

    /// Database paths from the header scan (`AndroidBridge.headerScan`): records of 16 header
    /// bytes, a path and a NUL byte.
    ///
    /// Keeps the paths whose header is the SQLite header, that are valid UTF-8, absolute, under
    /// one of `roots`, with no `.`/`..`/empty components and no control characters (a name with
    /// a line break is reported and skipped: it cannot be named safely on the device), and not a
    /// companion file; at most `limit`, without duplicates. A record cut short (output over the
    /// byte limit, a file shrinking between `find`'s size test and `head`) is skipped with a
    /// warning; since no path holds a NUL byte, the next record starts cleanly after it.
    static func databasesByHeader(_ output: Data, roots: [String], limit: Int = 10_000, truncated: Bool = false) -> PathListing {
        var listing = PathListing()
        let bytes = [UInt8](output)
        let prefixes = roots.map { $0.hasSuffix("/") ? $0 : $0 + "/" }
        var seen = Set<String>()
        var garbage = 0
        var index = 0
        while index < bytes.count {
            let headerEnd = index + sqliteHeader.count
            guard headerEnd < bytes.count, let nul = bytes[headerEnd...].firstIndex(of: 0) else {
                if truncated {
                    listing.warnings.append("The listing of \(roots.joined(separator: " and ")) was longer than flippio reads; the rest was ignored.")
                } else {
                    garbage += 1
                }
                break
            }
            let isSQLite = bytes[index..<headerEnd].elementsEqual(sqliteHeader)
            let pathBytes = bytes[headerEnd..<nul]
            index = nul + 1
            guard isSQLite else { continue }
            guard let path = String(validating: pathBytes, as: UTF8.self) else {
                listing.warnings.append("Ignored a database whose path is not valid UTF-8.")
                continue
            }
            guard prefixes.contains(where: { path.hasPrefix($0) }), DeviceShellQuoting.isSafeDevicePath(path) else {
                if DeviceShellQuoting.containsControlCharacter(path), prefixes.contains(where: { path.hasPrefix($0) }) {
                    let printable = String(path.unicodeScalars.map { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) ? "?" : Character($0) })
                    listing.warnings.append("Ignored a database whose name holds a line break or control character: \(AndroidErrors.excerpt(printable)); rename it on the device to use it.")
                } else {
                    garbage += 1
                }
                continue
            }
            guard isDatabaseName(String(path[path.index(after: path.lastIndex(of: "/")!)...])) else { continue }
            guard listing.paths.count < limit else {
                listing.warnings.append("More than \(limit) databases; only the first \(limit) are listed.")
                break
            }
            if seen.insert(path).inserted { listing.paths.append(path) }
        }
        if garbage > 0 {
            listing.warnings.append("Ignored \(garbage) record(s) of unexpected output while listing \(roots.joined(separator: " and ")).")
        }
        return listing
    }

    // MARK: - sha256sum, stat, getprop

    /// `sha256sum` lines (`HASH  FILE`) as FILE → lowercase hex hash. Malformed lines are ignored.
    static func sha256sums(_ text: String) -> [String: String] {
        var hashes: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard line.count > 66 else { continue }
            let hash = line.prefix(64).lowercased()
            let separator = line.dropFirst(64).prefix(2)
            guard hash.allSatisfy({ $0.isHexDigit }), separator == "  " || separator == " *" else { continue }
            hashes[String(line.dropFirst(66))] = hash
        }
        return hashes
    }

    /// `stat -c '%s %n'` lines as FILE → size. Malformed lines are ignored.
    static func sizes(_ text: String) -> [String: Int64] {
        var sizes: [String: Int64] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let space = line.firstIndex(of: " "), let size = Int64(line[..<space]), size >= 0 else { continue }
            sizes[String(line[line.index(after: space)...])] = size
        }
        return sizes
    }

    /// A `getprop` value: the first line, trimmed; nil when empty, too long or not printable.
    static func property(_ text: String) -> String? {
        let value = (text.split(whereSeparator: \.isNewline).first.map(String.init) ?? "").trimmingCharacters(in: .whitespaces)
        guard !value.isEmpty, value.count <= 92, !DeviceShellQuoting.containsControlCharacter(value) else { return nil }
        return value
    }

    // MARK: - track-devices

    /// Splits `adb track-devices` output into device lists. Each message is four hex digits giving
    /// the length, then that many bytes of `adb devices` text.
    struct TrackDevicesDecoder: Sendable {
        private var buffer: [UInt8] = []

        init() {}

        /// Adds bytes read from adb; returns every device list now complete, in order.
        /// - throws: ``FlippioError/Code/protocolFault`` when the stream is not length-prefixed text.
        mutating func feed(_ bytes: some Sequence<UInt8>) throws -> [[Device]] {
            buffer.append(contentsOf: bytes)
            var lists: [[Device]] = []
            while buffer.count >= 4 {
                guard let header = String(validating: buffer[0..<4], as: UTF8.self), let length = Int(header, radix: 16),
                      header.allSatisfy(\.isHexDigit)
                else {
                    let text = String(decoding: buffer.prefix(200), as: UTF8.self)
                    throw AndroidErrors.recognise(text, .init())
                        ?? FlippioError(.protocolFault, "adb track-devices printed something that is not a device list: \(AndroidErrors.excerpt(text)).",
                                        remedy: AndroidErrors.transientRemedy)
                }
                guard buffer.count >= 4 + length else { break }
                let body = String(decoding: buffer[4..<(4 + length)], as: UTF8.self)
                buffer.removeFirst(4 + length)
                lists.append(AndroidOutputParser.devices(body))
            }
            return lists
        }
    }
}
