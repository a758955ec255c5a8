import Foundation

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

    func head(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var args = args
        let n = Self.lineCount(&args) ?? 10
        let (inputs, status) = try self.inputs(args, name: "head", io: io)
        for (_, data) in inputs {
            var lines = 0
            var end = data.startIndex
            while end < data.endIndex && lines < n {
                if data[end] == 0x0A { lines += 1 }
                end = data.index(after: end)
            }
            try io.stdout.write(Data(data[data.startIndex..<end]))
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
