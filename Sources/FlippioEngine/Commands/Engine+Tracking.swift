import Foundation

extension Engine {
    /// One line of `flippio status`.
    public struct TrackedStatus: Sendable, Codable, Equatable {
        public var path: String
        /// The sync state, or nil when the sidecar cannot be read (``lastError`` says why).
        public var state: SyncState?
        public var platform: Platform?
        public var device: String?
        public var app: String?
        public var remotePath: String?
        public var pulledAt: Date?
        public var lastPushAt: Date?
        public var lastError: Sidecar.RecordedError?
        public var nextRetryAt: Date?
        public var conflictCopy: String?
        /// Whether the local copy's content differs from what the device has, looked at now.
        public var localChanges: Bool
        /// Whether the local copy follows the app's changes (its sidecar's word, or config `follow`).
        public var follow: Bool?
    }

    /// Every tracked database and its state, read from the sidecars (so it shows the agent's live
    /// state while the agent runs). Unreadable sidecars are listed with their problem.
    ///
    /// "Local changes" are the file's, not the last push's: a copy written after its sidecar was
    /// last updated is snapshotted now and compared with the device's content.
    public func status() async throws -> [TrackedStatus] {
        var statuses: [TrackedStatus] = []
        for database in try workspace.trackedDatabases() {
            do {
                let sidecar = try SidecarStore.load(forDatabase: database)
                statuses.append(TrackedStatus(
                    path: database.path, state: sidecar.state, platform: sidecar.origin.platform,
                    device: sidecar.origin.deviceID, app: sidecar.origin.appID, remotePath: sidecar.origin.remotePath,
                    pulledAt: sidecar.pulledAt, lastPushAt: sidecar.pushHistory.last?.at,
                    lastError: sidecar.state == .clean ? nil : sidecar.lastError,
                    nextRetryAt: sidecar.nextRetryAt, conflictCopy: sidecar.conflictCopy,
                    localChanges: await hasLocalChanges(database, sidecar),
                    follow: Self.follows(sidecar, configuration)))
            } catch let error as FlippioError {
                statuses.append(TrackedStatus(path: database.path, state: nil, lastError: .init(error, at: Date()), localChanges: false))
            }
        }
        return statuses
    }

    /// Whether `sidecar`'s database follows its device: its own setting, else the configured
    /// default; iOS databases not when the iOS poll is off (`iosFollowMs` 0).
    static func follows(_ sidecar: Sidecar, _ configuration: FlippioConfiguration) -> Bool {
        if sidecar.origin.platform == .ios && configuration.iosFollowInterval == .zero { return false }
        return sidecar.follow ?? configuration.follow
    }

    /// What the running agent reports about itself (unwatched folders), or nil when none runs.
    public func agentStatus() -> AgentStatusFile? {
        AgentStatusFile.read(in: workspace)
    }

