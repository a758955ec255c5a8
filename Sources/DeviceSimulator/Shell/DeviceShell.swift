import Foundation
import Glibc

/// `exit N` unwinding out of a script.
struct ShellExit: Error { let status: Int32 }

/// The device's `/system/bin/sh`: runs a command line against the device folder with built-in
/// commands that print what Android's mksh, toybox, run-as, pm and am print.
///
/// Nothing runs on the host: every command is Swift code over the device's `fs/` folder.
final class DeviceShell {
    let device: SimulatedDevice
    let user: DeviceUser
    var cwd: String
    var lastStatus: Int32 = 0
    var variables: [String: String]
    /// True when the request should give up (server stopping, client gone).
    let cancelled: () -> Bool
    /// True when the client closed its side of the connection. Only commands that run until
    /// killed (`inotifyd`) ask: a client that shuts its writing side after sending stdin (`cat >f`)
    /// still wants the answer, so this is not part of ``cancelled``.
    let hungUp: () -> Bool

    var fs: DeviceFileSystem { DeviceFileSystem(device: device, user: user) }
    /// Background jobs (`list &`) of this shell, for `wait`.
    let jobs = ShellJobs()

    init(device: SimulatedDevice, user: DeviceUser = .shell, cwd: String = "/", cancelled: @escaping () -> Bool = { false },
         hungUp: @escaping () -> Bool = { false }) {
        self.device = device
        self.user = user
        self.cwd = cwd
        self.cancelled = cancelled
        self.hungUp = hungUp
        var vars = ["PATH": "/product/bin:/apex/com.android.runtime/bin:/apex/com.android.art/bin:/system_ext/bin:/system/bin:/system/xbin:/odm/bin:/vendor/bin:/vendor/xbin",
                    "ANDROID_DATA": "/data", "ANDROID_ROOT": "/system", "EXTERNAL_STORAGE": "/sdcard",
                    "TMPDIR": "/data/local/tmp"]
        switch user {
        case .shell: vars["HOME"] = "/"; vars["USER"] = "shell"
        case .root: vars["HOME"] = "/"; vars["USER"] = "root"
        case .app(let p): vars["HOME"] = "/data/user/0/\(p)"; vars["USER"] = device.userName(uid: device.uid(of: p))
        }
        self.variables = vars
    }

    /// A shell for another user (run-as, su), sharing the cancellation.
    func child(user: DeviceUser, cwd: String) -> DeviceShell {
        DeviceShell(device: device, user: user, cwd: cwd, cancelled: cancelled, hungUp: hungUp)
    }

    var uid: Int {
        switch user {
        case .shell: return 2000
        case .root: return 0
        case .app(let p): return device.uid(of: p)
        }
    }

    // MARK: - Running

    /// Runs a command line; returns its exit status. Throws only when the connection is gone.
    func run(script: String, io: ShellIO) throws -> Int32 {
        let steps: [ShellSyntax.Step]
        do {
            steps = try ShellSyntax.parse(script)
        } catch let error as ShellSyntax.SyntaxError {
            try io.err("/system/bin/sh: \(error.message)\n")
            return 1
        }
        return try runSteps(steps, io: io)
    }

    /// Runs parsed steps (a script, or a background list in a copy of the shell); `exit` ends them.
    func runSteps(_ steps: [ShellSyntax.Step], io: ShellIO) throws -> Int32 {
        // Background lists write to the same client as the script: one write at a time.
        let io = steps.contains(where: \.background) ? io.serialized() : io
        // As with adbd, the command ends when everything holding its output has ended: jobs
        // still running when the script exits are waited for.
        defer { jobs.waitAll() }
        do {
            var index = 0
            while index < steps.count {
                if steps[index].background {
                    var end = index + 1
                    while end < steps.count, steps[end].background, steps[end].connector != .sequence { end += 1 }
                    startJob(Array(steps[index..<end]), io: io)
                    lastStatus = 0
                    index = end
                    continue
                }
                try runStep(steps[index], io: io)
                index += 1
            }
        } catch let exit as ShellExit {
            lastStatus = exit.status
        }
        return lastStatus
    }

    private func runStep(_ step: ShellSyntax.Step, io: ShellIO) throws {
        switch step.connector {
        case .and where lastStatus != 0: return
        case .or where lastStatus == 0: return
        default: break
        }
        lastStatus = try runPipeline(step.pipeline, io: io)
    }

    /// Runs an and-or list on a thread of its own, in a copy of this shell (its variables and
    /// folder), as mksh runs `list &` in a subshell.
    private func startJob(_ steps: [ShellSyntax.Step], io: ShellIO) {
        let job = child(user: user, cwd: cwd)
        job.variables = variables
        job.lastStatus = lastStatus
        let box = JobBox(job: job, steps: steps, io: io)
        jobs.start { box.run() }
    }

