import Foundation
import Glibc

/// Small text filters for pipelines: wc, head, tail, grep.
extension DeviceShell {
    /// The named files' contents (or stdin), one input at a time; errors as toybox prints them.
    private func inputs(_ files: [String], name: String, io: ShellIO) throws -> (inputs: [(String, Data)], status: Int32) {
        if files.isEmpty || files == ["-"] {
            var data = Data()
            while let chunk = try io.stdin.read(max: Self.chunkSize) { data.append(contentsOf: chunk) }
            return ([("-", data)], 0)
        }
        var result: [(String, Data)] = []
        var status: Int32 = 0
        for file in files {
            do {
                let fd = try openForReading(file)
                defer { close(fd) }
                let buffer = BufferSink()
                try stream(fd: fd, to: buffer)
                result.append((file, buffer.data))
            } catch let e as DeviceErrno {
                try io.err("\(name): \(file): \(e.text)\n")
                status = 1
            }
        }
        return (result, status)
    }

    func wc(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "lwcm") else {
            try io.err("wc: Unknown option\n")
            return 1
        }
        var flags = parsed.flags
        if flags.isEmpty { flags = ["l", "w", "c"] }
        let (inputs, status) = try self.inputs(parsed.operands, name: "wc", io: io)
        for (name, data) in inputs {
            var fields: [String] = []
            if flags.contains("l") { fields.append(String(data.filter { $0 == 0x0A }.count)) }
            if flags.contains("w") {
                fields.append(String(String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace).count))
            }
            if flags.contains("c") || flags.contains("m") { fields.append(String(data.count)) }
            let line = fields.count == 1 ? fields[0] : fields.map { $0.count < 7 ? String(repeating: " ", count: 7 - $0.count) + $0 : $0 }.joined(separator: " ")
            try io.out(name == "-" ? line + "\n" : line + " " + name + "\n")
        }
        return status
    }

    private static func lineCount(_ args: inout [String]) -> Int? {
        var count: Int?
        var rest: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "-n", i + 1 < args.count { count = Int(args[i + 1].replacingOccurrences(of: "+", with: "")); i += 2; continue }
            if a.hasPrefix("-n") { count = Int(a.dropFirst(2)); i += 1; continue }
            if a.hasPrefix("-"), a.count > 1, let n = Int(a.dropFirst()) { count = n; i += 1; continue }
            rest.append(a); i += 1
        }
        args = rest
        return count
    }

    /// toybox `head [-cn NUM] [-qv] [FILE...]`: the first NUM lines (default 10) or bytes of each
    /// input, reading no more than it needs (`head -c 16` of a 50 MB database reads one chunk);
    /// `==> FILE <==` headers when there is more than one file (unless `-q`) or with `-v`.
    func head(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var args = args
        var bytes: Int?
        var quiet = false, verbose = false
        var rest: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { rest += args[(i + 1)...]; break }
            if a == "-c" || a == "--bytes" {
                guard i + 1 < args.count, let n = Int(args[i + 1]), n >= 0 else {
                    try io.err("head: -c needs a number\n")
                    return 1
                }
                bytes = n; i += 2; continue
            }
            if a.hasPrefix("-c"), let n = Int(a.dropFirst(2)), n >= 0 { bytes = n; i += 1; continue }
            if a == "-q" { quiet = true; i += 1; continue }
            if a == "-v" { verbose = true; i += 1; continue }
            rest.append(a); i += 1
        }
        args = rest
        let lines = Self.lineCount(&args) ?? 10
        let files = args.isEmpty ? ["-"] : args
        var status: Int32 = 0
        for (index, file) in files.enumerated() {
            if (files.count > 1 && !quiet) || verbose {
                try io.out((index > 0 ? "\n" : "") + "==> \(file == "-" ? "standard input" : file) <==\n")
            }
            var fd: Int32 = -1
            if file != "-" {
                do { fd = try openForReading(file) } catch let e as DeviceErrno {
                    try io.err("head: \(file): \(e.text)\n")
                    status = 1
                    continue
                }
            }
            defer { if fd >= 0 { close(fd) } }
            var remainingBytes = bytes ?? Int.max
            var remainingLines = lines
            while bytes != nil ? remainingBytes > 0 : remainingLines > 0 {
                let chunk: [UInt8]
                if fd >= 0 {
                    var buffer = [UInt8](repeating: 0, count: Self.chunkSize)
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, Self.chunkSize) }
                    if n <= 0 { break }
                    chunk = Array(buffer[0..<n])
                } else {
                    guard let data = try io.stdin.read(max: Self.chunkSize) else { break }
                    chunk = data
                }
                var end = 0
                if bytes != nil {
                    end = min(remainingBytes, chunk.count)
                    remainingBytes -= end
                } else {
                    while end < chunk.count, remainingLines > 0 {
                        if chunk[end] == 0x0A { remainingLines -= 1 }
                        end += 1
                    }
                }
                try io.stdout.write(Data(chunk[0..<end]))
            }
        }
        return status
    }

    func tail(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var args = args
        let n = Self.lineCount(&args) ?? 10
        let (inputs, status) = try self.inputs(args, name: "tail", io: io)
        for (_, data) in inputs {
            var lines = data.split(separator: 0x0A, omittingEmptySubsequences: false)
            let endsWithNewline = data.last == 0x0A
            if endsWithNewline { lines.removeLast() }
            let kept = lines.suffix(n)
            var out = Data(kept.joined(separator: [0x0A]))
            if endsWithNewline && !kept.isEmpty { out.append(0x0A) }
            try io.stdout.write(out)
        }
        return status
    }

    /// `grep [-v -i -c -q -F -E -n -l] PATTERN [FILE...]`: basic or extended regular expressions.
    func grep(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "viclqFEnHhswx", withValue: "e"), 
              let pattern = parsed.values["e"] ?? parsed.operands.first else {
            try io.err("grep: No pattern\n")
            return 2
        }
        let files = parsed.values["e"] != nil ? parsed.operands : Array(parsed.operands.dropFirst())
        let f = parsed.flags
        var source = f.contains("F") ? NSRegularExpression.escapedPattern(for: pattern) : pattern
        if !f.contains("E") && !f.contains("F") {
            // Basic regular expressions: \( \) \{ \} \| are the operators, bare ones are literal.
            source = source.replacingOccurrences(of: "\\(", with: "\u{1}").replacingOccurrences(of: "\\)", with: "\u{2}")
                .replacingOccurrences(of: "(", with: "\\(").replacingOccurrences(of: ")", with: "\\)")
                .replacingOccurrences(of: "\u{1}", with: "(").replacingOccurrences(of: "\u{2}", with: ")")
                .replacingOccurrences(of: "\\|", with: "|")
        }
        if f.contains("x") { source = "^(?:" + source + ")$" }
        if f.contains("w") { source = "\\b(?:" + source + ")\\b" }
        guard let regex = try? NSRegularExpression(pattern: source, options: f.contains("i") ? [.caseInsensitive] : []) else {
            try io.err("grep: bad regex '\(pattern)'\n")
            return 2
        }
        let (inputs, readStatus) = try self.inputs(files, name: "grep", io: io)
        var matched = false
        let showNames = (files.count > 1 || f.contains("H")) && !f.contains("h")
        for (name, data) in inputs {
            var count = 0
            let text = String(decoding: data, as: UTF8.self)
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            if text.hasSuffix("\n") { lines.removeLast() }
            for (index, line) in lines.enumerated() {
                let s = String(line)
                let hit = regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
                guard hit != f.contains("v") else { continue }
                count += 1
                matched = true
                if f.contains("q") { return 0 }
                if f.contains("c") || f.contains("l") { continue }
                var out = showNames ? name + ":" : ""
                if f.contains("n") { out += "\(index + 1):" }
                try io.out(out + s + "\n")
            }
            if f.contains("c") { try io.out((showNames ? name + ":" : "") + "\(count)\n") }
            if f.contains("l") && count > 0 { try io.out(name + "\n") }
        }
        if readStatus != 0 && !f.contains("s") { return 2 }
        return matched ? 0 : 1
    }

    /// `ln -s TARGET LINK` (symbolic links only; they resolve inside the device).
    func ln(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "sfnv"), parsed.operands.count == 2 else {
            try io.err("ln: Needs 2 arguments\n")
            return 1
        }
        guard parsed.flags.contains("s") else {
            try io.err("ln: hard links are not supported by this device\n")
            return 1
        }
        let (target, link) = (parsed.operands[0], parsed.operands[1])
        do {
            let r = try resolve(link, followLast: false)
            try fs.check(r, .write)
            if parsed.flags.contains("f") { unlink(r.host) }
            guard symlink(target, r.host) == 0 else { throw DeviceErrno.current() }
            return 0
        } catch let e as DeviceErrno {
            try io.err("ln: cannot create symbolic link from '\(target)' to '\(link)': \(e.text)\n")
            return 1
        }
    }
}

