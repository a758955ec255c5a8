import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `afcclient` as in libimobiledevice's tools/afcclient.c (git master after 1.3.0, with
/// `get`/`put [-rf]`): command-line mode only. Like the real tool, a failed command prints an
/// `Error: ...` line on stdout and still exits 0.
struct AFCClient {
    let sim: Simulator

    /// AFC error codes and `afc_strerror` texts.
    enum AFCError: Int, Error {
        case objectNotFound = 8
        case objectIsDir = 9
        case permissionDenied = 10
        case objectExists = 16
        case muxError = 30
        case dirNotEmpty = 33

        var text: String {
            switch self {
            case .objectNotFound: "Not found"
            case .objectIsDir: "Object is a directory"
            case .permissionDenied: "Permission denied"
            case .objectExists: "Object exists"
            case .muxError: "MUX error"
            case .dirNotEmpty: "Directory not empty"
            }
        }

        var suffix: String { "\(text) (\(rawValue))" }
    }

    static let usage = """
        Usage: afcclient [OPTIONS]

        Interact with AFC/HouseArrest service on a connected device.

        OPTIONS:
          -u, --udid UDID       target specific device by UDID
          -n, --network         connect to network device (not recommended!)
          --container <appid>   Access container of given app
          --documents <appid>   Access Documents directory of given app
          -h, --help            prints usage information
          -d, --debug           enable communication debugging
          -v, --version         prints version information


        Homepage:    <https://libimobiledevice.org>
        Bug Reports: <https://github.com/libimobiledevice/libimobiledevice/issues>

        """

    func run(_ args: [String]) -> Never {
        var udid: String?
        var appID: String?
        var container = false
        var useNetwork = false
        var rest: [String] = []
        // GNU getopt_long permutes: options are taken from anywhere before "--", so a command's
        // own flags (`ls -l`, `get -rf`) need "--" in front of the command.
        var scanner = ArgumentScanner(args)
        var endOfOptions = false
        while let arg = scanner.next() {
            if endOfOptions || arg == "-" || !arg.hasPrefix("-") { rest.append(arg); continue }
            switch arg {
            case "--": endOfOptions = true
            case "-u", "--udid":
                guard let value = scanner.next(), !value.isEmpty else {
                    Output.err("ERROR: UDID must not be empty!\n"); Output.err(Self.usage); Output.finish(2)
                }
                udid = value
            case "-n", "--network": useNetwork = true
            case "-d", "--debug": break
            case "-h", "--help": Output.out(Self.usage); Output.finish(0)
            case "-v", "--version": Output.out("afcclient 1.3.1 (readline)\n"); Output.finish(0)
            case "--container", "--documents":
                guard let value = scanner.next(), !value.isEmpty else {
                    Output.err(arg == "--container" ? "ERROR: '--container' requires a not-empty app ID!\n"
                        : "ERROR: '--documents' requires a non-empty app ID!\n")
                    Output.err(Self.usage)
                    Output.finish(2)
                }
                appID = value
                container = arg == "--container"
            default:
                let program = CommandLine.arguments.first ?? "afcclient"
                if arg.hasPrefix("--") {
                    Output.err("\(program): unrecognized option '\(arg)'\n")
                } else {
                    Output.err("\(program): invalid option -- '\(arg.dropFirst().prefix(1))'\n")
                }
                Output.err(Self.usage)
                Output.finish(2)
            }
        }

        let visible = sim.usbmuxdDown ? [] : sim.devices().filter { !$0.isNetwork || useNetwork }
        guard !visible.isEmpty else {
            sim.applyFaults(tool: "afcclient", device: nil)
            Output.err("No device found. Plug in a device or pass UDID with -u to wait for device to be available.\n")
            Output.finish(1)
        }
        let device: SimDevice
        if let udid {
            guard let found = visible.first(where: { $0.udid == udid }) else {
                // The real tool waits for that device to appear: it hangs until killed.
                Output.flush()
                while true { sleep(60) }
            }
            device = found
        } else {
            device = visible[0]
        }
        let command = rest.first ?? ""
        let drop = sim.applyFaults(tool: "afcclient", device: device,
                                   consumeTransferDrop: command == "get" || command == "put")
        if let refusal = lockdownRefusal(device) {
            Output.err("ERROR: Could not connect to lockdownd: \(refusal.text) (\(refusal.code))\n")
            Output.finish(1)
        }

        let root: URL
        var documentsOnly = false
        if let appID {
            let app = device.config.apps?[appID]
            let vended = container ? (app?.container ?? false) : (app?.documents ?? false)
            guard app != nil, vended else {
                Output.err("ERROR: InstallationLookupFailed\n")
                Output.err("The App '\(appID)' is either not present on the device, or the 'UIFileSharingEnabled' key is not set in its Info.plist. Starting with iOS 8.3 this key is mandatory to allow access to an app's Documents folder.\n")
                Output.finish(0)
            }
            root = device.folder.appendingPathComponent("containers", isDirectory: true)
                .appendingPathComponent(appID, isDirectory: true)
            documentsOnly = !container
        } else {
            root = device.folder.appendingPathComponent("media", isDirectory: true)
        }
        try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        var fs = AFCFileSystem(root: root, documentsOnly: documentsOnly)
        guard !rest.isEmpty else { Output.finish(0) }  // interactive mode is not emulated
        fs.execute(command: command, args: Array(rest.dropFirst()), dropTransfer: drop)
        Output.finish(0)
    }
}

