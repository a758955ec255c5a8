import Foundation

/// Which kind of device a database lives on.
public enum Platform: String, Sendable, Codable, CaseIterable {
    case android
    case ios
}

/// A device as its tool reports it, including devices that cannot be used right now.
public struct Device: Sendable, Codable, Equatable {
    /// How usable the device is.
    public enum State: String, Sendable, Codable {
        /// Connected and authorized: ready.
        case ready = "device"
        case offline
        case unauthorized
        /// adb says "connecting" / "authorizing" (a state that passes by itself).
        case connecting
        /// iOS: connected but not paired/trusted, or locked.
        case notTrusted = "not-trusted"
        case locked
        case unknown
    }

    public var platform: Platform
    /// adb serial or iOS UDID.
    public var id: String
    public var state: State
    /// Model or device name, when the tool tells it.
    public var model: String?
    /// OS version (Android release or iOS ProductVersion), when known.
    public var osVersion: String?
    /// Extra details the tool printed (adb's `product:`, `transport_id:`, `usb:`...).
    public var details: [String: String]
    /// What the user should do when ``state`` is not ``State/ready``.
    public var remedy: String?

    public init(platform: Platform, id: String, state: State, model: String? = nil, osVersion: String? = nil,
                details: [String: String] = [:], remedy: String? = nil) {
        self.platform = platform
        self.id = id
        self.state = state
        self.model = model
        self.osVersion = osVersion
        self.details = details
        self.remedy = remedy
    }
}

/// An installed app.
public struct AppInfo: Sendable, Codable, Equatable {
    /// Android package name or iOS bundle identifier.
    public var id: String
    public var name: String?
    public var version: String?
    /// Android: whether `run-as` works for it, when known.
    public var debuggable: Bool?

    public init(id: String, name: String? = nil, version: String? = nil, debuggable: Bool? = nil) {
        self.id = id
        self.name = name
        self.version = version
        self.debuggable = debuggable
    }
}

/// Where a database lives on the device, and how it is reached.
public struct RemoteDatabase: Sendable, Codable, Equatable, Hashable {
    /// How the agent gets at the file.
    public enum Access: String, Sendable, Codable {
        /// Android: `/data/data/PKG/...` through `run-as PKG`.
        case runAs = "run-as"
        /// Android: app-private storage through `su` (rooted devices, emulator images).
        case su
        /// Android: shared storage (`/sdcard/Android/data/PKG/...`) as the shell user.
        case shell
        /// iOS: the app's container through house_arrest (`afcclient --container`).
        case container
        /// iOS: the app's shared Documents (`afcclient --documents`).
        case documents
    }

    public var platform: Platform
    public var deviceID: String
    public var appID: String
    /// Absolute path on the device (Android) or path inside the container (iOS, e.g. `/Documents/x.db`).
    public var path: String
    public var access: Access
    /// Size in bytes when the listing told it.
    public var size: Int64?

    public init(platform: Platform, deviceID: String, appID: String, path: String, access: Access, size: Int64? = nil) {
        self.platform = platform
        self.deviceID = deviceID
        self.appID = appID
        self.path = path
        self.access = access
        self.size = size
    }

    /// The file name (last path component).
    public var fileName: String { path.split(separator: "/").last.map(String.init) ?? path }
}

/// What the device's copy of a database looked like at one moment: hashes of `x.db` and its
/// `-wal` (nil when absent). Two fingerprints differ exactly when the app (or anyone) wrote.
public struct DeviceFingerprint: Sendable, Codable, Equatable, Hashable {
    /// SHA-256 (hex) of the main database file, nil when the file does not exist.
    public var mainHash: String?
    /// SHA-256 (hex) of `-wal`, nil when there is none (an empty `-wal` counts as none).
    public var walHash: String?
    /// SHA-256 (hex) of `-journal`, nil when there is none.
    public var journalHash: String?

    public init(mainHash: String?, walHash: String? = nil, journalHash: String? = nil) {
        self.mainHash = mainHash
        self.walHash = walHash
        self.journalHash = journalHash
    }

    /// A device copy that has no database file at all.
    public static let absent = DeviceFingerprint(mainHash: nil)
}

/// What a pull fetched: the files written locally and the device fingerprint they came from.
public struct PulledFiles: Sendable, Equatable {
    /// The local main file (`x.db`), exactly the device's bytes.
    public var mainFile: URL
    /// The local `-wal` beside it, if the device had one.
    public var walFile: URL?
    /// The local `-journal` beside it, if the device had one (a hot journal).
    public var journalFile: URL?
    public var fingerprint: DeviceFingerprint

    public init(mainFile: URL, walFile: URL?, journalFile: URL?, fingerprint: DeviceFingerprint) {
        self.mainFile = mainFile
        self.walFile = walFile
        self.journalFile = journalFile
        self.fingerprint = fingerprint
    }
}

/// Reports progress of a long transfer (bytes done, total when known).
public typealias TransferProgress = @Sendable (_ done: Int64, _ total: Int64?) -> Void
