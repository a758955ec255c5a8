import Crypto
import Foundation
import Glibc

/// toybox's file commands over the device folder, with toybox's error texts.
extension DeviceShell {
    static let chunkSize = 64 * 1024

    /// Opens a device file for reading as the current user.
    func openForReading(_ path: String) throws -> Int32 {
        let r = try resolve(path)
        try fs.check(r, .read)
        let fd = open(r.host, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DeviceErrno.current() }
        var st = Glibc.stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw DeviceErrno.isDirectory
        }
        return fd
    }

    /// Streams a file descriptor into a sink, a chunk at a time (50 MB files never sit in memory).
    func stream(fd: Int32, to sink: OutputSink) throws {
        var buffer = [UInt8](repeating: 0, count: Self.chunkSize)
        while true {
            if cancelled() { throw ConnectionClosed() }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, Self.chunkSize) }
            if n < 0 { if errno == EINTR { continue }; throw DeviceErrno.current() }
            if n == 0 { return }
            try buffer.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    // MARK: - cat

    func cat(_ args: [String], _ io: ShellIO) throws -> Int32 {
        let files = args.filter { $0 == "-" || !$0.hasPrefix("-") }
        if files.isEmpty {
            while let chunk = try io.stdin.read(max: Self.chunkSize) { try io.stdout.write(Data(chunk)) }
            return 0
        }
        var status: Int32 = 0
        for file in files {
            if file == "-" {
                while let chunk = try io.stdin.read(max: Self.chunkSize) { try io.stdout.write(Data(chunk)) }
                continue
            }
            do {
                let fd = try openForReading(file)
                defer { close(fd) }
                try stream(fd: fd, to: io.stdout)
            } catch let e as DeviceErrno {
                try io.err("cat: \(file): \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    // MARK: - cp, mv

    func copyOrMove(_ args: [String], io: ShellIO, move: Bool) throws -> Int32 {
        let name = move ? "mv" : "cp"
        guard let parsed = Self.options(args, allowed: move ? "finvT" : "fiRrpaPdLHvnlsuFT") else {
            try io.err("\(name): Unknown option\n")
            return 1
        }
        var operands = parsed.operands
        guard operands.count >= 2 else {
            try io.err("\(name): Needs 2 arguments\n")
            return 1
        }
        let destination = operands.removeLast()
        let recursive = move || parsed.flags.contains("r") || parsed.flags.contains("R") || parsed.flags.contains("a")
        let dest: DeviceFileSystem.Resolved
        do { dest = try resolve(destination) } catch let e as DeviceErrno {
            try io.err("\(name): '\(destination)': \(e.text)\n")
            return 1
        }
        let destIsDir = fs.allowed(dest.components, .stat) && fs.isDirectory(dest)
        if operands.count > 1 && !destIsDir {
            try io.err("\(name): '\(destination)' not directory\n")
            return 1
        }
        var status: Int32 = 0
        for source in operands {
            let src: DeviceFileSystem.Resolved
            var st: Glibc.stat
            do {
                src = try resolve(source, followLast: move)
                st = try fs.status(src)
                if !move && (st.st_mode & S_IFMT) == S_IFLNK {
                    var followed = Glibc.stat()
                    if posixStat(src.host, &followed) == 0 { st = followed }
                }
            } catch let e as DeviceErrno {
                try io.err("\(name): bad '\(source)': \(e.text)\n")
                status = 1
                continue
            }
            let base = src.components.last ?? ""
            let targetPath = destIsDir ? (destination.hasSuffix("/") ? destination + base : destination + "/" + base) : destination
            let target: DeviceFileSystem.Resolved
            do { target = try resolve(targetPath, followLast: false) } catch let e as DeviceErrno {
                try io.err("\(name): '\(targetPath)': \(e.text)\n")
                status = 1
                continue
            }
            let isDir = (st.st_mode & S_IFMT) == S_IFDIR
            if isDir && !recursive {
                try io.err("\(name): Skipped dir '\(source)'\n")
                status = 1
                continue
            }
            do {
                if move {
                    try fs.check(src, .write)
                    try fs.check(target, .write)
                    if src.host == target.host { continue }
                    guard rename(src.host, target.host) == 0 else { throw DeviceErrno.current() }
                } else if isDir {
                    try copyTree(src, to: target)
                } else {
                    try fs.check(src, .read)
                    try fs.check(target, .write)
                    try copyFile(src.host, to: target.host, mode: st.st_mode & 0o777)
                }
            } catch let e as DeviceErrno {
                try io.err("\(name): '\(targetPath)': \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    func copyFile(_ from: String, to: String, mode: mode_t) throws {
        let input = open(from, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw DeviceErrno.current() }
        defer { close(input) }
        var toStat = Glibc.stat()
        if posixStat(to, &toStat) == 0 && (toStat.st_mode & S_IFMT) == S_IFDIR { throw DeviceErrno.isDirectory }
        let output = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode == 0 ? 0o644 : mode)
        guard output >= 0 else { throw DeviceErrno.current() }
        defer { close(output) }
        // toybox's cp copies inside the kernel (sendfile); so does this one, else it streams the
        // bytes through.
        if try copyInKernel(from: input, to: output) { return }
        let sink = FileSink(fd: output)
        try stream(fd: input, to: sink)
    }

    /// Copies the rest of `input` to `output` with `sendfile(2)`; false when the kernel
    /// cannot for these two files before a byte was copied (the caller streams instead).
    private func copyInKernel(from input: Int32, to output: Int32) throws -> Bool {
        var copied = 0
        while true {
            if cancelled() { throw ConnectionClosed() }
            let n = sendfile(output, input, nil, 1 << 30)
            if n > 0 { copied += n; continue }
            if n == 0 { return true }
            if errno == EINTR { continue }
            if copied == 0 && [EXDEV, ENOSYS, EINVAL, EOPNOTSUPP].contains(errno) { return false }
            throw DeviceErrno.current()
        }
    }

    private func copyTree(_ src: DeviceFileSystem.Resolved, to target: DeviceFileSystem.Resolved) throws {
        try fs.check(src, .read)
        try fs.check(target, .write)
        if !fs.exists(target) {
            guard posixMkdir(target.host, 0o771) == 0 else { throw DeviceErrno.current() }
        }
        for name in try fs.list(src) {
            let child = try fs.resolve(src.path + "/" + name, cwd: "/", followLast: false)
            let childTarget = try fs.resolve(target.path + "/" + name, cwd: "/", followLast: false)
            if fs.isDirectory(child) {
                try copyTree(child, to: childTarget)
            } else {
                var st = Glibc.stat()
                _ = posixStat(child.host, &st)
                try copyFile(child.host, to: childTarget.host, mode: st.st_mode & 0o777)
            }
        }
    }

    // MARK: - rm, rmdir, mkdir, touch, chmod

    func rm(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "fiRrvd") else {
            try io.err("rm: Unknown option\n")
            return 1
        }
        let force = parsed.flags.contains("f")
        let recursive = parsed.flags.contains("r") || parsed.flags.contains("R")
        if parsed.operands.isEmpty && !force {
            try io.err("rm: Needs 1 argument\n")
            return 1
        }
        var status: Int32 = 0
        for path in parsed.operands {
            do {
                let r = try resolve(path, followLast: false)
                let st = try fs.status(r)
                try fs.check(r, .write)
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    if !recursive {
                        if parsed.flags.contains("d"), Glibc.rmdir(r.host) == 0 { continue }
                        throw DeviceErrno.isDirectory
                    }
                    guard r.components.count > 0 else { throw DeviceErrno.denied }
                    try FileManager.default.removeItem(atPath: r.host)
                } else {
                    guard unlink(r.host) == 0 else { throw DeviceErrno.current() }
                }
            } catch let e as DeviceErrno {
                if force && e == .noEntry { continue }
                try io.err("rm: \(path): \(e.text)\n")
                status = 1
            } catch {
                try io.err("rm: \(path): Permission denied\n")
                status = 1
            }
        }
        return status
    }

    func rmdir(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var status: Int32 = 0
        for path in args where !path.hasPrefix("-") {
            do {
                let r = try resolve(path, followLast: false)
                _ = try fs.status(r)
                try fs.check(r, .write)
                guard Glibc.rmdir(r.host) == 0 else { throw DeviceErrno.current() }
            } catch let e as DeviceErrno {
                try io.err("rmdir: '\(path)': \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    func mkdir(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "pv", withValue: "mZ") else {
            try io.err("mkdir: Unknown option\n")
            return 1
        }
        let mode = parsed.values["m"].flatMap { mode_t($0, radix: 8) } ?? 0o771
        var status: Int32 = 0
        for path in parsed.operands {
            do {
                if parsed.flags.contains("p") {
                    // Create each missing component in turn.
                    let absolute = path.hasPrefix("/") ? path : cwd + "/" + path
                    var prefix = ""
                    for component in absolute.split(separator: "/") {
                        prefix += "/" + component
                        let r = try resolve(prefix)
                        if fs.exists(r) {
                            _ = try fs.status(r)
                            guard fs.isDirectory(r) else { throw DeviceErrno.notDirectory }
                            continue
                        }
                        try fs.check(r, .write)
                        guard Glibc.mkdir(r.host, mode) == 0 || errno == EEXIST else { throw DeviceErrno.current() }
                    }
                } else {
                    let r = try resolve(path, followLast: false)
                    try fs.check(r, .write)
                    guard Glibc.mkdir(r.host, mode) == 0 else { throw DeviceErrno.current() }
                }
            } catch let e as DeviceErrno {
                try io.err("mkdir: '\(path)': \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    func touch(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var status: Int32 = 0
        for path in args where !path.hasPrefix("-") {
            do {
                let r = try resolve(path)
                try fs.check(r, .write)
                let fd = open(r.host, O_WRONLY | O_CREAT | O_CLOEXEC, 0o666)
                guard fd >= 0 else { throw DeviceErrno.current() }
                close(fd)
                _ = utimes(r.host, nil)
            } catch let e as DeviceErrno {
                try io.err("touch: '\(path)': \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    func chmod(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var args = args
        var recursive = false
        while let first = args.first, first == "-R" || first == "-f" || first == "-v" {
            if first == "-R" { recursive = true }
            args.removeFirst()
        }
        guard args.count >= 2 else {
            try io.err("chmod: Needs 2 arguments\n")
            return 1
        }
        let spec = args.removeFirst()
        var status: Int32 = 0
        for path in args {
            do {
                let r = try resolve(path)
                let st = try fs.status(r)
                try fs.check(r, .write)
                guard let mode = Self.applyMode(spec, to: st.st_mode & 0o7777, isDirectory: (st.st_mode & S_IFMT) == S_IFDIR) else {
                    try io.err("chmod: bad mode '\(spec)'\n")
                    return 1
                }
                guard Glibc.chmod(r.host, mode) == 0 else { throw DeviceErrno.current() }
                if recursive && fs.isDirectory(r) {
                    let children = try fs.list(r).map { r.path + "/" + $0 }
                    status |= try chmod((recursive ? ["-R"] : []) + [spec] + children, io)
                }
            } catch let e as DeviceErrno {
                try io.err("chmod: \(path): \(e.text)\n")
                status = 1
            }
        }
        return status
    }

    /// `chown [-R] OWNER[:GROUP] FILE...` (and `chgrp`): ownership is simulated (derived from the
    /// path), so this checks what a phone checks — root only, the files must exist — and changes nothing.
    func chown(_ args: [String], io: ShellIO, name: String) throws -> Int32 {
        let operands = args.filter { !$0.hasPrefix("-") }
        guard operands.count >= 2 else {
            try io.err("\(name): Needs 2 arguments\n")
            return 1
        }
        let owner = operands[0]
        var status: Int32 = 0
        for path in operands.dropFirst() {
            do {
                let r = try resolve(path)
                _ = try fs.status(r)
                guard user == .root else { throw DeviceErrno(code: EPERM) }
            } catch let e as DeviceErrno {
                if e.code == EPERM {
                    try io.err("\(name): '\(path)' to '\(owner)': Operation not permitted\n")
                } else {
                    try io.err("\(name): \(path): \(e.text)\n")
                }
                status = 1
            }
        }
        return status
    }

    /// Octal (`660`) or symbolic (`u+rw,go-w`, `a=r`) modes.
    static func applyMode(_ spec: String, to current: mode_t, isDirectory: Bool) -> mode_t? {
        if let octal = mode_t(spec, radix: 8), spec.allSatisfy({ ("0"..."7").contains($0) }) { return octal }
        var mode = current
        for clause in spec.split(separator: ",") {
            var chars = Array(clause)[...]
            var who: mode_t = 0
            while let c = chars.first, "ugoa".contains(c) {
                switch c {
                case "u": who |= 0o4700
                case "g": who |= 0o2070
                case "o": who |= 0o1007
                default: who |= 0o7777
                }
                chars.removeFirst()
            }
            if who == 0 { who = 0o7777 }
            guard let op = chars.popFirst(), "+-=".contains(op) else { return nil }
            var bits: mode_t = 0
            for c in chars {
                switch c {
                case "r": bits |= 0o444
                case "w": bits |= 0o222
                case "x": bits |= 0o111
                case "X": if isDirectory || current & 0o111 != 0 { bits |= 0o111 }
                case "s": bits |= 0o6000
                case "t": bits |= 0o1000
                default: return nil
                }
            }
            bits &= who
            switch op {
            case "+": mode |= bits
            case "-": mode &= ~bits
            default: mode = (mode & ~(who & 0o777)) | bits
            }
        }
        return mode
    }

    // MARK: - sha256sum, md5sum

    func hashsum(_ args: [String], io: ShellIO, name: String) throws -> Int32 {
        var files = args.filter { $0 == "-" || !$0.hasPrefix("-") }
        if files.isEmpty { files = ["-"] }
        var status: Int32 = 0
        for file in files {
            let digest = Digester(name)
            do {
                if file == "-" {
                    while let chunk = try io.stdin.read(max: Self.chunkSize) { digest.update(chunk) }
                } else {
                    let fd = try openForReading(file)
                    defer { close(fd) }
                    let size = 1 << 20
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
                    defer { buffer.deallocate() }
                    while true {
                        let n = read(fd, buffer.baseAddress!, size)
                        if n < 0 { if errno == EINTR { continue }; throw DeviceErrno.current() }
                        if n == 0 { break }
                        digest.update(raw: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                    }
                }
                try io.out("\(digest.hex())  \(file)\n")
            } catch let e as DeviceErrno {
                try io.err("\(name): \(file): \(e.text)\n")
                status = 1
            }
        }
        return status
    }
}

/// SHA-256, SHA-1 or MD5, fed a chunk at a time.
private final class Digester {
    private var sha256 = SHA256()
    private var sha1 = Insecure.SHA1()
    private var md5 = Insecure.MD5()
    private let kind: String
    init(_ name: String) { kind = name }

    func update(raw bytes: UnsafeRawBufferPointer) {
        switch kind {
        case "md5sum": md5.update(bufferPointer: bytes)
        case "sha1sum": sha1.update(bufferPointer: bytes)
        default: sha256.update(bufferPointer: bytes)
        }
    }

    func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        Data(bytes).withUnsafeBytes { update(raw: $0) }
    }

    func hex() -> String {
        let bytes: [UInt8]
        switch kind {
        case "md5sum": bytes = Array(md5.finalize())
        case "sha1sum": bytes = Array(sha1.finalize())
        default: bytes = Array(sha256.finalize())
        }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }
}