/// The app container as AFC shows it: absolute AFC paths map into `root`, never out of it.
struct AFCFileSystem {
    typealias AFCError = AFCClient.AFCError
    let root: URL
    let documentsOnly: Bool
    let fm = FileManager.default

    struct Stat {
        var isDirectory: Bool
        var isSymlink: Bool
        var size: UInt64
        var nlink: Int
        var mtime: Date
        var birth: Date
    }

    /// `get_absolute_path`: relative paths are taken from "/" (the current folder in command-line mode).
    func absolute(_ path: String) -> String { path.hasPrefix("/") ? path : "/" + path }

    /// Normalizes `path` (".", "..", repeated slashes; ".." stops at the root) and maps it to a URL
    /// inside the container, or fails with permission denied when it would leave it.
    func resolve(_ path: String) -> Result<(String, URL), AFCError> {
        var parts: [String] = []
        for component in absolute(path).split(separator: "/", omittingEmptySubsequences: true) {
            if component == "." { continue }
            if component == ".." { _ = parts.popLast(); continue }
            parts.append(String(component))
        }
        if documentsOnly, let first = parts.first, first != "Documents" { return .failure(.permissionDenied) }
        var url = root
        for part in parts { url.appendPathComponent(part) }
        // Symbolic links must not lead out of the container.
        let base = root.resolvingSymlinksInPath().path
        var probe = url
        while !fm.fileExists(atPath: probe.path) && probe.path.count > root.path.count {
            probe.deleteLastPathComponent()
        }
        let real = probe.resolvingSymlinksInPath().path
        if real != base && !real.hasPrefix(base + "/") { return .failure(.permissionDenied) }
        return .success(("/" + parts.joined(separator: "/"), url))
    }

    func stat(_ url: URL) -> Stat? {
        guard let attributes = try? fm.attributesOfItem(atPath: url.path) else { return nil }
        let type = attributes[.type] as? FileAttributeType
        let mtime = attributes[.modificationDate] as? Date ?? Date(timeIntervalSince1970: 0)
        return Stat(isDirectory: type == .typeDirectory, isSymlink: type == .typeSymbolicLink,
                    size: (attributes[.size] as? NSNumber)?.uint64Value ?? 0,
                    nlink: (attributes[.referenceCount] as? NSNumber)?.intValue ?? 1,
                    mtime: mtime, birth: attributes[.creationDate] as? Date ?? mtime)
    }

