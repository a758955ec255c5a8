import Foundation
import Glibc

/// toybox's `dd` and `truncate` (toys/posix/dd.c, toys/other/truncate.c), which a delta push
/// runs on the device to write changed pages into a copy of the database in place.
extension DeviceShell {
    /// A toybox number: decimal (or `0x` hex) with an optional unit suffix of `atolx`
    /// (`c`=1, `w`=2, `b`=512, `k`, `m`, `g`, `t`, `p`, `e` as powers of 1024, `kd`... as powers of 1000).
    static func toyboxNumber(_ text: String) -> Int64? {
        var digits = Substring(text)
        var radix = 10
        if digits.hasPrefix("0x") { digits = digits.dropFirst(2); radix = 16 }
        let numberEnd = digits.firstIndex { !$0.isHexDigit || (radix == 10 && !$0.isNumber) } ?? digits.endIndex
        guard numberEnd != digits.startIndex, var value = Int64(digits[..<numberEnd], radix: radix) else { return nil }
        var rest = digits[numberEnd...]
        if let suffix = rest.first, let index = "cwbkmgtpe".firstIndex(of: Character(suffix.lowercased())) {
            rest = rest.dropFirst()
            let shift = "cwbkmgtpe".distance(from: "cwbkmgtpe".startIndex, to: index) - 2
            if shift == -1 { value *= 2 } else if shift == 0 { value *= 512 } else if shift > 0 {
                if rest.first?.lowercased() == "d" {
                    rest = rest.dropFirst()
                    for _ in 0..<shift { value *= 1000 }
                } else {
                    value <<= Int64(shift * 10)
                }
            }
        }
        return rest.allSatisfy(\.isWhitespace) ? value : nil
    }

    // MARK: - dd

