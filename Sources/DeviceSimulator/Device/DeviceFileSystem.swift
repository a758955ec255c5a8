import Foundation
import Glibc

/// Who runs a command on the simulated device: adbd's shell user, an app (through `run-as`), or root (`su`).
enum DeviceUser: Sendable, Equatable {
    case shell
    case app(String)
    case root
}

/// An errno as the device reports it (`strerror` texts, as toybox prints them).
struct DeviceErrno: Error, Equatable {
    let code: Int32
    var text: String {
        switch code {
        case ENOENT: return "No such file or directory"
        case EACCES: return "Permission denied"
        case ENOTDIR: return "Not a directory"
        case EISDIR: return "Is a directory"
        case EEXIST: return "File exists"
        case ENOTEMPTY: return "Directory not empty"
        case ELOOP: return "Too many symbolic links encountered"
        case EINVAL: return "Invalid argument"
        case EXDEV: return "Cross-device link"
        case EPERM: return "Operation not permitted"
        default: return String(cString: strerror(code))
        }
    }
    static let noEntry = DeviceErrno(code: ENOENT)
    static let denied = DeviceErrno(code: EACCES)
    static let notDirectory = DeviceErrno(code: ENOTDIR)
    static let isDirectory = DeviceErrno(code: EISDIR)
    static let exists = DeviceErrno(code: EEXIST)
    static let notEmpty = DeviceErrno(code: ENOTEMPTY)
    static func current() -> DeviceErrno { DeviceErrno(code: errno) }
}

/// The device's file system as one user sees it: paths resolved inside `fs/`, phone-like permissions.
///
/// Device paths never escape the device's `fs/` folder: `..` stops at `/`, and symlinks are
/// resolved here component by component, an absolute target meaning the device's `/`.
struct DeviceFileSystem {
    let device: SimulatedDevice
    let user: DeviceUser

    enum Access { case stat, read, write }

    /// A device path resolved to its canonical form and its place on the host.
    struct Resolved {
        /// Canonical device path, e.g. `/data/data/com.example/databases/x.db`.
        let path: String
        let components: [String]
        /// The host path inside the device's `fs/` folder.
        let host: String
    }

    // MARK: - Resolution

    /// Resolves `path` (absolute, or relative to `cwd`), following symlinks inside the device;
    /// the last component is followed only when `followLast` is set.
    func resolve(_ path: String, cwd: String, followLast: Bool = true) throws -> Resolved {
        let start = path.hasPrefix("/") ? path : cwd + "/" + path
        // A trailing slash (`link/`) resolves the last component too, as the kernel does.
        let followLast = followLast || path.hasSuffix("/") || path.hasSuffix("/.")
        var pending = start.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var result: [String] = []
        var links = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." { continue }
            if component == ".." { _ = result.popLast(); continue }
            let candidate = result + [component]
            let isLast = pending.allSatisfy { $0 == "." }
            if !isLast || followLast {
                let host = hostPath(candidate)
                var st = stat()
                if lstat(host, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK {
                    links += 1
                    if links > 40 { throw DeviceErrno(code: ELOOP) }
                    guard let target = readLink(host) else { throw DeviceErrno.current() }
                    if target.hasPrefix("/") { result = [] }
                    pending = target.split(separator: "/").map(String.init) + pending
                    continue
                }
            }
            result = candidate
        }
        return Resolved(path: "/" + result.joined(separator: "/"), components: result, host: hostPath(result))
    }

    func hostPath(_ components: [String]) -> String {
        let base = device.fsRoot.path
        return components.isEmpty ? base : base + "/" + components.joined(separator: "/")
    }

    private func readLink(_ host: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(host, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Permissions

    /// Whether the current user may do `access` on a canonical path (the phone's rules, simplified):
    /// `/data/data/PKG` belongs to that app alone; the shell user owns `/data/local/tmp`; shared
    /// storage is open to everyone; the rest of `/data` is closed; everything else is read-only.
    func allowed(_ components: [String], _ access: Access) -> Bool {
        if user == .root { return true }
        let c = components
        // /data/data/PKG/... and /data/user/0/PKG/...
        var appIndex: Int?
        if c.count >= 2 && c[0] == "data" && c[1] == "data" { appIndex = 2 }
        if c.count >= 3 && c[0] == "data" && c[1] == "user" && c[2] == "0" { appIndex = 3 }
        if let i = appIndex {
            if c.count == i { return access == .stat }
            if user == .app(c[i]) { return true }
            return c.count == i + 1 && access == .stat
        }
        if c.count >= 3 && c[0] == "data" && c[1] == "local" && c[2] == "tmp" {
            if user == .shell { return true }
            // Apps may read what the shell put there (run-as cp /data/local/tmp/x ... works).
            return access == .stat || (access == .read && c.count > 3)
        }
        if c.first == "data" { return access == .stat }
        if let first = c.first, first == "sdcard" || first == "storage" || first == "mnt" { return true }
        return access != .write
    }

    /// Throws `Permission denied` unless ``allowed(_:_:)``.
    func check(_ resolved: Resolved, _ access: Access) throws {
        guard allowed(resolved.components, access) else { throw DeviceErrno.denied }
    }

    // MARK: - Queries

    /// `lstat` of a resolved path, as the user sees it (denied paths throw).
    func status(_ resolved: Resolved) throws -> stat {
        try check(resolved, .stat)
        var st = stat()
        guard lstat(resolved.host, &st) == 0 else { throw DeviceErrno.current() }
        return st
    }

    func exists(_ resolved: Resolved) -> Bool {
        var st = stat()
        return lstat(resolved.host, &st) == 0
    }

    func isDirectory(_ resolved: Resolved) -> Bool {
        var st = stat()
        return stat(resolved.host, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Directory entries (without `.` and `..`), sorted; the user needs read access.
    func list(_ resolved: Resolved) throws -> [String] {
        try check(resolved, .read)
        guard let dir = opendir(resolved.host) else { throw DeviceErrno.current() }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Owner uid shown for a path (the host's owner is meaningless on the device).
    func ownerUID(_ components: [String]) -> Int {
        let c = components
        if c.count >= 3 && c[0] == "data" && c[1] == "data" { return device.uid(of: c[2]) }
        if c.count >= 4 && c[0] == "data" && c[1] == "user" && c[2] == "0" { return device.uid(of: c[3]) }
        if c.count >= 3 && c[0] == "data" && c[1] == "local" && c[2] == "tmp" { return 2000 }
        if let first = c.first, first == "sdcard" || first == "storage" { return 0 }
        return 0
    }

    func groupName(_ components: [String]) -> String {
        if let first = components.first, first == "sdcard" || first == "storage" { return "sdcard_rw" }
        return device.userName(uid: ownerUID(components))
    }
}

// Free-standing POSIX calls: inside DeviceShell the builtins `stat` and `mkdir` shadow them.
func posixStat(_ path: String, _ st: inout stat) -> Int32 { stat(path, &st) }
func posixMkdir(_ path: String, _ mode: mode_t) -> Int32 { mkdir(path, mode) }
