import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// iOS file access through an ifuse mount of the app's sandbox (house_arrest), for the
/// distributions whose libimobiledevice has no `afcclient` (Debian 12, the Ubuntu LTS releases).
///
/// The first call for an app mounts it (`ifuse MOUNTPOINT -u UDID --container BUNDLE`, or
/// `--documents BUNDLE`, whose mount shows only Documents) under ``IFuseMounts``; the mount then
/// stays while the device does. Every file call through it runs on its own thread under a deadline
/// (``DeadlineFileCall``): a FUSE call can block in the kernel for as long as the daemon does.
///
/// A mount whose device went away answers `ENOTCONN` ("Transport endpoint is not connected") or
/// `EIO`: the backend unmounts it (`fusermount -u`, lazily with `-uz` if that fails) and reports
/// the device as gone (`deviceNotFound`). A call that runs out of time detaches the mount (`-uz`)
/// so the next call mounts afresh instead of queueing behind the stuck one.
///
/// - Important: the container is the phone's, not ours: a symlink in it must not lead flippio to a
///   local file. Listings use `lstat` and report links as links (never searched), and files are
///   opened with `O_NOFOLLOW`.
struct IFuseBackend: IOSFileBackend {
    let bridge: IOSBridge
    let mounts: IFuseMounts

    var kind: IOSFileBackendKind { .ifuse }

    private var timeouts: IOSBridge.Timeouts { bridge.timeouts }

    // MARK: - Operations

    func list(_ files: IOSAppFiles, path: String) async throws -> [IOSOutputParser.AFCEntry] {
        try await through(files, "list \(path)", timeout: timeouts.control) { try MountedFiles.list(local(path, in: $0, files)) }
    }

    func head(_ files: IOSAppFiles, path: String, count: Int, size: Int64?) async throws -> Data {
        try await through(files, "read the header of \(path)", timeout: timeouts.control) {
            try MountedFiles.head(local(path, in: $0, files), count: count)
        }
    }

    func download(_ files: IOSAppFiles, path: String, to destination: URL, size: Int64?) async throws {
        try await through(files, "copy \(path)", timeout: timeouts.transfer(bytes: size ?? 0)) {
            _ = try MountedFiles.copy(from: local(path, in: $0, files), to: destination.path, sync: false)
        }
    }

    /// Copies into the temp file, `fsync`s it, then reads it back through the mount and compares
    /// its SHA-256: what the phone stored, not what the page cache holds, is what gets renamed.
    func upload(_ source: URL, size: Int64, hash: String, to files: IOSAppFiles, path: String) async throws {
        try await through(files, "write \(path)", timeout: timeouts.transfer(bytes: size)) {
            let target = local(path, in: $0, files)
            if unlink(target) != 0, errno != ENOENT { throw MountedFiles.Failure(errno, "unlink", target) }
            let written = try MountedFiles.copy(from: source.path, to: target, sync: true)
            guard written == size, try MountedFiles.sha256(target) == hash else {
                throw FlippioError(.verificationFailed, "The upload of \(path) to \(files.deviceID) came out incomplete.",
                                   remedy: "Check the cable; flippio tries again.", context: ["path": path])
            }
        }
    }

    func remove(_ files: IOSAppFiles, paths: [String]) async throws {
        guard !paths.isEmpty else { return }
        try await through(files, "remove \(paths.joined(separator: ", "))", timeout: timeouts.control) { point in
            for path in paths {
                let target = local(path, in: point, files)
                if unlink(target) != 0, errno != ENOENT { throw MountedFiles.Failure(errno, "unlink", target) }
            }
        }
    }

    func move(_ files: IOSAppFiles, from: String, to: String) async throws {
        try await through(files, "rename \(from) to \(to)", timeout: timeouts.control) {
            let (source, target) = (local(from, in: $0, files), local(to, in: $0, files))
            if rename(source, target) != 0 { throw MountedFiles.Failure(errno, "rename", source) }
        }
    }

    /// For a device that went away, unmounts all its mounts; for nil (the process is ending),
    /// the mounts this process made.
    func release(deviceID: String?) async {
        for point in await mounts.mounted(deviceID: deviceID, onlyMadeHere: deviceID == nil) {
            await unmount(point)
        }
    }

    /// Unmounts every mount under the root: ones a killed agent left behind. Run at agent start.
    func removeStaleMounts() async -> [URL] {
        let stale = await mounts.mounted(deviceID: nil, onlyMadeHere: false)
        for point in stale { await unmount(point) }
        return stale
    }

    // MARK: - Mounting

    /// Where `path` (a container path such as `/Documents/x.db`) is under the mount point. A
    /// `--documents` mount shows Documents itself as its root.
    private func local(_ path: String, in point: String, _ files: IOSAppFiles) -> String {
        if files.access == .documents {
            let inside = path == "/Documents" ? "" : String(path.dropFirst("/Documents".count))
            return point + inside
        }
        return point + path
    }

