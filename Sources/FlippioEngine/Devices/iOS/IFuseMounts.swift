import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The ifuse mounts of one flippio process: where they go, which are up, and who made them.
///
/// Mount points are `ROOT/<udid>/<bundle>` (`<bundle>.documents` for a `--documents` mount),
/// with `ROOT` = `$XDG_RUNTIME_DIR/flippio/mnt`: per user, in memory, gone at log-out, which is
/// the lifetime a mount of a phone should have. Every folder flippio makes there is 0700.
///
/// The actor only keeps the bookkeeping and serialises the making of one mount (two pulls of
/// the same app must not run two ifuse on one folder); ``IFuseBackend`` runs the tools.
///
/// - Important: the table of what is mounted is the kernel's (`/proc/self/mountinfo`), not this
///   actor's memory: a mount another flippio process made (the agent's, seen by a `flippio pull`)
///   is used, not made again, and only mounts made here are unmounted by ``releaseAll()``-style
///   calls from a one-shot command.
actor IFuseMounts {
    let root: URL
    private var madeHere: Set<String> = []
    private var making: [String: Task<URL, any Error>] = [:]

    init(root: URL) {
        self.root = root
    }

    /// `$XDG_RUNTIME_DIR/flippio/mnt`; without `XDG_RUNTIME_DIR` (a cron job, `su`),
    /// `/tmp/flippio-<uid>/mnt`, which ``prepare(_:)`` checks is the user's own.
    static func defaultRoot(environment: [String: String]) -> URL {
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
            return URL(fileURLWithPath: runtime, isDirectory: true).appendingPathComponent("flippio/mnt", isDirectory: true)
        }
        return URL(fileURLWithPath: "/tmp/flippio-\(getuid())/mnt", isDirectory: true)
    }

    /// Where `files` is (or will be) mounted.
    nonisolated func mountPoint(for files: IOSAppFiles) -> URL {
        root.appendingPathComponent(files.deviceID, isDirectory: true)
            .appendingPathComponent(files.access == .documents ? files.appID + ".documents" : files.appID, isDirectory: true)
    }

    /// The mount point of `files`, mounted by `mount` (called with the empty folder) unless the
    /// kernel already has a mount there. Concurrent callers for the same app share one `mount`.
    ///
    /// The folders are checked under `timeout` on a thread of their own: a mount the table does
    /// not show (made by another process a moment ago) may be hung, and `lstat` on it would block.
    func ensureMounted(_ files: IOSAppFiles, timeout: Duration,
                       mount: @escaping @Sendable (URL) async throws -> Void) async throws -> URL {
        let point = mountPoint(for: files)
        if MountTable.isMountPoint(point.path) { return point }
        if let task = making[point.path] { return try await task.value }
        let root = root
        let task = Task<URL, any Error> {
            try await DeadlineFileCall.run("make the mount folder \(point.path)", timeout: timeout) {
                try Self.prepare(root, below: point)
            }
            try await mount(point)
            return point
        }
        making[point.path] = task
        defer { making[point.path] = nil }
        let result = try await task.value
        madeHere.insert(point.path)
        return result
    }

    /// Forgets a mount that was unmounted (or found dead).
    func forget(_ point: URL) {
        madeHere.remove(point.path)
    }

    /// The mount points of `deviceID` (nil: every device) the kernel has under the root; with
    /// `onlyMadeHere`, only those this process made.
    func mounted(deviceID: String?, onlyMadeHere: Bool) -> [URL] {
        let prefix = deviceID.map { root.appendingPathComponent($0).path + "/" } ?? root.path + "/"
        return MountTable.mountPoints(under: prefix)
            .filter { !onlyMadeHere || madeHere.contains($0) }
            .map { URL(fileURLWithPath: $0, isDirectory: true) }
    }

    /// Makes `ROOT/..` (`flippio`), `ROOT` and the folders down to `point` (0700 each), and checks
    /// that each is this user's own folder: a `/tmp/flippio-<uid>` another user made first is refused.
    private static func prepare(_ root: URL, below point: URL) throws {
        // From `flippio` (inside $XDG_RUNTIME_DIR or /tmp) down to the mount point.
        let base = root.deletingLastPathComponent().deletingLastPathComponent().path
        var folders: [URL] = []
        var folder = point
        while folder.path.count > base.count {
            folders.insert(folder, at: 0)
            folder = folder.deletingLastPathComponent()
        }
        for folder in folders {
            if mkdir(folder.path, 0o700) != 0, errno != EEXIST {
                throw FlippioError(.workspaceWriteFailed, "flippio could not make the mount folder \(folder.path): \(String(cString: strerror(errno))).",
                                   remedy: "Check that $XDG_RUNTIME_DIR (or /tmp) is writable, or pick a backend with FLIPPIO_IOS_BACKEND=afcclient.",
                                   context: ["path": folder.path])
            }
            var info = stat()
            if lstat(folder.path, &info) != 0, [ENOTCONN, EIO].contains(errno) {
                // A dead mount the table did not show (another process's): the caller unmounts it.
                throw MountedFiles.Failure(errno, "lstat", folder.path)
            }
            guard lstat(folder.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == getuid() else {
                throw FlippioError(.unsafePath, "The mount folder \(folder.path) is not a folder of this user.",
                                   remedy: "Remove it, or set XDG_RUNTIME_DIR to your own runtime folder (e.g. /run/user/\(getuid())).",
                                   context: ["path": folder.path])
            }
        }
    }
}

/// The kernel's table of mounts, as `/proc/self/mountinfo` shows it.
enum MountTable {
    /// Mount points (decoded) whose path starts with `prefix`, deepest first (so nested ones go first).
    static func mountPoints(under prefix: String, mountinfo: String? = nil) -> [String] {
        let text = mountinfo ?? read()
        return Set(parse(text).filter { $0.hasPrefix(prefix) }).sorted { $0.count > $1.count }
    }

    static func isMountPoint(_ path: String) -> Bool {
        parse(read()).contains(path)
    }

    /// `/proc/self/mountinfo` in one `read` call.
    ///
    /// The kernel produces the table as it is read; read in pieces (as Foundation's file reading
    /// does) while other mounts come and go, it can skip lines, and a mount that is there would
    /// look absent. One call with a buffer that holds it all is consistent; the buffer grows
    /// until the table fits.
    static func read() -> String {
        var capacity = 1 << 16
        while capacity <= 1 << 26 {
            let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return "" }
            var buffer = [UInt8](repeating: 0, count: capacity)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, capacity) }
            // A table that filled the buffer may go on: read it again with room to spare.
            var more: UInt8 = 0
            let rest = n == capacity ? Glibc.read(fd, &more, 1) : 0
            close(fd)
            if n < 0 { return "" }
            if rest <= 0 { return String(decoding: buffer.prefix(n), as: UTF8.self) }
            capacity *= 4
        }
        return ""
    }

    /// The fifth field of each line, with the kernel's octal escapes (`\040` for a space,
    /// `\011`, `\012`, `\134`) decoded.
    static func parse(_ mountinfo: String) -> [String] {
        mountinfo.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4 else { return nil }
            return decode(fields[4])
        }
    }

    private static func decode(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        let raw = Array(field.utf8)
        var i = 0
        while i < raw.count {
            if raw[i] == UInt8(ascii: "\\"), i + 3 < raw.count,
               let value = UInt8(String(decoding: raw[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(raw[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
