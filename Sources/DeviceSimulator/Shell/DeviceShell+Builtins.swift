import Foundation
import Glibc

extension DeviceShell {
    typealias Builtin = ([String], ShellIO) throws -> Int32

    /// The commands this device has. `/system/bin/NAME` and friends name the same commands.
    func builtin(named rawName: String) -> Builtin? {
        var name = rawName
        if name.contains("/") {
            let dirs = ["/system/bin/", "/system/xbin/", "/bin/", "/vendor/bin/", "/product/bin/"]
            guard let dir = dirs.first(where: { name.hasPrefix($0) }) else { return nil }
            name = String(name.dropFirst(dir.count))
            if name == "cd" || name == "exit" { return nil }
        }
        switch name {
        // shell builtins
        case "true", ":": return { _, _ in 0 }
        case "wait": return { [self] _, _ in jobs.waitAll(); return 0 }
        case "false": return { _, _ in 1 }
        case "exit": return exitCommand
        case "cd": return cd
        case "pwd": return { [self] _, io in try io.out(cwd + "\n"); return 0 }
        case "echo": return echo
        case "sh": return sh
        case "test": return { [self] args, io in try test(args, io: io, bracket: false) }
        case "[": return { [self] args, io in try test(args, io: io, bracket: true) }
        case "sleep": return sleep
        // toybox
        case "cat": return cat
        case "cp": return { [self] args, io in try copyOrMove(args, io: io, move: false) }
        case "mv": return { [self] args, io in try copyOrMove(args, io: io, move: true) }
        case "rm": return rm
        case "rmdir": return rmdir
        case "mkdir": return mkdir
        case "touch": return touch
        case "ls": return ls
        case "stat": return stat
        case "chmod": return chmod
        case "chown": return { [self] args, io in try chown(args, io: io, name: "chown") }
        case "chgrp": return { [self] args, io in try chown(args, io: io, name: "chgrp") }
        case "find": return find
        case "sha256sum": return { [self] args, io in try hashsum(args, io: io, name: "sha256sum") }
        case "sha1sum": return { [self] args, io in try hashsum(args, io: io, name: "sha1sum") }
        case "md5sum": return { [self] args, io in try hashsum(args, io: io, name: "md5sum") }
        case "wc": return wc
        case "head": return head
        case "printf": return printf
        case "tail": return tail
        case "grep": return grep
        case "ln": return ln
        case "id": return id
        case "whoami": return { [self] _, io in try io.out(device.userName(uid: uid) + "\n"); return 0 }
        case "getprop": return getprop
        case "dd": return dd
        case "truncate": return truncateCommand
        case "restorecon": return restorecon
        case "chcon": return chcon
        case "inotifyd": return device.config.hasApplet("inotifyd") ? inotifyd : nil
        // Android tools
        case "run-as": return runAs
        case "su": return device.config.su ? su : nil
        case "pm": return pm
        case "am": return am
        case "cmd": return cmd
        case "dumpsys": return dumpsys
        default: return nil
        }
    }

    // MARK: - Shell builtins

    func exitCommand(_ args: [String], _ io: ShellIO) throws -> Int32 {
        let status = args.first.flatMap { Int32($0) }.map { $0 & 0xFF } ?? lastStatus
        throw ShellExit(status: status)
    }

    func cd(_ args: [String], _ io: ShellIO) throws -> Int32 {
        let target = args.first ?? variable("HOME")
        do {
            let r = try resolve(target)
            _ = try fs.status(r)
            guard fs.isDirectory(r) else { throw DeviceErrno.notDirectory }
            cwd = r.path
            return 0
        } catch let e as DeviceErrno {
            try io.err("/system/bin/sh: cd: \(target): \(e.text)\n")
            return 2
        }
    }

    /// mksh's echo: `-n` drops the newline, backslash escapes are interpreted unless `-E`.
    func echo(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var args = args
        var newline = true
        var escapes = true
        while let first = args.first, first.count > 1, first.hasPrefix("-"),
              first.dropFirst().allSatisfy({ "neE".contains($0) }) {
            for c in first.dropFirst() {
                if c == "n" { newline = false }
                if c == "e" { escapes = true }
                if c == "E" { escapes = false }
            }
            args.removeFirst()
        }
        var text = args.joined(separator: " ")
        if escapes {
            let (expanded, stop) = Self.interpretEscapes(text)
            text = expanded
            if stop { newline = false }
        }
        try io.out(newline ? text + "\n" : text)
        return 0
    }

