import Foundation

/// The agent's whole state for one tracked database: `<db>.flippio.json` beside the local copy.
///
/// `status` reads sidecars, a restarted agent resumes from them, and every state transition of
/// the sync engine is written to one. The schema is versioned: a sidecar with a higher
/// ``schemaVersion`` than this build knows is reported (``FlippioError/Code/sidecarTooNew``),
/// never rewritten.
public struct Sidecar: Sendable, Codable, Equatable {
    /// The schema this build writes and the newest it reads.
    public static let currentSchemaVersion = 1
    /// At most this many entries are kept in ``pushHistory``.
    public static let pushHistoryLimit = 20
    /// The ``contentHashScheme`` this build writes.
    public static let currentContentHashScheme = 2
    /// The suffix added to the database file's name.
    public static let fileSuffix = ".flippio.json"

    /// Where the database came from.
    public struct Origin: Sendable, Codable, Equatable {
        public var platform: Platform
        public var deviceID: String
        public var deviceModel: String?
        public var appID: String
        public var remotePath: String
        public var access: RemoteDatabase.Access

        public init(platform: Platform, deviceID: String, deviceModel: String?, appID: String,
                    remotePath: String, access: RemoteDatabase.Access) {
            self.platform = platform
            self.deviceID = deviceID
            self.deviceModel = deviceModel
            self.appID = appID
            self.remotePath = remotePath
            self.access = access
        }

        /// The remote database this origin names.
        public var remoteDatabase: RemoteDatabase {
            RemoteDatabase(platform: platform, deviceID: deviceID, appID: appID, path: remotePath, access: access)
        }
    }

    /// The sync state vocabulary, shared with the state machine and `status`: see ``SyncState``.
    public typealias SyncState = FlippioEngine.SyncState

    /// A failure recorded for the user.
    public struct RecordedError: Sendable, Codable, Equatable {
        public var code: FlippioError.Code
        public var message: String
        public var remedy: String?
        public var at: Date

        public init(code: FlippioError.Code, message: String, remedy: String?, at: Date) {
            self.code = code
            self.message = message
            self.remedy = remedy
            self.at = at
        }

        public init(_ error: FlippioError, at: Date) {
            self.init(code: error.code, message: error.message, remedy: error.remedy, at: at)
        }
    }

    /// One completed push.
    public struct PushRecord: Sendable, Codable, Equatable {
        public var at: Date
        public var contentHash: String
        public var bytes: Int64
        public var durationMilliseconds: Int
        /// Tables whose row counts changed, with before → after, e.g. `["notes": "3 → 4"]`.
        public var changedTables: [String: String]
        /// Set when the push was a row-level merge of both sides' changes.
        public var merged: MergeCounts?
        /// Whether the app was started again after the push (`--restart-app`); nil when not asked.
        public var appRestarted: Bool?
        /// True when only the changed pages were sent (a page delta); nil in records of older versions.
        public var viaDelta: Bool?
        /// Bytes uploaded to the device: the patch for a delta, the whole file otherwise (``bytes``
        /// is the file's size either way). Nil in records of older versions.
        public var bytesSent: Int64?

        /// What a merged push brought together.
        public struct MergeCounts: Sendable, Codable, Equatable {
            /// Rows the app changed that were kept.
            public var rowsFromDevice: Int
            /// Rows the desktop changed that were pushed.
            public var rowsFromDesktop: Int
        }

        public init(at: Date, contentHash: String, bytes: Int64, durationMilliseconds: Int, changedTables: [String: String] = [:]) {
            self.at = at
            self.contentHash = contentHash
            self.bytes = bytes
            self.durationMilliseconds = durationMilliseconds
            self.changedTables = changedTables
        }
    }

