import Foundation
import Glibc

/// run-as, su, pm, am, cmd: the Android tools flippio's bridge uses, with their real texts.
extension DeviceShell {
    /// `run-as PKG [CMD...]`: runs CMD as the app, in `/data/data/PKG`, for debuggable apps only.
    func runAs(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var args = args
        if args.first == "--user", args.count >= 2 { args.removeFirst(2) }
        guard let package = args.first else {
            try io.err("run-as: usage: run-as <package-name> [--user <uid>] <command> [<args>]\n")
            return 1
        }
        args.removeFirst()
        if args.first == "--user", args.count >= 2 { args.removeFirst(2) }
        guard let info = device.config.packages[package] else {
            try io.err("run-as: unknown package: \(package)\n")
            return 1
        }
        guard info.debuggable else {
            try io.err("run-as: package not debuggable: \(package)\n")
            return 1
        }
        if user != .shell && user != .root {
            try io.err("run-as: only 'shell' or 'root' users can run this program\n")
            return 1
        }
        let home = "/data/data/\(package)"
        // An installed app always has its data folder.
        let dataDir = device.fsRoot.appendingPathComponent("data/data/\(package)", isDirectory: true)
        // One `mkdir`, never "create intermediate folders": a request that races an unplug must
        // not re-create a stray `SERIAL/fs` (see ``DeviceLayout/create(fs:)``).
        _ = Glibc.mkdir(dataDir.path, 0o771)
        let app = child(user: .app(package), cwd: home)
        if args.isEmpty {
            return try app.sh([], io)
        }
        if let status = try app.exec(args, io: io) { return status }
        try io.err("run-as: exec failed for \(args[0]): No such file or directory\n")
        return 1
    }

    /// `su [-c STRING] [UID [CMD...]]` on devices where `device.json` has `"su": true`.
    func su(_ args: [String], _ io: ShellIO) throws -> Int32 {
        if case .app = user {
            try io.err("su: uid \(uid) not allowed to su\n")
            return 1
        }
        var args = args
        var script: String?
        var target = DeviceUser.root
        var command: [String] = []
        while let a = args.first {
            args.removeFirst()
            if a == "-c" || a == "--command" {
                guard let s = args.first else {
                    try io.err("su: option requires an argument -- c\n")
                    return 1
                }
                script = s
                args.removeFirst()
            } else if a == "-" || a == "-l" || a == "--login" || a == "-mm" || a == "--mount-master" || a == "-p" {
                continue
            } else if command.isEmpty && script == nil && (a == "0" || a == "root") {
                target = .root
            } else if command.isEmpty && script == nil && (a == "2000" || a == "shell") {
                target = .shell
            } else {
                command = [a] + args
                args = []
            }
        }
        let shell = child(user: target, cwd: cwd)
        if let script { return try shell.run(script: script, io: io) }
        if command.isEmpty { return try shell.sh([], io) }
        if let status = try shell.exec(command, io: io) { return status }
        try io.err("su: exec failed for \(command[0]): No such file or directory\n")
        return 1
    }

    // MARK: - pm

    /// The install path `pm path` prints (stable per package).
    func apkPath(_ package: String) -> String {
        if device.config.packages[package]?.system == true { return "/system/app/\(package)/\(package).apk" }
        var hash: UInt64 = 1_469_598_103_934_665_603
        for b in package.utf8 { hash = (hash ^ UInt64(b)) &* 1_099_511_628_211 }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        func token(_ seed: UInt64) -> String {
            var h = seed
            var s = ""
            for _ in 0..<22 { s.append(alphabet[Int(h % 64)]); h = h / 64 &+ (h &* 31) }
            return s + "=="
        }
        return "/data/app/~~\(token(hash))/\(package)-\(token(hash &* 7 &+ 13))/base.apk"
    }