    static func interpretEscapes(_ s: String) -> (String, stop: Bool) {
        var out = ""
        var chars = Array(s)[...]
        while let c = chars.popFirst() {
            guard c == "\\", let n = chars.popFirst() else { out.append(c); continue }
            switch n {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "v": out.append("\u{0B}")
            case "\\": out.append("\\")
            case "c": return (out, true)
            case "0":
                var digits = ""
                while digits.count < 3, let d = chars.first, ("0"..."7").contains(d) { digits.append(d); chars.removeFirst() }
                out.append(Character(Unicode.Scalar(UInt8(digits.isEmpty ? "0" : digits, radix: 8) ?? 0)))
            default: out.append("\\"); out.append(n)
            }
        }
        return (out, false)
    }

    /// `sh -c STRING`, `sh FILE`, or `sh` reading its script from stdin.
    func sh(_ args: [String], _ io: ShellIO) throws -> Int32 {
        let shell = child(user: user, cwd: cwd)
        if let i = args.firstIndex(of: "-c") {
            guard i + 1 < args.count else {
                try io.err("/system/bin/sh: -c: option requires an argument\n")
                return 1
            }
            return try shell.run(script: args[i + 1], io: io)
        }
        if let file = args.first(where: { !$0.hasPrefix("-") }) {
            do {
                let r = try resolve(file)
                try fs.check(r, .read)
                guard let data = FileManager.default.contents(atPath: r.host) else { throw DeviceErrno.noEntry }
                return try shell.run(script: String(decoding: data, as: UTF8.self), io: io)
            } catch let e as DeviceErrno {
                try io.err("/system/bin/sh: \(file): \(e.text)\n")
                return 127
            }
        }
        var script = Data()
        while let chunk = try io.stdin.read(max: 65536) { script.append(contentsOf: chunk) }
        return try shell.run(script: String(decoding: script, as: UTF8.self), io: io)
    }

    func sleep(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let seconds = args.first.flatMap(Double.init) else {
            try io.err("sleep: Needs 1 argument\n")
            return 1
        }
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if cancelled() { throw ConnectionClosed() }
            usleep(20_000)
        }
        return 0
    }

    // MARK: - Identity

    func id(_ args: [String], _ io: ShellIO) throws -> Int32 {
        switch user {
        case .shell:
            try io.out("uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),1011(adb),1015(sdcard_rw),1028(sdcard_r),1078(ext_data_rw),1079(ext_obb_rw),3001(net_bt_admin),3002(net_bt),3003(inet),3006(net_bw_stats),3009(readproc),3011(uhid),3012(readtracefs) context=u:r:shell:s0\n")
        case .root:
            try io.out("uid=0(root) gid=0(root) groups=0(root),1004(input),1007(log),1011(adb),1015(sdcard_rw),1028(sdcard_r),3001(net_bt_admin),3002(net_bt),3003(inet),3006(net_bw_stats),3009(readproc),3011(uhid) context=u:r:su:s0\n")
        case .app:
            let u = uid, name = device.userName(uid: u), app = u - 10_000
            try io.out("uid=\(u)(\(name)) gid=\(u)(\(name)) groups=\(u)(\(name)),3003(inet),9997(everybody),\(20_000 + app)(\(name)_cache),\(50_000 + app)(all_a\(app)) context=u:r:runas_app:s0:c\(app % 256),c\(256 + app / 256),c512,c768\n")
        }
        return 0
    }

    func getprop(_ args: [String], _ io: ShellIO) throws -> Int32 {
        let props = device.properties
        if let key = args.first {
            try io.out((props[key] ?? (args.count > 1 ? args[1] : "")) + "\n")
        } else {
            for key in props.keys.sorted() { try io.out("[\(key)]: [\(props[key]!)]\n") }
        }
        return 0
    }
}
