import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where local copies of device databases live: `<root>/<device id>/<app id>/<remote path>`.
///
/// The workspace is a plain folder tree. A database is tracked when a sidecar
/// (`<db>.flippio.json`, see ``Sidecar``) lies beside it; ``trackedDatabases()`` finds them by
/// walking the tree, so the sidecars are the agent's whole state.
///
/// Everything a device tells us (device ids, app ids, remote paths) is untrusted input:
/// ``localURL(for:)`` refuses `..`, control characters, over-long names and symlinks, so nothing
/// is ever written outside ``root``.
///
/// For example:
///
/// ```swift
/// let workspace = Workspace(root: Workspace.defaultRoot(environment: ProcessInfo.processInfo.environment))
/// let local = try workspace.localURL(for: remote)   // folders created, mode 0700
/// ```
///
/// ## Topics
///
/// - ``localURL(for:)``
/// - ``trackedDatabases()``
/// - ``stateDirectory``
/// - ``lock(for:)``
/// - ``scratchDirectory(_:)``
public struct Workspace: Sendable {
    /// The name of the agent's private folder directly under ``root`` (snapshots, locks).
    public static let stateDirectoryName = ".flippio"
    /// The longest file name accepted, in UTF-8 bytes (Linux's `NAME_MAX`).
    public static let maximumComponentLength = 255
    /// The longest absolute local path accepted, in UTF-8 bytes (Linux's `PATH_MAX`).
    public static let maximumPathLength = 4096

    /// The workspace folder. Created (mode 0700) on first use.
    public let root: URL

    public init(root: URL) {
        self.root = root.standardizedFileURL
    }

    /// The default workspace: `$FLIPPIO_WORKSPACE` when set, else `$XDG_DATA_HOME/flippio`,
    /// else `~/.local/share/flippio`.
    ///
    /// Relative values of `XDG_DATA_HOME` are ignored, as the XDG Base Directory spec requires.
    public static func defaultRoot(environment: [String: String]) -> URL {
        if let explicit = environment["FLIPPIO_WORKSPACE"], !explicit.isEmpty {
            return URL(fileURLWithPath: expandTilde(explicit, environment: environment), isDirectory: true)
                .standardizedFileURL
        }
        if let xdg = environment["XDG_DATA_HOME"], xdg.hasPrefix("/") {
            return URL(fileURLWithPath: xdg, isDirectory: true).appendingPathComponent("flippio", isDirectory: true)
                .standardizedFileURL
        }
        return URL(fileURLWithPath: homeDirectory(environment), isDirectory: true)
            .appendingPathComponent(".local/share/flippio", isDirectory: true)
            .standardizedFileURL
    }

    /// `<root>/.flippio`: snapshots and lock files. Never watched for pushes.
    public var stateDirectory: URL {
        root.appendingPathComponent(Self.stateDirectoryName, isDirectory: true)
    }

    // MARK: - Local paths

    /// The local path of a remote database, with its folders created (mode 0700).
    ///
    /// The path is `<root>/<device id>/<app id>/<remote path without its leading />`. The file
    /// itself is not created.
    ///
    /// - throws: ``FlippioError/Code/unsafePath`` when the device id, app id or remote path
    ///   contains `..` or `.` components, empty names, NUL or control characters, a name longer
    ///   than 255 bytes, a path longer than 4096 bytes, a `/` in the device or app id, a name the
    ///   agent uses for its own files, or when an existing folder on the way (or the file) is a
    ///   symlink. ``FlippioError/Code/workspaceWriteFailed`` when a folder cannot be created.
    public func localURL(for database: RemoteDatabase) throws -> URL {
        let components = try Self.relativeComponents(for: database)
        let url = components.reduce(root) { $0.appendingPathComponent($1) }
        guard url.path.utf8.count <= Self.maximumPathLength else {
            throw Self.unsafe("The local path for \(database.path) would be \(url.path.utf8.count) bytes long, over the \(Self.maximumPathLength)-byte limit.",
                              value: database.path)
        }
        try createRoot()
        try Self.createDirectories(components.dropLast(), under: root)
        try Self.checkFinal(components.last!, in: url.deletingLastPathComponent())
        return url
    }