    private func hasLocalChanges(_ database: URL, _ sidecar: Sidecar) async -> Bool {
        let written = ["", "-wal", "-journal"].compactMap { suffix -> Date? in
            var info = stat()
            guard lstat(database.path + suffix, &info) == 0 else { return nil }
            return Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec) + TimeInterval(info.st_mtim.tv_nsec) / 1e9)
        }.max()
        // Not written since the sidecar recorded the local content: that record still holds.
        guard let written, written > sidecar.updatedAt else { return sidecar.localContentHash != sidecar.deviceContentHash }
        guard let snapshot = try? await pipeline.takeSnapshot(of: database) else { return true }
        defer { try? FileManager.default.removeItem(at: snapshot.url) }
        var current = sidecar
        guard (try? PushPipeline.migrateContentHashes(&current, snapshot: snapshot)) != nil,
              let content = try? snapshot.contentHash else { return true }
        return content != current.deviceContentHash
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
            results.append((database, await pipeline.push(database, mode: force ? .force : .normal)))
        }
        return results
    }

    /// How `resolve` ends a conflict.
    public enum Resolution: String, Sendable, Codable {
        /// Push the local copy over the device version that was saved as the conflict copy.
        case keepLocal = "keep-local"
        /// Replace the local copy with the device's current version (the local one is kept beside it).
        case keepDevice = "keep-device"
        /// Merge row by row; for rows changed on both sides, keep the local version.
        case mergePreferLocal = "merge-prefer-local"
        /// Merge row by row; for rows changed on both sides, keep the device's version.
        case mergePreferDevice = "merge-prefer-device"
    }

    /// Ends a conflict one way or the other. The other version stays on disk (`x.device-<time>.db`
    /// is kept after `--keep-local`; the replaced local copy is kept as `x.local-<time>.db` after
    /// `--keep-device`), so nothing is lost either way. A running agent adopts the new sidecar and
    /// goes on with the next edit.
    ///
    /// - throws: ``FlippioError/Code/notInConflict`` when the database is not in conflict (nothing
    ///   is pushed or pulled); ``FlippioError/Code/conflict`` when, for `--keep-local`, the app
    ///   changed its copy again since the conflict (a new conflict copy is saved); the failures of
    ///   the push or the pull.
    @discardableResult
    public func resolve(_ path: String, keeping resolution: Resolution) async throws -> PushPipeline.Outcome? {
        let database = try trackedDatabase(path)
        let sidecar = try SidecarStore.load(forDatabase: database)
        guard sidecar.state == .conflict else {
            throw FlippioError(.notInConflict,
                               "\(database.lastPathComponent) is not in conflict (it is \(sidecar.state.rawValue)); nothing was pushed or pulled.",
                               remedy: "`flippio push \(database.path)` pushes local edits; `resolve` only ends a conflict (see `flippio status`).",
                               context: ["path": database.path, "state": sidecar.state.rawValue])
        }
        switch resolution {
        case .keepLocal, .mergePreferLocal, .mergePreferDevice:
            let mode: PushPipeline.Mode = switch resolution {
            case .mergePreferLocal: .mergePrefer(.local)
            case .mergePreferDevice: .mergePrefer(.device)
            default: .keepLocal
            }
            let outcome = await pipeline.push(database, mode: mode)
            switch outcome {
            case .pushed, .unchanged:
                return outcome
            case .conflict(let copy):
                throw FlippioError(.conflict,
                                   "The app changed \(database.lastPathComponent) again since the conflict; nothing was overwritten. Its newest version is at \(copy.path).",
                                   remedy: "Look at it, then run `flippio resolve \(database.path) --keep-local` again, or `--keep-device`.",
                                   context: ["path": database.path, "deviceCopy": copy.path])
            case .failed(let error), .invalid(let error):
                throw error
            case .forgotten:
                throw FlippioError(.notTracked, "\(database.path) was forgotten meanwhile.", remedy: "Pull it again with `flippio pull`.")
            }
        case .keepDevice:
            let bridge = try await bridges.bridge(for: sidecar.origin.platform)
            let device = Device(platform: sidecar.origin.platform, id: sidecar.origin.deviceID, state: .ready, model: sidecar.origin.deviceModel)
            _ = try await pull(sidecar.origin.remoteDatabase, device: device, bridge: bridge, overwrite: true, progress: nil)
            return nil
        }
    }

    /// What `flippio conflicts` shows: the rows (or the schema change) behind a conflict.
    public struct ConflictReport: Sendable, Codable, Equatable {
        public var path: String
        public var state: SyncState
        /// The device's version, kept beside the local copy.
        public var deviceCopy: String?
        /// What conflicts; nil when the conflict was found without a merge (no common ancestor).
        public var detail: MergeConflict?
    }

    /// The conflict of a tracked database, row by row.
    ///
    /// - throws: ``FlippioError/Code/notInConflict`` when it is not in conflict.
    public func conflicts(_ path: String) throws -> ConflictReport {
        let database = try trackedDatabase(path)
        let sidecar = try SidecarStore.load(forDatabase: database)
        guard sidecar.state == .conflict else {
            throw FlippioError(.notInConflict, "\(database.lastPathComponent) is not in conflict (it is \(sidecar.state.rawValue)).",
                               remedy: "`flippio status` shows the state of every tracked database.", context: ["path": database.path])
        }
        return ConflictReport(path: database.path, state: sidecar.state, deviceCopy: sidecar.conflictCopy, detail: sidecar.conflictDetail)
    }

    /// Stops tracking a database: removes its sidecar (under its lock, so a push in flight ends
    /// first and cannot write it back), keeps the local copy.
    public func forget(_ path: String) async throws -> URL {
        let database = try trackedDatabase(path)
        let sidecarURL = Sidecar.url(forDatabase: database)
        guard let origin = try? SidecarStore.load(forDatabase: database).origin else {
            // Unreadable: no origin to lock by, and nothing can push it either.
            try FileManager.default.removeItem(at: sidecarURL)
            return database
        }
        let lock = try workspace.lock(for: origin.remoteDatabase)
        try await lock.acquire(timeout: .seconds(120))
        defer { lock.release() }
        try FileManager.default.removeItem(at: sidecarURL)
        BaseStore(workspace: workspace).remove(for: origin.remoteDatabase)
        return database
    }

    /// Turns following on or off for one tracked database (`flippio follow|unfollow FILE`): the
    /// sidecar records it, under the database's lock; a running agent adopts the sidecar and
    /// starts or stops watching the app's files.
    ///
    /// - returns: the database's local path.
    /// - throws: ``FlippioError/Code/notTracked`` when `path` is not a tracked database.
    public func setFollow(_ path: String, _ follow: Bool) async throws -> URL {
        let database = try trackedDatabase(path)
        let origin = try SidecarStore.load(forDatabase: database).origin
        let lock = try workspace.lock(for: origin.remoteDatabase)
        try await lock.acquire(timeout: .seconds(120))
        defer { lock.release() }
        try await parts.sidecars.update(forDatabase: database) { $0.follow = follow }
        return database
    }
}