    func entries(_ url: URL, normalized: String) -> [String] {
        if documentsOnly && normalized == "/" { return fm.fileExists(atPath: url.appendingPathComponent("Documents").path) ? ["Documents"] : [] }
        return ((try? fm.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
    }

    mutating func execute(command: String, args: [String], dropTransfer: Bool) {
        switch command {
        case "ls", "list": list(args)
        case "info": info(args)
        case "get": get(args, drop: dropTransfer)
        case "put": put(args, drop: dropTransfer)
        case "mv", "rename": rename(args)
        case "rm", "remove": remove(args)
        case "mkdir": mkdir(args)
        case "help": Output.out("Available commands:\n")
        case "pwd": Output.out("/\n")
        default: Output.out("Unknown command '\(command)'. Type 'help' to get a list of available commands.\n")
        }
    }

    // MARK: - Commands

    func printFileInfo(_ url: URL, name: String, verbose: Bool) {
        if verbose {
            let st = stat(url) ?? Stat(isDirectory: false, isSymlink: false, size: 0, nlink: 0, mtime: Date(timeIntervalSince1970: 0), birth: Date(timeIntervalSince1970: 0))
            let mode = st.isDirectory ? "drwxr-xr-x" : st.isSymlink ? "lrwxrwxrwx" : "-rw-r--r--"
            Output.out(mode + " " + String(format: "%4d", st.nlink) + " mobile mobile " + String(format: "%10lld", Int64(st.size)) + " " + timeText(st.mtime) + " ")
        }
        Output.out(name + "\n")
    }

    func timeText(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var tm = tm()
        localtime_r(&t, &tm)
        var buffer = [CChar](repeating: 0, count: 64)
        let count = strftime(&buffer, 64, "%d %h %Y %H:%M:%S", &tm)
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func list(_ args: [String]) {
        var verbose = false
        var path = "/"
        if let first = args.first {
            if first == "-l" { verbose = true; if args.count == 2 { path = args[1] } } else { path = first }
        }
        switch resolve(path) {
        case .failure(let error):
            Output.out("Error: Failed to list '\(path)': \(error.suffix)\n")
        case .success(let (normalized, url)):
            guard let st = stat(url) else {
                Output.out("Error: Failed to list '\(path)': \(AFCError.objectNotFound.suffix)\n")
                return
            }
            if !st.isDirectory {
                printFileInfo(url, name: url.lastPathComponent, verbose: verbose)
                return
            }
            for name in entries(url, normalized: normalized) {
                printFileInfo(url.appendingPathComponent(name), name: name, verbose: verbose)
            }
        }
    }

    func info(_ args: [String]) {
        guard let path = args.first else { Output.out("Error: Missing PATH.\n"); return }
        guard case .success(let (_, url)) = resolve(path), let st = stat(url) else {
            let error: AFCError = { if case .failure(let e) = resolve(path) { return e }; return .objectNotFound }()
            Output.out("Error: Failed to get file info for \(path): \(error.suffix)\n")
            return
        }
        let ifmt = st.isDirectory ? "S_IFDIR" : st.isSymlink ? "S_IFLNK" : "S_IFREG"
        let blocks = (st.size + 4095) / 4096 * 8
        // plist_write_to_stream(..., PLIST_FORMAT_JSON): libplist's pretty JSON, keys in AFC's order.
        Output.out("""
            {
              "st_size": \(st.size),
              "st_blocks": \(blocks),
              "st_nlink": \(st.nlink),
              "st_ifmt": "\(ifmt)",
              "st_mtime": \(UInt64(max(0, st.mtime.timeIntervalSince1970)) * 1_000_000_000),
              "st_birthtime": \(UInt64(max(0, st.birth.timeIntervalSince1970)) * 1_000_000_000)
            }

            """)
    }

    /// Splits `[-r] [-f] [-rf] [--]` flags off the front.
    func flags(_ args: [String]) -> (recursive: Bool, force: Bool, rest: [String]) {
        var recursive = false, force = false
        var index = 0
        while index < args.count {
            let arg = args[index]
            if arg == "--" { index += 1; break }
            if arg == "-r" { recursive = true } else if arg == "-f" { force = true }
            else if arg == "-rf" || arg == "-fr" { recursive = true; force = true } else { break }
            index += 1
        }
        return (recursive, force, Array(args[index...]))
    }

    func stripSlash(_ path: String) -> String {
        path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    func get(_ args: [String], drop: Bool) {
        let (recursive, force, rest) = flags(args)
        guard rest.count == 1 || rest.count == 2 else { Output.out("Error: Invalid number of arguments\n"); return }
        let source = absolute(stripSlash(rest[0]))
        var destination = rest.count == 2 ? stripSlash(rest[1]) : (source as NSString).lastPathComponent
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: destination, isDirectory: &isDir), isDir.boolValue {
            destination = destination == "/" ? "/" + (source as NSString).lastPathComponent
                : destination + "/" + (source as NSString).lastPathComponent
        }
        _ = recursive
        let url: URL
        switch resolve(source) {
        case .failure(let error):
            Output.out("Error: Failed to open file '\(source)': \(error.suffix)\n"); return
        case .success(let (_, resolved)): url = resolved
        }
        guard let st = stat(url) else {
            Output.out("Error: Failed to read from file '\(source)': \(AFCError.objectNotFound.suffix)\n"); return
        }
        if st.isDirectory {
            Output.out("Error: Failed to get a directory without '-r' option: \(source)\n"); return
        }
        guard let data = fm.contents(atPath: url.path) else {
            Output.out("Error: Failed to open file '\(source)': \(AFCError.permissionDenied.suffix)\n"); return
        }
        if fm.fileExists(atPath: destination) && !force {
            Output.out("Error: Failed to overwrite existing file without '-f' option: \(destination)\n"); return
        }
        guard fm.createFile(atPath: destination, contents: nil) , let handle = FileHandle(forWritingAtPath: destination) else {
            Output.out("Error: Failed to open local file '\(destination)': \(String(cString: strerror(errno)))\n"); return
        }
        defer { try? handle.close() }
        let limit = drop ? data.count / 2 : data.count
        writeWithProgress(data.prefix(limit), total: data.count) { try? handle.write(contentsOf: $0) }
        if drop {
            Output.out("Error: Failed to read from file '\(source)': \(AFCError.muxError.suffix)\n")
        }
    }

    func put(_ args: [String], drop: Bool) {
        let (_, force, rest) = flags(args)
        guard rest.count == 1 || rest.count == 2 else { Output.out("Error: Invalid number of arguments\n"); return }
        let source = stripSlash(rest[0])
        var destination = absolute(rest.count == 2 ? stripSlash(rest[1]) : (source as NSString).lastPathComponent)
        guard case .success(let (_, initial)) = resolve(destination) else {
            return  // afc_file_open fails: afcclient prints nothing
        }
        var url = initial
        if let st = stat(url), st.isDirectory {
            destination = destination == "/" ? "/" + (source as NSString).lastPathComponent
                : destination + "/" + (source as NSString).lastPathComponent
            guard case .success(let (_, inner)) = resolve(destination) else { return }
            url = inner
        }
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: source, isDirectory: &isDir), isDir.boolValue {
            Output.out("Error: Failed to put directory without '-r' option: \(source)\n"); return
        }
        if stat(url) != nil && !force {
            Output.out("Error: Failed to write into existing file without '-f' option: \(destination)\n"); return
        }
        guard let data = fm.contents(atPath: source) else {
            Output.out("Error: Failed to open local file '\(source)': \(String(cString: strerror(errno)))\n"); return
        }
        // afc_file_open(AFC_FOPEN_RW) truncates in place (no temp file); a missing parent folder
        // makes it fail, and afcclient says nothing about that.
        var parentIsDir: ObjCBool = false
        guard fm.fileExists(atPath: url.deletingLastPathComponent().path, isDirectory: &parentIsDir), parentIsDir.boolValue,
              stat(url)?.isSymlink != true,
              fm.createFile(atPath: url.path, contents: nil), let handle = FileHandle(forWritingAtPath: url.path) else {
            return
        }
        defer { try? handle.close() }
        let limit = drop ? data.count / 2 : data.count
        writeWithProgress(data.prefix(limit), total: data.count) { try? handle.write(contentsOf: $0) }
        if drop { Output.out("Error: Failed to write to device file\n") }
    }

    /// Writes in 1 MiB chunks, printing afcclient's progress for files over 4 MiB.
    func writeWithProgress(_ data: Data, total: Int, write: (Data) -> Void) {
        let progress = total > 0x400000
        var done = 0
        var last = 0
        let start = Date()
        while done < data.count {
            let chunk = data[data.startIndex + done ..< data.startIndex + min(done + 0x100000, data.count)]
            write(Data(chunk))
            done += chunk.count
            if progress {
                let percent = Int(Double(done) / Double(total) * 100)
                if percent > last {
                    let seconds = max(Date().timeIntervalSince(start), 0.000001)
                    Output.out("\r" + String(format: "%d%% (%0.1f MB/s)   ", percent, Double(done) / 1048576 / seconds))
                    last = percent
                }
            }
        }
        if progress { Output.out("\n") }
    }

    func rename(_ args: [String]) {
        guard args.count == 2 else { Output.out("Error: Invalid number of arguments\n"); return }
        let fail = { (error: AFCError) in Output.out("Error: Failed to rename '\(args[0])' -> '\(args[1])': \(error.suffix)\n") }
        guard case .success(let (_, from)) = resolve(args[0]) else { return fail(.permissionDenied) }
        guard case .success(let (_, to)) = resolve(args[1]) else { return fail(.permissionDenied) }
        guard stat(from) != nil else { return fail(.objectNotFound) }
        // rename(2): replaces an existing file atomically.
        if Glibc.rename(from.path, to.path) != 0 {
            fail(errno == ENOENT ? .objectNotFound : errno == ENOTEMPTY ? .dirNotEmpty : .permissionDenied)
        }
    }

    func remove(_ args: [String]) {
        let (recursive, _, rest) = flags(args)
        for path in rest {
            let fail = { (error: AFCError) in Output.out("Error: Failed to remove '\(path)': \(error.suffix)\n") }
            guard case .success(let (normalized, url)) = resolve(path) else { fail(.permissionDenied); continue }
            guard normalized != "/", let st = stat(url) else { fail(.objectNotFound); continue }
            if st.isDirectory && !recursive && !((try? fm.contentsOfDirectory(atPath: url.path))?.isEmpty ?? true) {
                fail(.dirNotEmpty); continue
            }
            if (try? fm.removeItem(at: url)) == nil { fail(.permissionDenied) }
        }
    }

    func mkdir(_ args: [String]) {
        for path in args {
            guard case .success(let (_, url)) = resolve(path) else {
                Output.out("Error: Failed to create directory '\(path)': \(AFCError.permissionDenied.suffix)\n"); continue
            }
            if stat(url) != nil {
                Output.out("Error: Failed to create directory '\(path)': \(AFCError.objectExists.suffix)\n"); continue
            }
            if (try? fm.createDirectory(at: url, withIntermediateDirectories: false)) == nil {
                Output.out("Error: Failed to create directory '\(path)': \(AFCError.objectNotFound.suffix)\n")
            }
        }
    }
}