    private func runPipeline(_ commands: [ShellSyntax.Command], io: ShellIO) throws -> Int32 {
        var input = io.stdin
        var status: Int32 = 0
        for (index, command) in commands.enumerated() {
            let isLast = index == commands.count - 1
            let buffer = BufferSink()
            let stageIO = ShellIO(stdin: input, stdout: isLast ? io.stdout : buffer, stderr: io.stderr)
            status = try runCommand(command, io: stageIO)
            if !isLast { input = DataInput(buffer.data) }
        }
        return status
    }

    private func runCommand(_ command: ShellSyntax.Command, io: ShellIO) throws -> Int32 {
        var argv: [String] = []
        for word in command.words { argv += expand(word) }

        // NAME=value prefixes set shell variables (no environment is passed on: builtins only).
        while let first = argv.first, let eq = first.firstIndex(of: "="), eq != first.startIndex,
              first[first.startIndex..<eq].allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }) {
            variables[String(first[first.startIndex..<eq])] = String(first[first.index(after: eq)...])
            argv.removeFirst()
        }

        var cmdIO = io
        var opened: [OutputSink] = []
        var openedInputs: [FileInput] = []
        defer {
            opened.forEach { $0.close() }
            openedInputs.forEach { $0.close() }
        }
        for redirection in command.redirections {
            let target = redirection.target.map { expand($0).joined(separator: " ") } ?? ""
            switch redirection.kind {
            case .duplicate(let source):
                // Order matters, as in every shell: `>f 2>&1` sends both to f, `2>&1 >f` does not.
                let sink = source == 1 ? cmdIO.stdout : source == 2 ? cmdIO.stderr : nil
                guard let sink else { continue }
                if redirection.fd == 1 { cmdIO.stdout = sink }
                if redirection.fd == 2 { cmdIO.stderr = sink }
            case .write, .append:
                let sink: OutputSink
                if target == "/dev/null" {
                    sink = NullSink()
                } else {
                    do {
                        let resolved = try fs.resolve(target, cwd: cwd)
                        try fs.check(resolved, .write)
                        var flags = O_WRONLY | O_CREAT | O_CLOEXEC
                        flags |= redirection.kind == .append ? O_APPEND : O_TRUNC
                        let fd = open(resolved.host, flags, 0o666)
                        guard fd >= 0 else { throw DeviceErrno.current() }
                        let file = FileSink(fd: fd)
                        opened.append(file)
                        sink = file
                    } catch let e as DeviceErrno {
                        try io.err("/system/bin/sh: can't create \(target): \(e.text)\n")
                        return 1
                    }
                }
                if redirection.fd == 1 { cmdIO.stdout = sink }
                if redirection.fd == 2 { cmdIO.stderr = sink }
            case .read:
                if target == "/dev/null" { cmdIO.stdin = EmptyInput(); continue }
                do {
                    let resolved = try fs.resolve(target, cwd: cwd)
                    try fs.check(resolved, .read)
                    let fd = open(resolved.host, O_RDONLY | O_CLOEXEC)
                    guard fd >= 0 else { throw DeviceErrno.current() }
                    let file = FileInput(fd: fd)
                    openedInputs.append(file)
                    cmdIO.stdin = file
                } catch let e as DeviceErrno {
                    try io.err("/system/bin/sh: can't open \(target): \(e.text)\n")
                    return 1
                }
            }
        }
        guard !argv.isEmpty else { return 0 }
        guard let builtin = builtin(named: argv[0]) else {
            try cmdIO.err("/system/bin/sh: \(argv[0]): inaccessible or not found\n")
            return 127
        }
        return try builtin(Array(argv.dropFirst()), cmdIO)
    }

    /// Runs argv directly, as `execvp` would (run-as, su): nil when there is no such command.
    func exec(_ argv: [String], io: ShellIO) throws -> Int32? {
        guard let name = argv.first, let builtin = builtin(named: name) else { return nil }
        do {
            return try builtin(Array(argv.dropFirst()), io)
        } catch let exit as ShellExit {
            return exit.status
        }
    }

    // MARK: - Expansion

    /// Expands variables, then unquoted globs (no match: the word stays as written, as in mksh).
    func expand(_ word: ShellSyntax.Word) -> [String] {
        var text = ""
        var pattern = ""
        var hasGlob = false
        for part in word.parts {
            switch part {
            case .text(let s, let quoted):
                text += s
                if quoted {
                    pattern += Self.escapeGlob(s)
                } else {
                    pattern += s
                    if s.contains(where: { "*?[".contains($0) }) { hasGlob = true }
                }
            case .variable(let name, _):
                let value = variable(name)
                text += value
                pattern += Self.escapeGlob(value)
            }
        }
        guard hasGlob else { return [text] }
        let matches = glob(pattern)
        return matches.isEmpty ? [text] : matches
    }

    func variable(_ name: String) -> String {
        switch name {
        case "?": return String(lastStatus)
        case "$": return "4242"
        case "#": return "0"
        case "0": return "/system/bin/sh"
        default: return variables[name] ?? ""
        }
    }

    static func escapeGlob(_ s: String) -> String {
        var out = ""
        for c in s {
            if "*?[]\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }

    private static func unescapeGlob(_ s: String) -> String {
        var out = ""
        var escaped = false
        for c in s {
            if escaped { out.append(c); escaped = false } else if c == "\\" { escaped = true } else { out.append(c) }
        }
        return out
    }

    private static func hasMeta(_ s: String) -> Bool {
        var escaped = false
        for c in s {
            if escaped { escaped = false; continue }
            if c == "\\" { escaped = true; continue }
            if "*?[".contains(c) { return true }
        }
        return false
    }

    /// Matches a glob pattern against the device file system, component by component.
    private func glob(_ pattern: String) -> [String] {
        let absolute = pattern.hasPrefix("/")
        let components = pattern.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        // Each candidate: (text shown, device path used for lookups).
        var candidates: [(shown: String, path: String)] = [(absolute ? "/" : "", absolute ? "/" : cwd)]
        for (index, component) in components.enumerated() {
            let isLast = index == components.count - 1
            var next: [(String, String)] = []
            for (shown, path) in candidates {
                let join: (String) -> (String, String) = { name in
                    let s = shown.isEmpty ? name : (shown.hasSuffix("/") ? shown + name : shown + "/" + name)
                    let p = path.hasSuffix("/") ? path + name : path + "/" + name
                    return (s, p)
                }
                if Self.hasMeta(component) {
                    guard let resolved = try? fs.resolve(path, cwd: cwd), let names = try? fs.list(resolved) else { continue }
                    for name in names where fnmatch(component, name, FNM_PERIOD) == 0 {
                        next.append(join(name))
                    }
                } else {
                    let name = Self.unescapeGlob(component)
                    let pair = join(name)
                    if isLast {
                        if let r = try? fs.resolve(pair.1, cwd: cwd, followLast: false), fs.exists(r) { next.append(pair) }
                    } else {
                        next.append(pair)
                    }
                }
            }
            candidates = next
            if candidates.isEmpty { return [] }
        }
        return candidates.map(\.shown).sorted()
    }

    // MARK: - Helpers for builtins

    /// Splits leading `-abc` options into letters (stops at `--` or the first operand).
    static func options(_ args: [String], allowed: String, withValue: String = "") -> (flags: Set<Character>, values: [Character: String], operands: [String])? {
        var flags = Set<Character>()
        var values: [Character: String] = [:]
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { i += 1; break }
            guard a.hasPrefix("-"), a.count > 1 else { break }
            var chars = Array(a.dropFirst())
            while !chars.isEmpty {
                let c = chars.removeFirst()
                if withValue.contains(c) {
                    if !chars.isEmpty {
                        values[c] = String(chars); chars = []
                    } else if i + 1 < args.count {
                        i += 1; values[c] = args[i]
                    } else {
                        return nil
                    }
                } else if allowed.contains(c) {
                    flags.insert(c)
                } else {
                    return nil
                }
            }
            i += 1
        }
        return (flags, values, Array(args[i...]))
    }

    func resolve(_ path: String, followLast: Bool = true) throws -> DeviceFileSystem.Resolved {
        try fs.resolve(path, cwd: cwd, followLast: followLast)
    }
}

/// The background jobs of a shell: each an and-or list on a thread of its own.
final class ShellJobs: @unchecked Sendable {
    private let group = DispatchGroup()

    func start(_ body: @escaping @Sendable () -> Void) {
        group.enter()
        Thread { [group] in
            body()
            group.leave()
        }.start()
    }

    /// `wait`: until every job started so far has ended.
    func waitAll() {
        group.wait()
    }
}

/// One background list and the shell copy it runs in (handed to its thread whole).
private final class JobBox: @unchecked Sendable {
    let job: DeviceShell
    let steps: [ShellSyntax.Step]
    let io: ShellIO
    init(job: DeviceShell, steps: [ShellSyntax.Step], io: ShellIO) {
        self.job = job
        self.steps = steps
        self.io = io
    }

    func run() {
        var steps = steps
        for index in steps.indices { steps[index].background = false }
        // An error (the client gone) ends the job, as a closed pipe ends a background process.
        _ = try? job.runSteps(steps, io: io)
    }
}