    /// toybox `dd`: `if= of= bs= ibs= obs= count= skip= seek= status= conv=notrunc,…`, its
    /// "N+M records in/out" and "BYTES bytes (H) copied, S s, R/s" summary on stderr.
    ///
    /// The `failDdAfterRuns` fault (faults.json) lets N runs of `dd` succeed, then makes the next
    /// one stop half-way with "write error: No space left on device" (exit 1), as a full disk does.
    func dd(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var iname: String?, oname: String?
        var bs: Int64 = 0, ibs: Int64 = 512, obs: Int64 = 512, count = Int64.max, seek: Int64 = 0, skip: Int64 = 0
        var notrunc = false, showRecords = true, showXfer = true
        func bad(_ message: String) throws -> Int32 { try io.err("dd: \(message)\n"); return 1 }
        for arg in args {
            guard let eq = arg.firstIndex(of: "=") else { return try bad("bad arg \(arg)") }
            let key = String(arg[..<eq]), value = String(arg[arg.index(after: eq)...])
            func number(min: Int64) throws -> Int64? {
                guard let n = Self.toyboxNumber(value), n >= min else { return nil }
                return n
            }
            switch key {
            case "bs", "ibs", "obs", "count", "seek", "skip":
                guard let n = try number(min: ["bs", "ibs", "obs"].contains(key) ? 1 : 0) else {
                    return try bad(Self.toyboxNumber(value) == nil ? "not integer: \(value)" : "bad \(value)")
                }
                switch key {
                case "bs": bs = n
                case "ibs": ibs = n
                case "obs": obs = n
                case "count": count = n
                case "seek": seek = n
                default: skip = n
                }
            case "if": iname = value
            case "of": oname = value
            case "status":
                if value == "noxfer" { showXfer = false } else if value == "none" { showXfer = false; showRecords = false }
                else { return try bad("unknown status '\(value)'") }
            case "conv":
                var rest = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                rest.removeAll { ["fsync", "noerror", "sync", "nocreat"].contains($0) }
                if value.split(separator: ",").contains("notrunc") { notrunc = true }
                rest.removeAll { $0 == "notrunc" }
                if !rest.allSatisfy(\.isEmpty) { return try bad("bad conv=\(rest.joined(separator: ","))") }
            case "iflag", "oflag": break
            default: return try bad("bad arg \(arg)")
            }
        }
        if bs > 0 { ibs = bs; obs = bs }
        let started = Date()
        var bytes: Int64 = 0, inFull = 0, inPart = 0, outFull = 0, outPart = 0
        func summary() throws {
            if showRecords { try io.err("\(inFull)+\(inPart) records in\n\(outFull)+\(outPart) records out\n") }
            if showXfer {
                let ms = max(Int64(Date().timeIntervalSince(started) * 1000), 1)
                let rate = bytes * 1000 > bytes ? bytes * 1000 / ms : bytes / ((ms + 999) / 1000)
                try io.err("\(bytes) bytes (\(Self.humanReadable(bytes))) copied, \(ms / 1000).\(String(format: "%03d", Int(ms % 1000))) s, \(Self.humanReadable(rate))/s\n")
            }
        }

        // Input.
        var input: Int32 = -1
        if let iname {
            do { input = try openForReading(iname) } catch let e as DeviceErrno {
                try io.err("dd: \(iname): \(e.text)\n")
                try summary()
                return 1
            }
        }
        defer { if input >= 0 { close(input) } }
        // Output: created as the current user; truncated unless conv=notrunc (toybox truncates to
        // seek*obs when seeking, to 0 at open otherwise).
        var output: Int32 = -1
        if let oname {
            do {
                let r = try resolve(oname)
                try fs.check(r, .write)
                output = open(r.host, O_CREAT | O_WRONLY | O_CLOEXEC | (notrunc || seek > 0 ? 0 : O_TRUNC), 0o666)
                guard output >= 0 else { throw DeviceErrno.current() }
            } catch let e as DeviceErrno {
                try io.err("dd: \(oname): \(e.text)\n")
                try summary()
                return 1
            }
        }
        defer { if output >= 0 { close(output) } }

        func readBlock(_ size: Int) throws -> [UInt8] {
            if input >= 0 {
                var buffer = [UInt8](repeating: 0, count: size)
                let n = buffer.withUnsafeMutableBytes { Glibc.read(input, $0.baseAddress!, size) }
                guard n >= 0 else { throw DeviceErrno.current() }
                return Array(buffer[0..<n])
            }
            return try io.stdin.read(max: size).map { Array($0) } ?? []
        }

        if skip > 0 {
            if input >= 0, lseek(input, off_t(skip * ibs), SEEK_CUR) >= 0 {
                // seeked
            } else {
                var left = skip * ibs
                while left > 0 {
                    let block = try readBlock(Int(min(left, ibs)))
                    if block.isEmpty { try io.out("\(iname ?? "stdin"): Can't skip\n"); return 0 }
                    left -= Int64(block.count)
                }
            }
        }
        if seek > 0 {
            guard output >= 0 else { try io.err("dd: lseek: Illegal seek\n"); try summary(); return 1 }
            lseek(output, off_t(seek * obs), SEEK_CUR)
            var st = Glibc.stat()
            if !notrunc, fstat(output, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, ftruncate(output, off_t(seek * obs)) != 0 {
                try io.err("dd: truncate: \(DeviceErrno.current().text)\n")
                try summary()
                return 1
            }
        }

        let failAfter = takeDdFault()
        var left = count == .max ? Int64.max : count * ibs
        let blocksWanted = count == .max ? Int64.max : count
        var blocksWritten: Int64 = 0
        while left > 0 {
            if cancelled() { throw ConnectionClosed() }
            let block: [UInt8]
            do { block = try readBlock(Int(min(left, ibs))) } catch let e as DeviceErrno {
                try io.err("dd: \(iname ?? "stdin"): read error: \(e.text)\n")
                try summary()
                return 1
            }
            if block.isEmpty { break }
            if Int64(block.count) == ibs { inFull += 1 } else { inPart += 1 }
            left -= Int64(block.count)
            // The fault: half the blocks written (at least none), then a full disk.
            if failAfter, blocksWritten >= (blocksWanted == .max ? 1 : blocksWanted / 2) {
                try io.err("dd: \(oname ?? "stdout"): write error: No space left on device\n")
                try summary()
                return 1
            }
            if output >= 0 {
                let written = block.withUnsafeBytes { Glibc.write(output, $0.baseAddress!, $0.count) }
                guard written == block.count else {
                    try io.err("dd: \(oname ?? "stdout"): write error: \(DeviceErrno.current().text)\n")
                    try summary()
                    return 1
                }
            } else {
                try io.stdout.write(Data(block))
            }
            bytes += Int64(block.count)
            blocksWritten += 1
            if Int64(block.count) == obs { outFull += 1 } else { outPart += 1 }
        }
        try summary()
        return 0
    }

    /// Whether this `dd` is the one `failDdAfterRuns` fails; counts the run down otherwise.
    private func takeDdFault() -> Bool {
        let url = device.root.appendingPathComponent("faults.json")
        guard let data = try? Data(contentsOf: url),
              var faults = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let runs = (faults["failDdAfterRuns"] as? NSNumber)?.intValue
        else { return false }
        if runs > 0 { faults["failDdAfterRuns"] = runs - 1 } else { faults.removeValue(forKey: "failDdAfterRuns") }
        if let out = try? JSONSerialization.data(withJSONObject: faults, options: [.sortedKeys]) {
            try? out.write(to: url, options: .atomic)
        }
        return runs == 0
    }

    /// toybox `human_readable(…, HR_SPACE|HR_B)`: three digits and a 1024-based unit ("4.0 K", "512 B").
    static func humanReadable(_ value: Int64) -> String {
        var num = UInt64(max(value, 0)), snap: UInt64 = 0, unit = 0
        while String(num).count > 3 {
            snap = num
            num = (num + 512) / 1024
            unit += 1
        }
        var text = String(num)
        if unit > 0 && text.count == 1 {
            num = snap / 1024
            var rest = snap - num * 1024
            rest = ((rest * 100) + 50) / 1024 / 10
            text = "\(num).\(rest)"
        }
        let units = Array(" KMGTPEZY")
        return text + " " + (unit > 0 ? String(units[unit]) : "B")
    }

    // MARK: - truncate

    /// toybox `truncate [-c] -s SIZE FILE...`: SIZE may start with `+ - < > / %` and end in a unit.
    func truncateCommand(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "c", withValue: "s") else {
            try io.err("truncate: Unknown option\n")
            return 1
        }
        guard var spec = parsed.values["s"] else { try io.err("truncate: Needs -s\n"); return 1 }
        guard !parsed.operands.isEmpty else { try io.err("truncate: Needs 1 argument\n"); return 1 }
        let kind = spec.first.flatMap { "+-<>/%".firstIndex(of: $0) }.map { "+-<>/%".distance(from: "+-<>/%".startIndex, to: $0) }
        if kind != nil { spec.removeFirst() }
        guard let size = Self.toyboxNumber(spec) else { try io.err("truncate: not integer: \(spec)\n"); return 1 }
        var status: Int32 = 0
        for file in parsed.operands {
            do {
                let r = try resolve(file)
                try fs.check(r, .write)
                let fd = open(r.host, O_WRONLY | O_CLOEXEC | (parsed.flags.contains("c") ? 0 : O_CREAT), 0o666)
                if fd < 0 {
                    if errno == ENOENT && parsed.flags.contains("c") { continue }
                    throw DeviceErrno.current()
                }
                defer { close(fd) }
                var st = Glibc.stat()
                fstat(fd, &st)
                let current = Int64(st.st_size)
                var target = size
                switch kind {
                case 0: target = current + size
                case 1: target = current - size
                case 2: if current <= size { continue }
                case 3: if current >= size { continue }
                case 4: target = current / size * size
                case 5: target = (current + size - 1) / size * size
                default: break
                }
                if ftruncate(fd, off_t(target)) != 0 {
                    try io.err("truncate: '\(file)' to '\(target)': \(DeviceErrno.current().text)\n")
                    status = 1
                }
            } catch let e as DeviceErrno {
                try io.err("truncate: \(file): \(e.text)\n")
                status = 1
            }
        }
        return status
    }
}