    func pm(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let sub = args.first else {
            try io.err("usage: pm path [--user USER_ID] PACKAGE\n       pm list packages [-f] [-d] [-e] [-s] [-3] [-i] [-l] [-u] [-U] [FILTER]\n")
            return 1
        }
        let rest = Array(args.dropFirst())
        switch sub {
        case "list":
            guard rest.first == "packages" || rest.first == "package" else {
                if rest.first == "users" {
                    try io.out("Users:\n\tUserInfo{0:Owner:c13} running\n")
                    return 0
                }
                try io.err("Error: unknown list type '\(rest.first ?? "")'\n")
                return 1
            }
            var flags = Set<String>()
            var filter: String?
            var i = 1
            while i < rest.count {
                let a = rest[i]
                if a == "--user" { i += 2; continue }
                if a.hasPrefix("-") { a.dropFirst().forEach { flags.insert(String($0)) } } else { filter = a }
                i += 1
            }
            for name in device.config.packages.keys.sorted() {
                let info = device.config.packages[name]!
                if flags.contains("3") && info.system { continue }
                if flags.contains("s") && !info.system { continue }
                if let filter, !name.contains(filter) { continue }
                var line = "package:"
                if flags.contains("f") { line += apkPath(name) + "=" }
                line += name
                if flags.contains("U") { line += " uid:\(device.uid(of: name))" }
                try io.out(line + "\n")
            }
            return 0
        case "path":
            guard let package = rest.last(where: { !$0.hasPrefix("-") && Int($0) == nil }) else {
                try io.err("Error: no package specified\n")
                return 1
            }
            guard device.config.packages[package] != nil else { return 1 }
            try io.out("package:\(apkPath(package))\n")
            return 0
        case "resolve-activity":
            return try resolveActivity(rest, io)
        case "clear":
            guard let package = rest.last, device.config.packages[package] != nil else {
                try io.out("Failed\n")
                return 1
            }
            let dataDir = device.fsRoot.appendingPathComponent("data/data/\(package)")
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dataDir.path)) ?? [] {
                try? FileManager.default.removeItem(at: dataDir.appendingPathComponent(name))
            }
            try io.out("Success\n")
            return 0
        default:
            try io.err("Unknown command: \(sub)\n")
            return 1
        }
    }

    // MARK: - dumpsys

    /// `dumpsys package packages` (or `p`, or a package name): the "Packages:" section as
    /// PackageManagerService prints it, in the lines flippio and other tools read:
    /// `  Package [NAME] (HASH):` and `    flags=[ DEBUGGABLE HAS_CODE ... ]`, with `SYSTEM` for
    /// system apps. Other services print nothing here (a real phone prints pages of state).
    func dumpsys(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let service = args.first else { return 0 }
        guard service == "package" else {
            if ["activity", "window", "meminfo", "battery", "cpuinfo"].contains(service) { return 0 }
            try io.err("Can't find service: \(service)\n")
            return 0
        }
        let selector = args.dropFirst().first(where: { !$0.hasPrefix("-") })
        let names = device.config.packages.keys.sorted().filter { name in
            guard let selector, selector != "packages", selector != "p" else { return true }
            return name == selector
        }
        var out = "Packages:\n"
        for name in names {
            let info = device.config.packages[name]!
            let hash = String(format: "%07x", UInt32(truncatingIfNeeded: device.uid(of: name) &* 2_654_435_761) & 0xFFFFFFF)
            var flags = info.system ? ["SYSTEM"] : []
            if info.debuggable { flags.append("DEBUGGABLE") }
            flags += ["HAS_CODE", "ALLOW_CLEAR_USER_DATA", "ALLOW_BACKUP"]
            out += """
                  Package [\(name)] (\(hash)):
                    appId=\(device.uid(of: name))
                    pkg=Package{\(hash) \(name)}
                    codePath=\((apkPath(name) as NSString).deletingLastPathComponent)
                    versionCode=1 minSdk=24 targetSdk=\(device.config.sdk)
                    versionName=1.0
                    dataDir=/data/user/0/\(name)
                    flags=[ \(flags.joined(separator: " ")) ]
                    privateFlags=[ PRIVATE_FLAG_ACTIVITIES_RESIZE_MODE_RESIZEABLE_VIA_SDK_VERSION ALLOW_AUDIO_PLAYBACK_CAPTURE ]
                    User 0: ceDataInode=\(device.uid(of: name) * 7) installed=true hidden=false suspended=false distractionFlags=0 stopped=false notLaunched=false enabled=0 instant=false virtual=false

                """
        }
        try io.out(out)
        return 0
    }

    /// `pm resolve-activity [--brief] [-a ACTION] [-c CATEGORY] [--user N] PACKAGE` (Android 7+, also as
    /// `cmd package resolve-activity`): what an intent for the package resolves to. Only the launcher
    /// intent (`-c android.intent.category.LAUNCHER`) resolves here. Real output, from
    /// PackageManagerShellCommand: a `priority=…` line and the component in short form
    /// (`com.example.notes/.MainActivity`), or `No activity found` (still status 0).
    func resolveActivity(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var categories: [String] = []
        var brief = false
        var target: String?
        var i = 0
        while i < args.count {
            switch args[i] {
            case "--brief": brief = true
            case "--components": brief = true
            case "-c": if i + 1 < args.count { categories.append(args[i + 1]) }; i += 1
            case "-a", "--user", "-d", "-t", "--query-flags": i += 1
            default: if !args[i].hasPrefix("-") { target = args[i] }
            }
            i += 1
        }
        guard let package = target, categories.contains("android.intent.category.LAUNCHER"),
              let activity = device.config.packages[package]?.launcherClass(package: package) else {
            try io.out("No activity found\n")
            return 0
        }
        let short = activity.hasPrefix(package + ".") ? String(activity.dropFirst(package.count)) : activity
        if brief {
            try io.out("priority=0 preferredOrder=0 match=0x108000 specificIndex=-1 isDefault=false\n\(package)/\(short)\n")
        } else {
            try io.out("  ActivityInfo:\n    name=\(activity)\n    packageName=\(package)\n    enabled=true exported=true directBootAware=false\n")
        }
        return 0
    }

    // MARK: - am, cmd

    /// `am start -n PKG/CLASS [-a ACTION] [-c CATEGORY]`: as ActivityManagerShellCommand prints it, the
    /// intent on stdout, then (for a class the package does not have) `Error type 3` and the error on
    /// stderr with status 255.
    func amStart(_ args: [String], _ io: ShellIO) throws -> Int32 {
        var action: String?
        var categories: [String] = []
        var component: String?
        var i = 0
        while i < args.count {
            let value = i + 1 < args.count ? args[i + 1] : nil
            switch args[i] {
            case "-n": component = value; i += 1
            case "-a": action = value; i += 1
            case "-c": if let value { categories.append(value) }; i += 1
            case "-W", "-S", "-R", "--activity-clear-top": break
            default: if args[i].hasPrefix("-") { i += 1 }
            }
            i += 1
        }
        var intent: [String] = []
        if let action { intent.append("act=\(action)") }
        if !categories.isEmpty { intent.append("cat=[\(categories.joined(separator: ","))]") }
        if let component { intent.append("cmp=\(component)") }
        try io.out("Starting: Intent { \(intent.joined(separator: " ")) }\n")
        guard let component else { return 0 }
        let parts = component.split(separator: "/", maxSplits: 1).map(String.init)
        let package = parts.first ?? ""
        let requested = parts.count > 1 ? (parts[1].hasPrefix(".") ? package + parts[1] : parts[1]) : ""
        guard let launcher = device.config.packages[package]?.launcherClass(package: package), launcher == requested else {
            try io.err("Error type 3\nError: Activity class {\(package)/\(requested)} does not exist.\n")
            return 255
        }
        return 0
    }

    /// `am force-stop PKG` and `am kill PKG` print nothing and succeed, even for unknown packages.
    func am(_ args: [String], _ io: ShellIO) throws -> Int32 {
        switch args.first {
        case "force-stop", "kill", "kill-all", "stop-app":
            return 0
        case "start", "start-activity":
            return try amStart(Array(args.dropFirst()), io)
        case "broadcast":
            try io.out("Broadcasting: Intent { \(args.dropFirst().joined(separator: " ")) }\nBroadcast completed: result=0\n")
            return 0
        case nil:
            try io.err("usage: am [subcommand] [options]\n")
            return 1
        default:
            try io.err("Unknown command: \(args[0])\n")
            return 255
        }
    }

    /// `cmd package ...` and `cmd activity ...` (the binder front ends of pm and am).
    func cmd(_ args: [String], _ io: ShellIO) throws -> Int32 {
        switch args.first {
        case "package": return try pm(Array(args.dropFirst()), io)
        case "activity": return try am(Array(args.dropFirst()), io)
        case nil:
            try io.err("cmd: No service specified; use -l to list all running services.\n")
            return 20
        default:
            try io.err("cmd: Can't find service: \(args[0])\n")
            return 20
        }
    }
}