    /// The workspace-relative components `[device id, app id, path components...]`, each checked.
    ///
    /// - throws: ``FlippioError/Code/unsafePath`` as described in ``localURL(for:)``.
    public static func relativeComponents(for database: RemoteDatabase) throws -> [String] {
        var components: [String] = []
        components.append(try checkIdentifier(database.deviceID, kind: "device id"))
        components.append(try checkIdentifier(database.appID, kind: "app id"))
        let path = database.path
        if let bad = firstControlCharacter(in: path) {
            throw unsafe("The remote path \(quoted(path)) contains the control character \(bad); refusing to use it as a local path.",
                         value: path)
        }
        guard path.utf8.count <= maximumPathLength else {
            throw unsafe("The remote path \(quoted(String(path.prefix(64))))… is \(path.utf8.count) bytes long, over the \(maximumPathLength)-byte limit.",
                         value: path)
        }
        // Normalisation: a leading `/` and repeated `/` carry no meaning; `.`/`..` are refused, not resolved.
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard !parts.isEmpty else {
            throw unsafe("The remote path \(quoted(path)) names no file.", value: path)
        }
        for part in parts {
            try checkComponent(part, in: path)
        }
        let name = parts.last!
        if isAgentFileName(name) {
            throw unsafe("The remote file name \(quoted(name)) collides with flippio's own files (\(Sidecar.fileSuffix), temporary files); refusing to track it.",
                         value: path)
        }
        components.append(contentsOf: parts)
        return components
    }

    // MARK: - Tracked databases

    /// What one walk of the workspace finds: the folders to watch, the tracked databases and the
    /// sidecar temporary files a crash may have left.
    ///
    /// The agent's start-up needs all three; one walk gives them (it used to take three, each
    /// with an `lstat` per entry, which was a tenth of the start-up time with 1,000 databases).
    public struct Scan: Sendable, Equatable {
        /// The folder the walk started from (when it is a folder) and every folder below it,
        /// sorted by path; without ``stateDirectory`` and hidden folders directly under ``root``.
        public var directories: [URL] = []
        /// Every database that has a sidecar beside it, sorted by path.
        public var databases: [URL] = []
        /// Sidecar temporary files (`.x.db.flippio.json.tmp-*`), by path.
        public var temporaryFiles: [String] = []
    }

    /// Walks the tree below `start` (the default is ``root``) once, without following symlinks.
    ///
    /// Folders are listed with `readdir` and its `d_type`, so an entry costs no `lstat` (only on
    /// file systems that do not fill `d_type` in). `entering` is called with each folder before
    /// it is listed: the agent arms its watch there, so a file created after the listing is
    /// reported by the watch, and one created before it is listed: none falls between the two.
    ///
    /// - parameters:
    ///   - start: the folder to walk; ``stateDirectory`` and hidden folders directly under
    ///     ``root`` are left out only when it is ``root``.
    ///   - entering: called with each folder, `start` first, before its entries are read.
    /// - throws: ``FlippioError/Code/workspaceWriteFailed`` only when `start` exists but cannot be
    ///   read. A missing `start` is an empty tree.
    public func scan(below start: URL? = nil, entering: (URL) -> Void = { _ in }) throws -> Scan {
        let start = start?.standardizedFileURL ?? root
        var scan = Scan()
        var directories: [(path: String, url: URL)] = []
        var databases: [String] = []
        try walk(from: start) { directory in
            // The start keeps the caller's URL (a root spelled with its trailing slash stays equal).
            let url = directory == start.path ? start : URL(fileURLWithPath: directory, isDirectory: true)
            directories.append((directory, url))
            entering(url)
        } file: { directory, name in
            if name.hasSuffix(Sidecar.fileSuffix), name.utf8.count > Sidecar.fileSuffix.utf8.count {
                databases.append(directory + "/" + name.dropLast(Sidecar.fileSuffix.count))
            } else if SidecarStore.isTemporaryFileName(name) {
                scan.temporaryFiles.append(directory + "/" + name)
            }
        }
        // Sorted as strings: `URL.path` is rebuilt on every call, and a sort calls it 20,000 times for 1,000 URLs.
        scan.directories = directories.sorted { $0.path < $1.path }.map(\.url)
        scan.databases = databases.sorted().map { URL(fileURLWithPath: $0, isDirectory: false) }
        return scan
    }

    /// Every database in the workspace that has a sidecar beside it, sorted by path.
    ///
    /// The walk does not enter ``stateDirectory`` or other hidden folders directly under
    /// ``root``, and never follows symlinks. A sidecar whose database file is missing still
    /// counts (the database is tracked; the sync engine reports the missing file).
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed`` only when ``root`` exists but cannot be read.
    ///   A missing root is an empty workspace.
    public func trackedDatabases() throws -> [URL] {
        try scan().databases
    }

