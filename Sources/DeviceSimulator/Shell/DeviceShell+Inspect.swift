import Foundation
import Glibc

/// toybox's ls, stat, find and test over the device folder.
extension DeviceShell {
    // MARK: - ls

    func ls(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "laAd1RhtrSnicFZs") else {
            try io.err("ls: Unknown option\n")
            return 1
        }
        let long = parsed.flags.contains("l") || parsed.flags.contains("n")
        let all = parsed.flags.contains("a")
        let almostAll = parsed.flags.contains("A")
        let directoryItself = parsed.flags.contains("d")
        let operands = parsed.operands.isEmpty ? ["."] : parsed.operands
        var status: Int32 = 0
        var files: [(shown: String, resolved: DeviceFileSystem.Resolved)] = []
        var dirs: [(shown: String, resolved: DeviceFileSystem.Resolved)] = []
        for operand in operands {
            do {
                let r = try resolve(operand, followLast: !long || operand.hasSuffix("/"))
                _ = try fs.status(r)
                if !directoryItself && fs.isDirectory(r) { dirs.append((operand, r)) } else { files.append((operand, r)) }
            } catch let e as DeviceErrno {
                try io.err("ls: \(operand): \(e.text)\n")
                status = 1
            }
        }
        if !files.isEmpty { try printEntries(files.map { ($0.shown, $0.resolved) }, long: long, total: false, io: io) }
        for (index, dir) in dirs.enumerated() {
            if operands.count > 1 {
                if index > 0 || !files.isEmpty { try io.out("\n") }
                try io.out("\(dir.shown):\n")
            }
            do {
                var names = try fs.list(dir.resolved)
                if !all && !almostAll { names = names.filter { !$0.hasPrefix(".") } }
                if all { names = [".", ".."] + names }
                var entries: [(String, DeviceFileSystem.Resolved)] = []
                for name in names {
                    let path = name == "." ? dir.resolved.path : name == ".." ? dir.resolved.path + "/.." : dir.resolved.path + "/" + name
                    entries.append((name, try fs.resolve(path, cwd: "/", followLast: false)))
                }
                try printEntries(entries, long: long, total: true, io: io)
            } catch let e as DeviceErrno {
                try io.err("ls: \(dir.shown): \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    private func printEntries(_ entries: [(String, DeviceFileSystem.Resolved)], long: Bool, total: Bool, io: ShellIO) throws {
        guard long else {
            for (name, _) in entries { try io.out(name + "\n") }
            return
        }
        var rows: [[String]] = []
        var blocks = 0
        for (name, r) in entries {
            var st = Glibc.stat()
            guard lstat(r.host, &st) == 0 else { continue }
            blocks += Int(st.st_blocks) / 2
            let owner = device.userName(uid: fs.ownerUID(r.components))
            var shown = name
            if (st.st_mode & S_IFMT) == S_IFLNK {
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(r.host, &buffer, buffer.count - 1)
                if n >= 0 { shown += " -> " + String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            }
            rows.append([Self.modeString(st.st_mode), String(st.st_nlink), owner, fs.groupName(r.components),
                         String(st.st_size), Self.formatDate(st.st_mtim.tv_sec, seconds: false), shown])
        }
        if total { try io.out("total \(blocks)\n") }
        let widths = (0..<5).map { col in rows.map { $0[col].count }.max() ?? 0 }
        for row in rows {
            let links = String(repeating: " ", count: widths[1] - row[1].count) + row[1]
            let owner = row[2] + String(repeating: " ", count: widths[2] - row[2].count)
            let group = row[3] + String(repeating: " ", count: widths[3] - row[3].count)
            let size = String(repeating: " ", count: widths[4] - row[4].count) + row[4]
            try io.out("\(row[0]) \(links) \(owner) \(group) \(size) \(row[5]) \(row[6])\n")
        }
    }

    static func modeString(_ mode: mode_t) -> String {
        var s = ""
        switch mode & S_IFMT {
        case S_IFDIR: s = "d"
        case S_IFLNK: s = "l"
        case S_IFCHR: s = "c"
        case S_IFBLK: s = "b"
        case S_IFIFO: s = "p"
        case S_IFSOCK: s = "s"
        default: s = "-"
        }
        let bits: [(mode_t, Character)] = [(0o400, "r"), (0o200, "w"), (0o100, "x"), (0o040, "r"), (0o020, "w"),
                                           (0o010, "x"), (0o004, "r"), (0o002, "w"), (0o001, "x")]
        for (bit, c) in bits { s.append(mode & bit != 0 ? c : "-") }
        return s
    }

    static func formatDate(_ seconds: Int, seconds withSeconds: Bool, nanoseconds: Int = 0) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        let date = String(format: "%04d-%02d-%02d %02d:%02d", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                          Int(tm.tm_hour), Int(tm.tm_min))
        guard withSeconds else { return date }
        return date + String(format: ":%02d.%09d +0000", Int(tm.tm_sec), nanoseconds)
    }

    static func typeName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "directory"
        case S_IFLNK: return "symbolic link"
        case S_IFCHR: return "character device"
        case S_IFBLK: return "block device"
        case S_IFIFO: return "FIFO (named pipe)"
        case S_IFSOCK: return "socket"
        default: return "regular file"
        }
    }