// MARK: - SELinux labels

extension DeviceShell {
    /// toybox `restorecon [-DFnRrv] FILE...`: the label policy gives each path. Only root may
    /// relabel; the device keeps no labels (`stat -c %C` always says app_data_file), so this checks
    /// the files and the caller, as the real command would fail.
    func restorecon(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "DFnRrv"), !parsed.operands.isEmpty else {
            try io.err("restorecon: Needs 1 argument\n")
            return 1
        }
        return try relabel(parsed.operands, io: io, name: "restorecon", context: nil)
    }

    /// toybox `chcon [-hRv] CONTEXT FILE...` (no `--reference`: toybox does not have it).
    func chcon(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard let parsed = Self.options(args, allowed: "hRv") else { try io.err("chcon: Unknown option\n"); return 1 }
        guard parsed.operands.count >= 2 else { try io.err("chcon: Needs 2 arguments\n"); return 1 }
        return try relabel(Array(parsed.operands.dropFirst()), io: io, name: "chcon", context: parsed.operands[0])
    }

    private func relabel(_ files: [String], io: ShellIO, name: String, context: String?) throws -> Int32 {
        var status: Int32 = 0
        for file in files {
            do {
                _ = try fs.status(try resolve(file))
                if uid != 0 { throw DeviceErrno(code: EACCES) }
            } catch let e as DeviceErrno {
                try io.err(context.map { "\(name): '\(file)' to \($0): \(e.text)\n" } ?? "\(name): \(file): \(e.text)\n")
                status = 1
            }
        }
        return status
    }
}