    /// Every folder of the workspace that the watcher should watch: ``root`` and all folders
    /// below it, except ``stateDirectory`` and hidden folders directly under ``root``; sorted.
    public func watchableDirectories() throws -> [URL] {
        try scan().directories
    }

    /// Removes sidecar temporary files (`.x.db.flippio.json.tmp-*`) left by a crash between
    /// writing and renaming, when they are older than `age`. Returns how many were removed.
    ///
    /// The age guard keeps another process's write in progress (e.g. `flippio push` while the
    /// agent runs) from losing its temp file.
    ///
    /// - parameter found: the temporary files of a ``scan(below:entering:)`` already made; nil
    ///   walks the workspace for them.
    @discardableResult
    public func removeStaleTemporaryFiles(olderThan age: TimeInterval = 60, now: Date = Date(), found: [String]? = nil) -> Int {
        var removed = 0
        for path in found ?? ((try? scan().temporaryFiles) ?? []) {
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            let modified = Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec))
            if now.timeIntervalSince(modified) >= age, unlink(path) == 0 { removed += 1 }
        }
        return removed
    }

    // MARK: - Locks

    /// The advisory lock that serialises every change to one database across processes: pushes,
    /// pulls, resolves, forgets and every read-modify-write of its sidecar.
    ///
    /// The lock's identity is the database itself (platform, device, app, device path), never a
    /// spelling of its local path: `flippio push ~/link/x.db` and the agent take the same lock.
    /// It is a file in `<stateDirectory>/locks/` named after a hash of that identity; `flock(2)`
    /// on it, never on the database (closing any descriptor of the database would drop SQLite's
    /// POSIX locks). The returned lock is not held yet: call ``DatabaseLock/tryAcquire()`` or
    /// ``DatabaseLock/acquire(timeout:)``.
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed`` when the lock file cannot be created.
    public func lock(for database: RemoteDatabase) throws -> DatabaseLock {
        try createRoot()
        let locks = stateDirectory.appendingPathComponent("locks", isDirectory: true)
        try Self.createDirectories([Self.stateDirectoryName, "locks"], under: root)
        let url = locks.appendingPathComponent("\(Self.identityKey(for: database)).lock")
        return try DatabaseLock(lockFile: url, name: "\(database.deviceID):\(database.path)")
    }

    /// A file-name-safe key for a database's identity (platform, device, app, device path): the
    /// name of its lock and of its base copy.
    static func identityKey(for database: RemoteDatabase) -> String {
        let identity = [database.platform.rawValue, database.deviceID, database.appID, database.path].joined(separator: "\u{0}")
        return String(ContentHash.sha256(Data(identity.utf8)).prefix(32))
    }

    /// Creates `<stateDirectory>/<name>` (mode 0700, no symlinks) and returns it.
    func stateSubdirectory(_ name: String) throws -> URL {
        try createRoot()
        try Self.createDirectories([Self.stateDirectoryName, name], under: root)
        return stateDirectory.appendingPathComponent(name, isDirectory: true)
    }

    // MARK: - Scratch space

    /// This process's private scratch folder, `<stateDirectory>/scratch/<pid>/` (snapshots in
    /// flight, pull staging), created on demand.
    ///
    /// Named by process so that ``removeLeftovers()`` can tell the scratch of a killed process
    /// (removed) from that of a running one (a `flippio pull` beside the agent: kept).
    public func processScratchDirectory() throws -> URL {
        try createRoot()
        let pid = String(getpid())
        try Self.createDirectories([Self.stateDirectoryName, "scratch", pid], under: root)
        return stateDirectory.appendingPathComponent("scratch/\(pid)", isDirectory: true)
    }

    /// A new, empty folder inside ``processScratchDirectory()``, named `<purpose>-<random>`.
    public func scratchDirectory(_ purpose: String) throws -> URL {
        let url = try processScratchDirectory().appendingPathComponent("\(purpose)-\(UUID().uuidString.prefix(12))", isDirectory: true)
        guard mkdir(url.path, 0o700) == 0 else { throw FlippioError.workspaceWriteFailed(path: url.path, errno: errno) }
        return url
    }

    /// Removes what killed processes left behind: scratch folders of processes that no longer
    /// run, snapshot and staging folders of older versions, and sidecar temporary files (see
    /// ``removeStaleTemporaryFiles(olderThan:now:found:)``). Returns how many entries were removed.
    ///
    /// - parameter scan: a walk of the workspace already made (the agent's start-up has one);
    ///   nil walks it again.
    @discardableResult
    public func removeLeftovers(scan: Scan? = nil) -> Int {
        var removed = removeStaleTemporaryFiles(found: scan?.temporaryFiles)
        let fileManager = FileManager.default
        let scratch = stateDirectory.appendingPathComponent("scratch", isDirectory: true)
        for name in (try? fileManager.contentsOfDirectory(atPath: scratch.path)) ?? [] {
            guard let pid = Int32(name), pid > 0 else { continue }
            // ESRCH: no such process. EPERM means it runs (as another user): keep its folder.
            if kill(pid, 0) != 0 && errno == ESRCH,
               (try? fileManager.removeItem(at: scratch.appendingPathComponent(name))) != nil {
                removed += 1
            }
        }
        // Earlier versions kept snapshots in `snapshots/` and staging in `pull-<uuid>/`, with no owner.
        for name in (try? fileManager.contentsOfDirectory(atPath: stateDirectory.path)) ?? []
        where name == "snapshots" || name.hasPrefix("pull-") {
            if (try? fileManager.removeItem(at: stateDirectory.appendingPathComponent(name))) != nil { removed += 1 }
        }
        return removed
    }

    // MARK: - Internals

    /// Creates ``root`` and its missing parents (mode 0700). Symlinks above the root are the
    /// user's choice and are followed.
    private func createRoot() throws {
        if Self.lstatMode(root.path) != nil { return }
        var path = ""
        for component in root.path.split(separator: "/") {
            path += "/" + component
            if mkdir(path, 0o700) != 0, errno != EEXIST {
                throw FlippioError.workspaceWriteFailed(path: path, errno: errno)
            }
        }
    }

    /// Walks the tree below `start` without following symlinks: `entering(folder)` before a
    /// folder is read, then `file(folder, name)` for each regular file in it.
    ///
    /// Paths stay `String`s inside the walk: building a `URL` per entry costs more than the
    /// `readdir` itself, and only the few entries a caller keeps need one.
    private func walk(from start: URL, entering: (String) -> Void, file: (String, String) -> Void) throws {
        let startPath = start.path
        // The start may be a symlink (a root the user pointed elsewhere): followed, only there.
        guard let mode = Self.lstatMode(startPath), mode & S_IFMT == S_IFDIR || mode & S_IFMT == S_IFLNK else { return }
        let skipsHiddenTopFolders = startPath == root.path
        var stack: [(path: String, depth: Int)] = [(startPath, 0)]
        while let (directory, depth) = stack.popLast() {
            guard let handle = opendir(directory) else {
                if depth == 0 { throw FlippioError.workspaceWriteFailed(path: directory, errno: errno) }
                continue  // a folder removed or unreadable mid-walk: skip it
            }
            defer { closedir(handle) }
            // Before the first readdir (which reads the entries): whatever is created from here
            // on is both listed or reported by a watch armed in `entering`, never neither.
            entering(directory)
            let prefix = directory == "/" ? "" : directory
            while let entry = readdir(handle) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name == "." || name == ".." { continue }
                var type = entry.pointee.d_type
                if type == UInt8(DT_UNKNOWN) {
                    // Some file systems leave d_type empty: ask, still without following links.
                    guard let mode = Self.lstatMode(prefix + "/" + name) else { continue }
                    type = mode & S_IFMT == S_IFDIR ? UInt8(DT_DIR) : mode & S_IFMT == S_IFREG ? UInt8(DT_REG) : UInt8(DT_LNK)
                }
                switch type {
                case UInt8(DT_DIR):
                    if depth == 0 && skipsHiddenTopFolders && name.hasPrefix(".") { continue }
                    stack.append((prefix + "/" + name, depth + 1))
                case UInt8(DT_REG):
                    file(prefix, name)
                default:
                    continue  // symlinks, sockets, devices: never followed, never tracked
                }
            }
        }
    }

    static func lstatMode(_ path: String) -> mode_t? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return info.st_mode
    }

    /// Creates `components` one by one under `base`, refusing symlinks: each folder is opened
    /// with `O_NOFOLLOW | O_DIRECTORY` relative to its parent, so a symlink planted anywhere on
    /// the way (even between the check and the use) makes the call fail instead of escaping.
    static func createDirectories<C: Collection>(_ components: C, under base: URL) throws where C.Element == String {
        var fd = open(base.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: base.path, errno: errno) }
        defer { close(fd) }
        var current = base
        for component in components {
            current = current.appendingPathComponent(component, isDirectory: true)
            if mkdirat(fd, component, 0o700) != 0, errno != EEXIST {
                throw FlippioError.workspaceWriteFailed(path: current.path, errno: errno)
            }
            let next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 {
                let code = errno
                var info = stat()
                if fstatat(fd, component, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFLNK {
                    throw unsafe("\(current.path) is a symlink; flippio never follows symlinks inside its workspace. Remove it and pull again.",
                                 value: current.path)
                }
                if code == ENOTDIR || code == ELOOP {
                    throw unsafe("\(current.path) exists and is not a folder; cannot store a database below it.",
                                 value: current.path)
                }
                throw FlippioError.workspaceWriteFailed(path: current.path, errno: code)
            }
            close(fd)
            fd = next
        }
    }

    /// The final path component may not exist yet; if it does, it must be a regular file.
    private static func checkFinal(_ name: String, in directory: URL) throws {
        let path = directory.appendingPathComponent(name).path
        guard let mode = lstatMode(path) else { return }
        switch mode & S_IFMT {
        case S_IFREG: return
        case S_IFLNK:
            throw unsafe("\(path) is a symlink; flippio never writes through symlinks inside its workspace. Remove it and pull again.",
                         value: path)
        default:
            throw unsafe("\(path) exists and is not a regular file; cannot store a database there.", value: path)
        }
    }

    private static func checkIdentifier(_ value: String, kind: String) throws -> String {
        if value.contains("/") {
            throw unsafe("The \(kind) \(quoted(value)) contains `/`; refusing to use it as a folder name.", value: value)
        }
        if value.hasPrefix(".") && value != "." && value != ".." {
            throw unsafe("The \(kind) \(quoted(value)) starts with `.`; such folders are hidden and reserved for flippio's state.",
                         value: value)
        }
        try checkComponent(value, in: nil, kind: kind)
        return value
    }

    private static func checkComponent(_ component: String, in path: String?, kind: String = "path component") throws {
        let context = path.map { " in the remote path \(quoted($0))" } ?? ""
        if component.isEmpty {
            throw unsafe("The \(kind) is empty\(context).", value: path ?? component)
        }
        if component == "." || component == ".." {
            throw unsafe("The \(kind) \(quoted(component))\(context) would leave its folder; refusing it.", value: path ?? component)
        }
        if let bad = firstControlCharacter(in: component) {
            throw unsafe("The \(kind) \(quoted(component))\(context) contains the control character \(bad).", value: path ?? component)
        }
        if component.utf8.count > maximumComponentLength {
            throw unsafe("The \(kind) \(quoted(String(component.prefix(40))))…\(context) is \(component.utf8.count) bytes long, over the \(maximumComponentLength)-byte limit.",
                         value: path ?? component)
        }
    }

    /// Names the agent writes for itself, which a device file must never shadow.
    static func isAgentFileName(_ name: String) -> Bool {
        name.hasSuffix(Sidecar.fileSuffix) || SidecarStore.isTemporaryFileName(name)
    }

    private static func firstControlCharacter(in string: String) -> String? {
        for scalar in string.unicodeScalars {
            let v = scalar.value
            if v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) {
                return String(format: "U+%04X", v)
            }
        }
        return nil
    }

    /// Quotes untrusted text for a message, with control characters escaped so logs stay one line.
    private static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars.prefix(300) {
            let v = scalar.value
            if v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) {
                out += String(format: "\\u{%02X}", v)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func unsafe(_ message: String, value: String) -> FlippioError {
        FlippioError(.unsafePath, message,
                     remedy: "The device reported a name that cannot be stored safely; rename the file on the device or pull another database.",
                     context: ["value": String(value.prefix(512))])
    }

    private static func homeDirectory(_ environment: [String: String]) -> String {
        if let home = environment["HOME"], home.hasPrefix("/") { return home }
        if let pw = getpwuid(getuid()), let dir = pw.pointee.pw_dir { return String(cString: dir) }
        return NSHomeDirectory()
    }

    private static func expandTilde(_ path: String, environment: [String: String]) -> String {
        if path == "~" { return homeDirectory(environment) }
        if path.hasPrefix("~/") { return homeDirectory(environment) + path.dropFirst(1) }
        return path
    }
}