// MARK: - printf

extension DeviceShell {
    /// toybox `printf FORMAT [ARGUMENT...]` (Android's mksh has no printf builtin, so `sh -c`
    /// and `find -exec` both run this one): `\` escapes (abefnrtv, `\NNN` octal, `\xHH`),
    /// `%%`, and `%s %c %b %d %i %o %u %x %X` with width and precision; the format repeats while
    /// arguments remain and it consumed one.
    func printf(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let format = args.first else {
            try io.err("printf: Need 1 argument\n")
            return 1
        }
        var arguments = args.dropFirst()[...]
        var out = [UInt8]()
        var status: Int32 = 0

        /// toybox `handle_slash`: the byte an escape stands for; `index` is just past the `\`.
        func escape(_ bytes: [UInt8], _ index: inout Int, posix: Bool) -> UInt8 {
            guard index < bytes.count else { return UInt8(ascii: "\\") }
            var base = 0
            var i = index
            if bytes[i] == UInt8(ascii: "x") {
                base = 16; i += 1
            } else {
                if posix, bytes[i] == UInt8(ascii: "0") { i += 1 }
                if i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(bytes[i]) { base = 8 } else if i != index {
                    index = i
                    return 0
                }
            }
            if base == 0 {
                let table: [UInt8: UInt8] = [UInt8(ascii: "a"): 7, UInt8(ascii: "b"): 8, UInt8(ascii: "e"): 27, UInt8(ascii: "f"): 12,
                                             UInt8(ascii: "n"): 10, UInt8(ascii: "r"): 13, UInt8(ascii: "t"): 9, UInt8(ascii: "v"): 11,
                                             UInt8(ascii: "\\"): UInt8(ascii: "\\"), UInt8(ascii: "\""): UInt8(ascii: "\""),
                                             UInt8(ascii: "'"): UInt8(ascii: "'")]
                guard let value = table[bytes[i]] else { return UInt8(ascii: "\\") }
                index = i + 1
                return value
            }
            var length = base == 16 ? 2 : 3
            var result = 0
            while length > 0, i < bytes.count, let digit = Int(String(UnicodeScalar(bytes[i])), radix: base) {
                result = result * base + digit
                i += 1; length -= 1
            }
            index = i
            return UInt8(truncatingIfNeeded: result)
        }

        let bytes = Array(format.utf8)
        repeat {
            var consumed = false
            var i = 0
            while i < bytes.count {
                let c = bytes[i]
                if c == UInt8(ascii: "\\") {
                    i += 1
                    if i < bytes.count, bytes[i] == UInt8(ascii: "c") { try io.stdout.write(Data(out)); return status }
                    out.append(escape(bytes, &i, posix: false))
                    continue
                }
                guard c == UInt8(ascii: "%"), i + 1 < bytes.count else { out.append(c); i += 1; continue }
                if bytes[i + 1] == UInt8(ascii: "%") { out.append(c); i += 2; continue }
                i += 1
                var flags = ""
                while i < bytes.count, "-+# '0".utf8.contains(bytes[i]) { flags.append(Character(UnicodeScalar(bytes[i]))); i += 1 }
                var width: Int?, precision: Int?
                func number() -> Int? {
                    if i < bytes.count, bytes[i] == UInt8(ascii: "*") {
                        i += 1
                        return arguments.popFirst().flatMap { Int($0) } ?? 0
                    }
                    var digits = ""
                    while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) {
                        digits.append(Character(UnicodeScalar(bytes[i]))); i += 1
                    }
                    return digits.isEmpty ? nil : Int(digits)
                }
                width = number()
                if i < bytes.count, bytes[i] == UInt8(ascii: ".") { i += 1; precision = number() ?? 0 }
                guard i < bytes.count else {
                    try io.stdout.write(Data(out))
                    try io.err("printf: bad \(format)\n")
                    return 1
                }
                let conversion = Character(UnicodeScalar(bytes[i]))
                i += 1
                consumed = true
                let argument = arguments.popFirst() ?? ""
                var field: [UInt8]
                switch conversion {
                case "s":
                    field = Array(argument.utf8)
                    if let precision { field = Array(field.prefix(precision)) }
                case "c":
                    field = Array(argument.utf8.prefix(1))
                case "b":
                    field = []
                    let a = Array(argument.utf8)
                    var j = 0
                    while j < a.count {
                        if a[j] == UInt8(ascii: "\\") { j += 1; field.append(escape(a, &j, posix: true)) } else { field.append(a[j]); j += 1 }
                    }
                case "d", "i", "o", "u", "x", "X":
                    var value: Int64 = 0
                    if let first = argument.first, first == "'" || first == "\"" {
                        value = Int64(argument.unicodeScalars.dropFirst().first?.value ?? 0)
                    } else if !argument.isEmpty {
                        let trimmed = argument.trimmingCharacters(in: .whitespaces)
                        let parsed = trimmed.lowercased().hasPrefix("0x") ? Int64(trimmed.dropFirst(2), radix: 16) : Int64(trimmed)
                        if let parsed { value = parsed } else {
                            try io.err("printf: bad %\(conversion) \(argument)\n")
                            status = 1
                        }
                    }
                    let text: String = switch conversion {
                    case "o": String(value, radix: 8)
                    case "x": String(value, radix: 16)
                    case "X": String(value, radix: 16, uppercase: true)
                    case "u": String(UInt64(bitPattern: value))
                    default: String(value)
                    }
                    field = Array(text.utf8)
                default:
                    try io.stdout.write(Data(out))
                    try io.err("printf: bad %\(conversion)@\(i - 1)\n")
                    return 1
                }
                if let width, field.count < width {
                    let pad = [UInt8](repeating: flags.contains("0") && conversion != "s" ? UInt8(ascii: "0") : UInt8(ascii: " "),
                                      count: width - field.count)
                    field = flags.contains("-") ? field + pad.map { _ in UInt8(ascii: " ") } : pad + field
                }
                out += field
            }
            if !consumed || arguments.isEmpty { break }
        } while true
        try io.stdout.write(Data(out))
        return status
    }
}