    public var schemaVersion: Int
    public var origin: Origin
    public var pulledAt: Date
    /// The device's fingerprint when the database was pulled.
    public var fingerprintAtPull: DeviceFingerprint
    /// The device's fingerprint as of the last successful push (nil before the first push).
    public var fingerprintAtLastPush: DeviceFingerprint?
    /// SHA-256 of the consistent snapshot that the device holds (taken right after the pull, or
    /// the snapshot pushed last). A new snapshot with this hash needs no push.
    public var deviceContentHash: String
    /// SHA-256 of the local copy's last snapshot (may differ from ``deviceContentHash`` while dirty).
    public var localContentHash: String
    public var state: SyncState
    public var lastError: RecordedError?
    public var nextRetryAt: Date?
    /// When the current conflict was found, the local path of the device's version kept beside the copy.
    public var conflictCopy: String?
    /// The device's fingerprint when the current conflict was found: the version saved at
    /// ``conflictCopy``. `resolve --keep-local` replaces exactly this version, nothing newer.
    public var conflictFingerprint: DeviceFingerprint?
    /// The content identity of the base (``BaseStore``): the exact content last agreed with the
    /// device, the common ancestor of a three-way merge. Nil for sidecars of earlier versions.
    public var baseHash: String?
    /// Whether the app keeps its database in WAL mode (header bytes 18–19 of its file, as last
    /// seen): pushes keep that mode, so the app's next open changes nothing.
    public var deviceJournalWAL: Bool?
    /// The rows (or the schema change) behind the current conflict, when a merge found it.
    public var conflictDetail: MergeConflict?
    /// Set when the agent wrote the device's rows into the local copy after a merge: the next
    /// check compares the copy with the base by content (a page-level hash would see the rows
    /// it just wrote as an edit).
    public var localWrittenByMerge: Bool?
    /// How ``deviceContentHash`` and ``localContentHash`` were computed: nil for a plain SHA-256
    /// of the snapshot file (earlier versions, which included SQLite's version number), 2 for
    /// ``ContentHash/sha256(databaseAt:)``. The first push check migrates the old form.
    public var contentHashScheme: Int?
    /// The file hash (plain SHA-256 of the bytes sent) of a push that was started but whose result was not recorded yet. If the
    /// agent dies after the device's `mv` and before recording it, the next push finds the device
    /// holding exactly this and adopts it instead of reporting a conflict.
    public var pendingPushHash: String?
    /// Whether the local copy follows the app's changes on the device (`flippio follow|unfollow`,
    /// `pull --no-follow`); nil: the configured default (config `follow`, on unless turned off).
    public var follow: Bool?
    /// Row counts per table of the content the device holds, for "what changed" in the push log.
    public var lastRowCounts: [String: Int]?
    /// Newest last, at most ``pushHistoryLimit``.
    public var pushHistory: [PushRecord]
    public var updatedAt: Date

    public init(origin: Origin, pulledAt: Date, fingerprintAtPull: DeviceFingerprint, contentHash: String) {
        self.schemaVersion = Self.currentSchemaVersion
        self.origin = origin
        self.pulledAt = pulledAt
        self.fingerprintAtPull = fingerprintAtPull
        self.fingerprintAtLastPush = nil
        self.deviceContentHash = contentHash
        self.localContentHash = contentHash
        self.state = .clean
        self.lastError = nil
        self.nextRetryAt = nil
        self.conflictCopy = nil
        self.conflictFingerprint = nil
        self.contentHashScheme = Self.currentContentHashScheme
        self.pendingPushHash = nil
        self.lastRowCounts = nil
        self.pushHistory = []
        self.updatedAt = pulledAt
    }

    /// The fingerprint the device should have now if nobody else wrote to it.
    public var expectedDeviceFingerprint: DeviceFingerprint { fingerprintAtLastPush ?? fingerprintAtPull }

    /// Appends a push, keeping at most ``pushHistoryLimit`` entries.
    public mutating func recordPush(_ record: PushRecord) {
        pushHistory.append(record)
        if pushHistory.count > Self.pushHistoryLimit {
            pushHistory.removeFirst(pushHistory.count - Self.pushHistoryLimit)
        }
    }

    /// The sidecar path for a database file.
    public static func url(forDatabase database: URL) -> URL {
        database.deletingLastPathComponent().appendingPathComponent(database.lastPathComponent + fileSuffix)
    }

    /// The database file a sidecar path belongs to, or nil if `url` is not a sidecar path.
    public static func databaseURL(forSidecar url: URL) -> URL? {
        let name = url.lastPathComponent
        guard name.hasSuffix(fileSuffix), name.count > fileSuffix.count else { return nil }
        return url.deletingLastPathComponent().appendingPathComponent(String(name.dropLast(fileSuffix.count)))
    }
}
