import Foundation

/// Which program reaches an iOS app's files: `afcclient` (libimobiledevice 1.3.1 and later) or
/// `ifuse` (a FUSE mount of the app's sandbox; what Debian 12 and the Ubuntu LTS releases ship).
public enum IOSFileBackendKind: String, Sendable, Codable, CaseIterable {
    case afcclient
    case ifuse

    /// The variable that forces a backend (`afcclient` or `ifuse`); unset means "afcclient when
    /// present, else ifuse".
    public static let environmentVariable = "FLIPPIO_IOS_BACKEND"

    /// The backend `FLIPPIO_IOS_BACKEND` asks for, nil when it is unset.
    ///
    /// - throws: `invalidArgument` for any other value.
    public static func requested(in environment: [String: String]) throws -> IOSFileBackendKind? {
        guard let value = environment[environmentVariable]?.trimmingCharacters(in: .whitespaces).lowercased(),
              !value.isEmpty, value != "auto" else { return nil }
        guard let kind = IOSFileBackendKind(rawValue: value) else {
            throw FlippioError(.invalidArgument, "\(environmentVariable)=\(value) is not an iOS file backend.",
                               remedy: "Use afcclient, ifuse or auto (afcclient when installed, else ifuse).")
        }
        return kind
    }

    /// The backend to use: the one asked for, else afcclient when it is usable, else ifuse when it
    /// (and fusermount) are, else nil.
    public static func choose(requested: IOSFileBackendKind?, afcclientUsable: Bool, ifuseUsable: Bool) -> IOSFileBackendKind? {
        if let requested { return requested }
        if afcclientUsable { return .afcclient }
        if ifuseUsable { return .ifuse }
        return nil
    }

    /// What to install when neither backend is there, for `doctor` and errors.
    public static let installAdvice = "install `ifuse` (Debian 12/Ubuntu LTS: `sudo apt install ifuse`, which also brings fusermount), "
        + "or libimobiledevice 1.3.1 or later for `afcclient` (Debian 12's libimobiledevice-utils 1.3.0 does not contain it)"
}

/// One app's files on one device, as house_arrest vends them.
struct IOSAppFiles: Sendable, Hashable {
    var deviceID: String
    var appID: String
    var access: RemoteDatabase.Access

    init(deviceID: String, appID: String, access: RemoteDatabase.Access) {
        self.deviceID = deviceID
        self.appID = appID
        self.access = access
    }

    init(_ database: RemoteDatabase) {
        self.init(deviceID: database.deviceID, appID: database.appID, access: database.access)
    }
}

/// The file operations ``IOSBridge`` needs, over one of two transports.
///
/// The bridge keeps the algorithms (the database search, the pull's consistency rules, the push's
/// order of steps and its compare-and-swap check); a backend only moves bytes and names. Paths are
/// the ones `afcclient --container` shows: absolute, from the container's root (`/Documents/x.db`).
///
/// Every call is bounded in time. Errors are ``FlippioError``s: `noSuchFile` for a missing
/// path, `permissionDenied`, `deviceNotFound` when the device went away (a dead ifuse mount),
/// `iosContainerRefused` when house_arrest refuses the app.
protocol IOSFileBackend: Sendable {
    var kind: IOSFileBackendKind { get }

    /// The entries of a folder (names, kinds, sizes).
    func list(_ files: IOSAppFiles, path: String) async throws -> [IOSOutputParser.AFCEntry]

    /// Up to the first `count` bytes of a file. The ifuse backend reads only those; afcclient
    /// has no ranged read, so its backend copies the file (callers bound the size they ask about).
    func head(_ files: IOSAppFiles, path: String, count: Int, size: Int64?) async throws -> Data

    /// Copies a device file to `local` (which must not exist yet).
    func download(_ files: IOSAppFiles, path: String, to local: URL, size: Int64?) async throws

    /// Writes `local` to `path` (a temp name the caller chose) and makes sure it arrived whole:
    /// its size (afcclient) or its SHA-256 read back after `fsync` (ifuse) equals `hash`.
    ///
    /// - throws: `verificationFailed` when it did not arrive whole.
    func upload(_ local: URL, size: Int64, hash: String, to files: IOSAppFiles, path: String) async throws

    /// Removes files; the ones already gone are not an error.
    func remove(_ files: IOSAppFiles, paths: [String]) async throws

    /// Renames `from` over `to` (replacing it).
    func move(_ files: IOSAppFiles, from: String, to: String) async throws

    /// Lets go of what the backend holds for `deviceID` (its mounts); nil for every device.
    func release(deviceID: String?) async
}

// MARK: - Doctor

extension IOSFileBackendKind {
    /// `flippio doctor`'s iOS lines: the libimobiledevice tools, and which file backend is in use
    /// (or, with neither, which packages provide one).
    static func doctorChecks(_ tools: [ToolInfo], environment: [String: String]) -> [Engine.DoctorReport.Check] {
        func usable(_ tool: Tool) -> ToolInfo? { tools.first { $0.tool == tool && $0.isUsable } }
        let missing = [Tool.ideviceID, .ideviceinfo, .ideviceinstaller].filter { usable($0) == nil }
        var checks = [Engine.DoctorReport.Check(
            name: "libimobiledevice", ok: missing.isEmpty,
            detail: missing.isEmpty ? "idevice_id, ideviceinfo, ideviceinstaller found" : "missing: \(missing.map(\.rawValue).joined(separator: ", "))",
            fix: missing.isEmpty ? nil : "sudo apt install libimobiledevice-utils ideviceinstaller usbmuxd (only needed for iOS devices)")]
        let requested: IOSFileBackendKind?
        do {
            requested = try Self.requested(in: environment)
        } catch let error as FlippioError {
            checks.append(.init(name: "iOS files", ok: false, detail: error.message, fix: error.remedy))
            return checks
        } catch {
            return checks
        }
        let afcclient = usable(.afcclient), ifuse = usable(.ifuse), fusermount = usable(.fusermount)
        func describe(_ info: ToolInfo) -> String { "\(info.path ?? info.tool.rawValue) \(info.version ?? "")".trimmingCharacters(in: .whitespaces) }
        switch choose(requested: requested, afcclientUsable: afcclient != nil, ifuseUsable: ifuse != nil && fusermount != nil) {
        case .afcclient? where afcclient != nil:
            checks.append(.init(name: "iOS files", ok: true, detail: "afcclient (\(describe(afcclient!)))", fix: nil))
        case .ifuse? where ifuse != nil && fusermount != nil:
            checks.append(.init(name: "iOS files", ok: true,
                                detail: "ifuse (\(describe(ifuse!)); unmounts with \(describe(fusermount!)))", fix: nil))
        case let chosen?:
            checks.append(.init(name: "iOS files", ok: false,
                                detail: "\(environmentVariable)=\(chosen.rawValue), but \(chosen == .ifuse ? (ifuse == nil ? "ifuse" : "fusermount") : "afcclient") is not installed",
                                fix: chosen == .ifuse ? "sudo apt install ifuse (it brings fusermount)" : "install libimobiledevice 1.3.1 or later (Debian 12's libimobiledevice-utils 1.3.0 has no afcclient), or unset \(environmentVariable)"))
        case nil:
            checks.append(.init(name: "iOS files", ok: false, detail: "neither afcclient nor ifuse is installed",
                                fix: installAdvice.prefix(1).uppercased() + installAdvice.dropFirst()))
        }
        return checks
    }
}