    // MARK: - stat

    func stat(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var format: String?
        var follow = false
        var files: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "-c" || a == "--format" {
                guard i + 1 < args.count else { try io.err("stat: Missing argument to -c\n"); return 1 }
                format = args[i + 1]; i += 2; continue
            }
            if a.hasPrefix("--format=") { format = String(a.dropFirst(9)); i += 1; continue }
            if a.hasPrefix("-c") && a.count > 2 { format = String(a.dropFirst(2)); i += 1; continue }
            if a == "-L" { follow = true; i += 1; continue }
            if a == "-t" || a == "-f" { i += 1; continue }
            files.append(a); i += 1
        }
        guard !files.isEmpty else {
            try io.err("stat: Needs 1 argument\n")
            return 1
        }
        let fmt = format ?? "  File: %N\n  Size: %s\t Blocks: %b\t IO Blocks: %B\t%F\nDevice: %Dh/%dd\t Inode: %i\t Links: %h\nAccess: (%a/%A)\tUid: (%5u/%8U)\tGid: (%5g/%8G)\nAccess: %x\nModify: %y\nChange: %z"
        var status: Int32 = 0
        for file in files {
            do {
                let r = try resolve(file, followLast: follow)
                let st = try fs.status(r)
                try io.out(render(fmt, file: file, resolved: r, st: st) + "\n")
            } catch let e as DeviceErrno {
                try io.err("stat: '\(file)': \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    private func render(_ format: String, file: String, resolved r: DeviceFileSystem.Resolved, st: Glibc.stat) -> String {
        var out = ""
        var chars = Array(format)[...]
        let ownerUID = fs.ownerUID(r.components)
        while let c = chars.popFirst() {
            guard c == "%" else { out.append(c); continue }
            // Optional width, as in %5u.
            var width = ""
            while let d = chars.first, d.isNumber || d == "-" { width.append(d); chars.removeFirst() }
            guard let f = chars.popFirst() else { out.append("%"); break }
            var value: String
            switch f {
            case "%": value = "%"
            case "n": value = file
            case "N": value = "'\(file)'"
            case "s": value = String(st.st_size)
            case "Y": value = String(st.st_mtim.tv_sec)
            case "X": value = String(st.st_atim.tv_sec)
            case "Z": value = String(st.st_ctim.tv_sec)
            case "y": value = Self.formatDate(st.st_mtim.tv_sec, seconds: true, nanoseconds: st.st_mtim.tv_nsec)
            case "x": value = Self.formatDate(st.st_atim.tv_sec, seconds: true, nanoseconds: st.st_atim.tv_nsec)
            case "z": value = Self.formatDate(st.st_ctim.tv_sec, seconds: true, nanoseconds: st.st_ctim.tv_nsec)
            case "F": value = Self.typeName(st.st_mode)
            case "a": value = String(st.st_mode & 0o7777, radix: 8)
            case "A": value = Self.modeString(st.st_mode)
            case "f": value = String(st.st_mode, radix: 16)
            case "u": value = String(ownerUID)
            case "U": value = device.userName(uid: ownerUID)
            case "g": value = String(ownerUID)
            case "G": value = fs.groupName(r.components)
            case "i": value = String(st.st_ino)
            case "h": value = String(st.st_nlink)
            case "b": value = String(st.st_blocks)
            case "B": value = "512"
            case "o": value = "4096"
            case "d": value = String(st.st_dev)
            case "D": value = String(st.st_dev, radix: 16)
            case "t", "T": value = "0"
            case "C": value = "u:object_r:app_data_file:s0"
            default: value = "?"
            }
            if let w = Int(width) {
                let pad = String(repeating: " ", count: max(0, abs(w) - value.count))
                value = w < 0 ? value + pad : pad + value
            }
            out += value
        }
        return out
    }

    // MARK: - find

    private indirect enum FindExpression {
        case name(String, caseless: Bool)
        case path(String)
        case type(Character)
        case empty
        case size(String)
        /// toybox: true; a directory it is reached for is not descended into.
        case prune
        case print(terminator: String)
        /// `-exec CMD... {} ;` (runs per file; true when it exits 0) or `-exec CMD... {} +`
        /// (collects names, runs once per batch; always true). `index` numbers the -exec.
        case exec([String], plus: Bool, index: Int)
        case constant(Bool)
        case not(FindExpression)
        case and(FindExpression, FindExpression)
        case or(FindExpression, FindExpression)

        var prints: Bool {
            switch self {
            case .print, .exec: return true
            case .not(let e): return e.prints
            case .and(let a, let b), .or(let a, let b): return a.prints || b.prints
            default: return false
            }
        }
    }

    private struct FindSyntaxError: Error { let message: String }

    private final class FindParser {
        var tokens: [String]
        var index = 0
        var execCount = 0
        init(_ tokens: [String]) { self.tokens = tokens }
        var atEnd: Bool { index >= tokens.count }
        func next() -> String? { atEnd ? nil : tokens[index] }
        func take() -> String { defer { index += 1 }; return tokens[index] }

        func parseOr() throws -> FindExpression {
            var left = try parseAnd()
            while next() == "-o" || next() == "-or" {
                _ = take()
                left = .or(left, try parseAnd())
            }
            return left
        }

        func parseAnd() throws -> FindExpression {
            var left = try parseUnary()
            while let t = next(), t != "-o", t != "-or", t != ")" {
                if t == "-a" || t == "-and" { _ = take() }
                left = .and(left, try parseUnary())
            }
            return left
        }

        func parseUnary() throws -> FindExpression {
            guard let t = next() else { throw FindSyntaxError(message: "bad arg ''") }
            if t == "!" || t == "-not" {
                _ = take()
                return .not(try parseUnary())
            }
            if t == "(" {
                _ = take()
                let inner = try parseOr()
                guard next() == ")" else { throw FindSyntaxError(message: "Missing ')'") }
                _ = take()
                return inner
            }
            return try parsePrimary()
        }

        func parsePrimary() throws -> FindExpression {
            let t = take()
            func argument() throws -> String {
                guard !atEnd else { throw FindSyntaxError(message: "'\(t)' needs 1 arg") }
                return take()
            }
            switch t {
            case "-name": return .name(try argument(), caseless: false)
            case "-iname": return .name(try argument(), caseless: true)
            case "-path", "-wholename": return .path(try argument())
            case "-type":
                let arg = try argument()
                guard let c = arg.first, arg.count == 1, "fdlpscb".contains(c) else {
                    throw FindSyntaxError(message: "bad -type '\(arg)'")
                }
                return .type(c)
            case "-empty": return .empty
            case "-prune": return .prune
            case "-size":
                let arg = try argument()
                _ = try Self.sizeValue(arg)
                return .size(arg)
            case "-print": return .print(terminator: "\n")
            case "-print0": return .print(terminator: "\0")
            case "-exec":
                // toybox: the words up to `;`, or up to `{} +`; "-exec" alone or "-exec ;" is an error.
                guard let first = next(), first != ";" else { throw FindSyntaxError(message: "'exec' needs 1 arg") }
                var words: [String] = []
                while let word = next() {
                    _ = take()
                    if word == ";" { execCount += 1; return .exec(words, plus: false, index: execCount) }
                    if word == "{}", next() == "+" {
                        _ = take()
                        execCount += 1
                        return .exec(words + ["{}"], plus: true, index: execCount)
                    }
                    words.append(word)
                }
                throw FindSyntaxError(message: "-exec without \(words.contains("{}") ? "\\;" : "{}")")
            case "-true": return .constant(true)
            case "-false": return .constant(false)
            case "-xdev", "-depth", "-mount", "-follow": return .constant(true)
            default: throw FindSyntaxError(message: "bad arg '\(t)'")
            }
        }

        /// toybox 0.8.9's (Android 14) `compare_numsign(st_size, 512, arg)` for `-size`: the sign,
        /// and the size in bytes. A bare number counts 512-byte blocks (not rounded: `-size 1` is
        /// exactly 512 bytes); a suffix is atolx's (`c` bytes, `w` 2, `b` 512, `k` `m` `g`... powers
        /// of 1024). 0.8.9 compares directories' sizes too (only later versions imply `-type f`).
        static func sizeValue(_ arg: String) throws -> (sign: Character?, bytes: Int64) {
            var text = Substring(arg)
            var sign: Character?
            if let first = text.first, first == "+" || first == "-" { sign = first; text = text.dropFirst() }
            // Without a sign toybox wants a digit first; with one, atolx judges the rest.
            guard let first = text.first, first.isASCII, first.isNumber else {
                throw FindSyntaxError(message: sign == nil ? "\(text) not [+-]N" : "not integer: \(text)")
            }
            let digits = text.prefix { $0.isASCII && $0.isNumber }
            guard var value = Int64(digits) else { throw FindSyntaxError(message: "not integer: \(text)") }
            let rest = text.dropFirst(digits.count)
            if rest.isEmpty {
                value *= 512
            } else {
                let multipliers: [Character: Int64] = ["c": 1, "w": 2, "b": 512, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
                                                       "t": 1 << 40, "p": 1 << 50, "e": 1 << 60]
                guard rest.count == 1, let multiplier = multipliers[Character(rest.lowercased())] else {
                    throw FindSyntaxError(message: "not integer: \(text)")
                }
                value *= multiplier
            }
            return (sign, value)
        }
    }

    func find(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var paths: [String] = []
        var index = 0
        while index < args.count, !args[index].hasPrefix("-"), args[index] != "(", args[index] != "!" {
            paths.append(args[index]); index += 1
        }
        if paths.isEmpty { paths = ["."] }
        // -maxdepth / -mindepth are options wherever they stand.
        var tokens: [String] = []
        var maxDepth = Int.max
        var minDepth = 0
        var i = index
        while i < args.count {
            if (args[i] == "-maxdepth" || args[i] == "-mindepth"), i + 1 < args.count, let n = Int(args[i + 1]) {
                if args[i] == "-maxdepth" { maxDepth = n } else { minDepth = n }
                i += 2; continue
            }
            tokens.append(args[i]); i += 1
        }
        var expression = FindExpression.constant(true)
        if !tokens.isEmpty {
            let parser = FindParser(tokens)
            do {
                expression = try parser.parseOr()
                if !parser.atEnd { throw FindSyntaxError(message: "bad arg '\(parser.take())'") }
            } catch let e as FindSyntaxError {
                try io.err("find: \(e.message)\n")
                return 1
            }
        }
        let autoPrint = !expression.prints
        var status: Int32 = 0
        // `-exec ... {} +`: names collected per -exec, run once at the end (toybox flushes when
        // the argument list passes its size limit; the listings here stay far below it).
        var batches: [Int: (words: [String], names: [String])] = [:]
        let runExec: (_ words: [String], _ names: [String]) throws -> Int32 = { [self] words, names in
            var argv: [String] = []
            for word in words { if word == "{}" { argv += names } else { argv.append(word) } }
            if let status = try exec(argv, io: io) { return status }
            // toybox's xexec: the child cannot exec the command.
            try io.err("find: exec \(argv[0]): No such file or directory\n")
            return 127
        }

        func visit(_ shown: String, _ r: DeviceFileSystem.Resolved, depth: Int) throws {
            if cancelled() { throw ConnectionClosed() }
            var st = Glibc.stat()
            guard lstat(r.host, &st) == 0 else { return }
            let isDir = (st.st_mode & S_IFMT) == S_IFDIR
            var pruned = false
            if depth >= minDepth {
                let matched = try evaluate(expression, shown: shown, r: r, st: st, io: io, onPrune: { pruned = true }) { words, plus, index in
                    guard plus else { return try runExec(words, [shown]) == 0 }
                    batches[index, default: (words, [])].names.append(shown)
                    return true
                }
                if autoPrint && matched { try io.out(shown + "\n") }
            }
            guard isDir, depth < maxDepth, !pruned else { return }
            let names: [String]
            do { names = try fs.list(r) } catch let e as DeviceErrno {
                try io.err("find: \(shown): \(e.text)\n")
                status = 1
                return
            }
            for name in names {
                let child = try fs.resolve(r.path + "/" + name, cwd: "/", followLast: false)
                try visit(shown.hasSuffix("/") ? shown + name : shown + "/" + name, child, depth: depth + 1)
            }
        }

        for path in paths {
            do {
                let r = try resolve(path)
                _ = try fs.status(r)
                try visit(path, r, depth: 0)
            } catch let e as DeviceErrno {
                try io.err("find: \(path): \(e.text)\n")
                status = 1
            }
        }
        for index in batches.keys.sorted() {
            let batch = batches[index]!
            // toybox ORs each batch's exit status into its own.
            status |= try runExec(batch.words, batch.names)
        }
        return status
    }

    /// Evaluates `e` for one file, left to right with short-circuit, as toybox does: actions
    /// (`-print`, `-exec`) run as they are reached. `onExec` runs or collects an `-exec`.
    private func evaluate(_ e: FindExpression, shown: String, r: DeviceFileSystem.Resolved, st: Glibc.stat, io: ShellIO,
                          onPrune: () -> Void,
                          onExec: (_ words: [String], _ plus: Bool, _ index: Int) throws -> Bool) throws -> Bool {
        func recurse(_ inner: FindExpression) throws -> Bool {
            try evaluate(inner, shown: shown, r: r, st: st, io: io, onPrune: onPrune, onExec: onExec)
        }
        switch e {
        case .name(let pattern, let caseless):
            let base = r.components.last ?? "/"
            if caseless { return fnmatch(pattern.lowercased(), base.lowercased(), 0) == 0 }
            return fnmatch(pattern, base, 0) == 0
        case .path(let pattern):
            return fnmatch(pattern, shown, 0) == 0
        case .type(let c):
            switch st.st_mode & S_IFMT {
            case S_IFDIR: return c == "d"
            case S_IFLNK: return c == "l"
            case S_IFREG: return c == "f"
            case S_IFIFO: return c == "p"
            case S_IFSOCK: return c == "s"
            case S_IFCHR: return c == "c"
            case S_IFBLK: return c == "b"
            default: return false
            }
        case .empty:
            if (st.st_mode & S_IFMT) == S_IFDIR { return ((try? fs.list(r)) ?? ["x"]).isEmpty }
            return st.st_size == 0
        case .size(let arg):
            guard let spec = try? FindParser.sizeValue(arg) else { return false }
            let size = Int64(st.st_size)
            switch spec.sign {
            case "+": return size > spec.bytes
            case "-": return size < spec.bytes
            default: return size == spec.bytes
            }
        case .prune:
            if (st.st_mode & S_IFMT) == S_IFDIR { onPrune() }
            return true
        case .print(let terminator):
            try io.out(shown + terminator)
            return true
        case .exec(let words, let plus, let index):
            return try onExec(words, plus, index)
        case .constant(let b):
            return b
        case .not(let inner):
            return try !recurse(inner)
        case .and(let a, let b):
            return try recurse(a) && recurse(b)
        case .or(let a, let b):
            return try recurse(a) || recurse(b)
        }
    }

    // MARK: - test, [

    func test(_ args: [String], io: ShellIO, bracket: Bool) throws -> Int32 {
        var args = args
        if bracket {
            guard args.last == "]" else {
                try io.err("/system/bin/sh: [: missing ]\n")
                return 2
            }
            args.removeLast()
        }
        return evaluateTest(args[...]) ? 0 : 1
    }

    private func evaluateTest(_ args: ArraySlice<String>) -> Bool {
        if let o = args.firstIndex(of: "-o"), o != args.startIndex {
            return evaluateTest(args[args.startIndex..<o]) || evaluateTest(args[(o + 1)...])
        }
        if let a = args.firstIndex(of: "-a"), a != args.startIndex, args.count > 2 {
            return evaluateTest(args[args.startIndex..<a]) && evaluateTest(args[(a + 1)...])
        }
        let a = Array(args)
        switch a.count {
        case 0: return false
        case 1: return !a[0].isEmpty
        case 2:
            if a[0] == "!" { return !evaluateTest(args.dropFirst()) }
            return unaryTest(a[0], a[1])
        case 3:
            if a[0] == "!" { return !evaluateTest(args.dropFirst()) }
            return binaryTest(a[0], a[1], a[2])
        default:
            if a[0] == "!" { return !evaluateTest(args.dropFirst()) }
            return false
        }
    }

    private func unaryTest(_ op: String, _ operand: String) -> Bool {
        switch op {
        case "-z": return operand.isEmpty
        case "-n": return !operand.isEmpty
        default: break
        }
        guard let r = try? resolve(operand, followLast: op != "-L" && op != "-h"),
              let st = try? fs.status(r) else { return false }
        let type = st.st_mode & S_IFMT
        switch op {
        case "-e": return true
        case "-f": return type == S_IFREG
        case "-d": return type == S_IFDIR
        case "-L", "-h": return type == S_IFLNK
        case "-s": return st.st_size > 0
        case "-r": return fs.allowed(r.components, .read)
        case "-w": return fs.allowed(r.components, .write)
        case "-x": return st.st_mode & 0o111 != 0
        case "-p": return type == S_IFIFO
        case "-S": return type == S_IFSOCK
        case "-b": return type == S_IFBLK
        case "-c": return type == S_IFCHR
        default: return false
        }
    }

    private func binaryTest(_ l: String, _ op: String, _ r: String) -> Bool {
        switch op {
        case "=", "==": return l == r
        case "!=": return l != r
        case "-eq", "-ne", "-lt", "-le", "-gt", "-ge":
            guard let a = Int(l), let b = Int(r) else { return false }
            switch op {
            case "-eq": return a == b
            case "-ne": return a != b
            case "-lt": return a < b
            case "-le": return a <= b
            case "-gt": return a > b
            default: return a >= b
            }
        default: return false
        }
    }
}