    /// Runs `body` with the mount point of `files` (mounting it first if needed), under the deadline,
    /// and turns what the kernel answers into flippio's errors.
    private func through<T: Sendable>(_ files: IOSAppFiles, _ what: String, timeout: Duration,
                                      _ body: @escaping @Sendable (String) throws -> T) async throws -> T {
        let point = mounts.mountPoint(for: files)
        do {
            _ = try await mounts.ensureMounted(files, timeout: timeouts.control) { point in try await mount(files, at: point) }
            return try await DeadlineFileCall.run(what, timeout: timeout) { try body(point.path) }
        } catch let failure as MountedFiles.Failure {
            switch failure.code {
            case ENOTCONN, EIO, ECONNABORTED, ENODEV, ESHUTDOWN:
                // The ifuse daemon is gone (device unplugged, USB reset): the mount is dead for good.
                await unmount(point)
                throw IOSErrors.notConnected(files.deviceID)
            case ENOENT, ENOTDIR:
                throw FlippioError(.noSuchFile, "No such file on \(files.deviceID): \(what) (\(failure.description)).",
                                   context: ["device": files.deviceID, "app": files.appID])
            case EACCES, EPERM, ELOOP:
                throw FlippioError(.permissionDenied, "Permission denied on \(files.deviceID): \(what) (\(failure.description)).",
                                   remedy: "flippio can only reach the app's own container or Documents.",
                                   context: ["device": files.deviceID, "app": files.appID])
            default:
                throw FlippioError(.connectionReset, "A file operation through the ifuse mount failed: \(what) (\(failure.description)).",
                                   remedy: "Check the cable and that the device is unlocked; flippio tries again.",
                                   context: ["device": files.deviceID, "app": files.appID])
            }
        } catch let error as FlippioError where error.code == .timedOut {
            // The thread stays blocked in the kernel; detach the mount so later calls do not queue behind it.
            await unmount(point, lazily: true)
            throw error
        }
    }

    private func mount(_ files: IOSAppFiles, at point: URL) async throws {
        let arguments = [point.path, "-u", files.deviceID, files.access == .documents ? "--documents" : "--container", files.appID]
        let command = "ifuse " + arguments.joined(separator: " ")
        let result = try await bridge.run(.ifuse, arguments, timeout: timeouts.control)
        if let error = IOSErrors.ifuseFailure(in: result, command: command, files: files) {
            rmdir(point.path)
            throw error
        }
        guard MountTable.isMountPoint(point.path) else {
            rmdir(point.path)
            throw FlippioError(.protocolFault, "ifuse reported success but \(point.path) is not mounted.",
                               remedy: "Check that FUSE works for this user (`ls -l /dev/fuse`, package fuse3), then try again.",
                               context: ["device": files.deviceID, "app": files.appID, "command": command])
        }
    }

    /// `fusermount -u POINT` (or `-uz`: detach now, finish when the last user lets go), then
    /// removes the empty folder. Never throws: an unmount that fails leaves a mount the next start
    /// removes, and the caller is already reporting the reason.
    private func unmount(_ point: URL, lazily: Bool = false) async {
        if MountTable.isMountPoint(point.path) {
            let first = try? await bridge.run(.fusermount, [lazily ? "-uz" : "-u", point.path], timeout: timeouts.control)
            if !lazily, first?.succeeded != true, MountTable.isMountPoint(point.path) {
                _ = try? await bridge.run(.fusermount, ["-uz", point.path], timeout: timeouts.control)
            }
        }
        if !MountTable.isMountPoint(point.path) { rmdir(point.path) }
        await mounts.forget(point)
    }
}

/// Plain POSIX calls on paths inside a mount, reporting `errno` (which says whether the mount
/// is dead) rather than Foundation's translations of it.
enum MountedFiles {
    struct Failure: Error, CustomStringConvertible {
        var code: Int32
        var operation: String
        var path: String

        init(_ code: Int32, _ operation: String, _ path: String) {
            (self.code, self.operation, self.path) = (code, operation, path)
        }

        var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
    }

    static func list(_ folder: String) throws -> [IOSOutputParser.AFCEntry] {
        guard let dir = opendir(folder) else { throw Failure(errno, "opendir", folder) }
        defer { closedir(dir) }
        var entries: [IOSOutputParser.AFCEntry] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw Failure(errno, "readdir", folder) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            var info = stat()
            guard lstat(folder + "/" + name, &info) == 0 else {
                if errno == ENOENT { continue }  // removed since readdir
                throw Failure(errno, "lstat", folder + "/" + name)
            }
            switch info.st_mode & S_IFMT {
            case S_IFREG: entries.append(.init(name: name, kind: .file, size: Int64(info.st_size)))
            case S_IFDIR: entries.append(.init(name: name, kind: .directory, size: nil))
            case S_IFLNK: entries.append(.init(name: name, kind: .symlink, size: nil))
            default: entries.append(.init(name: name, kind: .other, size: nil))
            }
        }
        return entries
    }

    static func head(_ path: String, count: Int) throws -> Data {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(errno, "open", path) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, count - filled) }
            if n < 0 { if errno == EINTR { continue }; throw Failure(errno, "read", path) }
            if n == 0 { break }
            filled += n
        }
        return Data(buffer.prefix(filled))
    }

    /// Copies `source` to a new file `destination`; with `sync`, `fsync`s it before closing.
    /// Returns the bytes written.
    static func copy(from source: String, to destination: String, sync: Bool) throws -> Int64 {
        let input = open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard input >= 0 else { throw Failure(errno, "open", source) }
        defer { close(input) }
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw Failure(errno, "create", destination) }
        var total: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        do {
            while true {
                let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress!, $0.count) }
                if n < 0 { if errno == EINTR { continue }; throw Failure(errno, "read", source) }
                if n == 0 { break }
                var done = 0
                while done < n {
                    let w = buffer.withUnsafeBytes { write(output, $0.baseAddress! + done, n - done) }
                    if w < 0 { if errno == EINTR { continue }; throw Failure(errno, "write", destination) }
                    done += w
                }
                total += Int64(n)
            }
            if sync, fsync(output) != 0 { throw Failure(errno, "fsync", destination) }
        } catch {
            close(output)
            throw error
        }
        if close(output) != 0 { throw Failure(errno, "close", destination) }
        return total
    }

    static func sha256(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(errno, "open", path) }
        defer { close(fd) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw Failure(errno, "read", path) }
            if n == 0 { break }
            hasher.update(data: buffer[0..<n])
        }
        return ContentHash.hex(hasher.finalize())
    }
}
