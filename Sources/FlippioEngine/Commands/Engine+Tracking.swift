import Foundation

extension Engine {
    /// One line of `flippio status`.
    public struct TrackedStatus: Sendable, Codable, Equatable {
        public var path: String
        /// A sync state name (`clean`, `conflict`, ...) or `unreadable` when the sidecar cannot be read.
        public var state: String
        public var platform: Platform?
        public var device: String?
        public var app: String?
        public var remotePath: String?
        public var pulledAt: Date?
        public var lastPushAt: Date?
        public var lastError: Sidecar.RecordedError?
        public var nextRetryAt: Date?
        public var conflictCopy: String?
        /// Whether the local copy differs from what the device has, as of the last snapshot.
        public var localChanges: Bool
    }

    /// Every tracked database and its state, read from the sidecars (so it shows the agent's live
    /// state while the agent runs). Unreadable sidecars are listed with their problem.
    public func status() async throws -> [TrackedStatus] {
        try workspace.trackedDatabases().map { database in
            do {
                let sidecar = try SidecarStore.load(forDatabase: database)
                return TrackedStatus(
                    path: database.path, state: sidecar.state.rawValue, platform: sidecar.origin.platform,
                    device: sidecar.origin.deviceID, app: sidecar.origin.appID, remotePath: sidecar.origin.remotePath,
                    pulledAt: sidecar.pulledAt, lastPushAt: sidecar.pushHistory.last?.at, lastError: sidecar.lastError,
                    nextRetryAt: sidecar.nextRetryAt, conflictCopy: sidecar.conflictCopy,
                    localChanges: sidecar.localContentHash != sidecar.deviceContentHash)
            } catch let error as FlippioError {
                return TrackedStatus(path: database.path, state: "unreadable",
                                     lastError: .init(error, at: Date()), localChanges: false)
            }
        }
    }

    /// The tracked database a user-given path names (the copy itself or its sidecar).
    public func trackedDatabase(_ path: String) throws -> URL {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        if let database = Sidecar.databaseURL(forSidecar: url) { url = database }
        guard FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: url).path) else {
            throw FlippioError(.notTracked, "\(url.path) is not a database flippio tracks.",
                               remedy: "Run `flippio status` to list tracked databases, or `flippio pull` to start tracking one.")
        }
        return url
    }

    /// `flippio push`: pushes the given databases (every tracked one when empty) through the same
    /// pipeline as the agent, serialised with it by the per-database lock.
    public func push(_ paths: [String], force: Bool) async throws -> [(database: URL, outcome: PushPipeline.Outcome)] {
        let databases = try paths.isEmpty ? workspace.trackedDatabases() : paths.map(trackedDatabase)
        var results: [(URL, PushPipeline.Outcome)] = []
        for database in databases {
            results.append((database, await pipeline.push(database, force: force)))
        }
        return results
    }

    /// How `resolve` ends a conflict.
    public enum Resolution: String, Sendable, Codable {
        /// Push the local copy over the device's, although the app changed it.
        case keepLocal = "keep-local"
        /// Replace the local copy with the device's current version.
        case keepDevice = "keep-device"
    }

    /// Ends a conflict one way or the other. The other version stays on disk (`x.device-<time>.db`
    /// is kept after `--keep-local`; the replaced local copy is kept as `x.local-<time>.db` after
    /// `--keep-device`), so nothing is lost either way.
    public func resolve(_ path: String, keeping resolution: Resolution) async throws -> PushPipeline.Outcome? {
        let database = try trackedDatabase(path)
        let sidecar = try SidecarStore.load(forDatabase: database)
        switch resolution {
        case .keepLocal:
            let outcome = await pipeline.push(database, force: true, overrideConflict: true)
            if case .failed(let error) = outcome { throw error }
            if case .invalid(let error) = outcome { throw error }
            return outcome
        case .keepDevice:
            let bridge = try await bridges.bridge(for: sidecar.origin.platform)
            let backup = PushPipeline.siblingCopyURL(for: database, tag: "local", at: Date())
            try? FileManager.default.copyItem(at: database, to: backup)
            let device = Device(platform: sidecar.origin.platform, id: sidecar.origin.deviceID, state: .ready, model: sidecar.origin.deviceModel)
            _ = try await pull(sidecar.origin.remoteDatabase, device: device, bridge: bridge, overwrite: true, progress: nil)
            return nil
        }
    }

    /// Stops tracking a database: removes its sidecar, keeps the local copy.
    public func forget(_ path: String) async throws -> URL {
        let database = try trackedDatabase(path)
        try FileManager.default.removeItem(at: Sidecar.url(forDatabase: database))
        return database
    }
}
