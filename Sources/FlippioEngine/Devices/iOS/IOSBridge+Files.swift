import Foundation

extension IOSBridge {
    /// The folders searched for databases, in order.
    static let searchRoots = ["/Documents", "/Library"]
    /// Folders under `/Library` that hold caches and snapshots, not app data.
    static let skippedFolders: Set<String> = ["/Library/Caches", "/Library/SplashBoard", "/Library/Snapshots",
                                              "/Library/WebKit", "/Library/Cookies", "/Library/Saved Application State"]

    // MARK: - Finding databases

    /// SQLite databases in the app's container (`/Documents`, `/Library` and below, including
    /// `/Library/Application Support`), or in its shared Documents when the container is refused.
    ///
    /// A file is a database when its first 16 bytes are SQLite's header (`SQLite format 3\0`),
    /// whatever its name: Core Data's `*.sqlite`, `*.db`, files without an extension. Journals
    /// (`-wal`, `-shm`, `-journal`), flippio's own temp files, empty files and files that are
    /// plainly something else (images, plists...) are not opened at all. The ifuse backend reads
    /// only the 16 bytes; afcclient has no ranged read, so it copies a candidate whole and skips
    /// candidates above ``Limits/maxCopiedProbeBytes`` that do not have a database's extension.
    ///
    /// - throws: `iosContainerRefused` naming the fix when house_arrest vends neither.
    public func databases(deviceID: String, appID: String) async throws -> [RemoteDatabase] {
        try Self.validate(deviceID: deviceID)
        try Self.validate(appID: appID)
        let backend = files
        var access = RemoteDatabase.Access.container
        var roots = Self.searchRoots
        var first: [IOSOutputParser.AFCEntry]?
        do {
            first = try await backend.list(IOSAppFiles(deviceID: deviceID, appID: appID, access: .container), path: "/Documents")
        } catch let error as FlippioError where error.code == .iosContainerRefused {
            do {
                first = try await backend.list(IOSAppFiles(deviceID: deviceID, appID: appID, access: .documents), path: "/Documents")
                access = .documents
                roots = ["/Documents"]
            } catch let error as FlippioError where error.code == .iosContainerRefused {
                throw IOSErrors.containerRefused(appID: appID, deviceID: deviceID)
            } catch let error as FlippioError where error.code == .noSuchFile {
                access = .documents
                roots = []
            }
        } catch let error as FlippioError where error.code == .noSuchFile {
            first = nil
        }
        let app = IOSAppFiles(deviceID: deviceID, appID: appID, access: access)

        var found: [RemoteDatabase] = []
        var queue: [(path: String, depth: Int, entries: [IOSOutputParser.AFCEntry]?)] = roots.map { ($0, 1, nil) }
        if !queue.isEmpty, queue[0].path == "/Documents" { queue[0].entries = first ?? [] }
        var listed = 0, seen = 0, probed = 0
        while !queue.isEmpty, listed < limits.maxDirectories, seen < limits.maxEntries {
            let (path, depth, known) = queue.removeFirst()
            let entries: [IOSOutputParser.AFCEntry]
            if let known {
                entries = known
            } else {
                do {
                    entries = try await backend.list(app, path: path)
                } catch let error as FlippioError where error.code == .noSuchFile || error.code == .permissionDenied {
                    continue
                }
            }
            listed += 1
            for entry in entries {
                seen += 1
                if seen > limits.maxEntries { break }
                let child = path + "/" + entry.name
                switch entry.kind {
                case .directory where depth < limits.maxDepth && !Self.skippedFolders.contains(child):
                    queue.append((child, depth + 1, nil))
                case .file where IOSOutputParser.mayBeDatabase(entry.name, size: entry.size) && probed < limits.maxHeaderProbes:
                    if backend.kind == .afcclient, (entry.size ?? 0) > limits.maxCopiedProbeBytes,
                       !IOSOutputParser.isDatabaseName(entry.name) {
                        continue
                    }
                    probed += 1
                    guard try await isSQLite(backend, app, path: child, size: entry.size) else { continue }
                    found.append(RemoteDatabase(platform: .ios, deviceID: deviceID, appID: appID, path: child,
                                                access: access, size: entry.size))
                default:
                    break
                }
            }
        }
        return found.sorted { $0.path < $1.path }
    }

    /// Whether the file starts with SQLite's header. A file that vanished or cannot be read is
    /// not a database; a device that went away is an error.
    private func isSQLite(_ backend: any IOSFileBackend, _ app: IOSAppFiles, path: String, size: Int64?) async throws -> Bool {
        do {
            return try await backend.head(app, path: path, count: 16, size: size) == Self.sqliteMagic
        } catch let error as FlippioError where error.code == .noSuchFile || error.code == .permissionDenied {
            return false
        }
    }

    // MARK: - Pull and fingerprint

    /// Copies the database and its `-wal`/`-journal` (when the device has them, not empty) into
    /// `directory` under the remote file's name, replacing older local copies; checks the header.
    public func pull(_ database: RemoteDatabase, into directory: URL, progress: TransferProgress?) async throws -> PulledFiles {
        let (parent, name) = try Self.split(database)
        let staging = directory.appendingPathComponent(".flippio-pull-\(UUID().uuidString.prefix(8))", isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        } catch {
            throw FlippioError.workspaceWriteFailed(path: staging.path, errno: (error as NSError).code == 0 ? EIO : Int32(clamping: (error as NSError).code))
        }
        defer { try? FileManager.default.removeItem(at: staging) }
        let fetched = try await fetch(database, parent: parent, name: name, into: staging, progress: progress)
        guard let main = fetched.main else {
            throw FlippioError(.databaseMissing, "\(database.path) is not on the device \(database.deviceID) (app \(database.appID)).",
                               remedy: "Run the app once so it creates the database, or pick another with `flippio dbs`.")
        }
        try Self.checkHeader(main, remotePath: database.path)
        let fingerprint = try fetched.fingerprint()
        func place(_ staged: URL?, as localName: String) throws -> URL? {
            let destination = directory.appendingPathComponent(localName)
            guard let staged else {
                try? FileManager.default.removeItem(at: destination)  // a stale local -wal/-journal
                return nil
            }
            if rename(staged.path, destination.path) != 0 {
                throw FlippioError.workspaceWriteFailed(path: destination.path, errno: errno)
            }
            return destination
        }
        let mainFile = try place(main, as: name)!
        let wal = try place(fetched.wal, as: name + "-wal")
        let journal = try place(fetched.journal, as: name + "-journal")
        return PulledFiles(mainFile: mainFile, walFile: wal, journalFile: journal, fingerprint: fingerprint)
    }

    /// Hashes of the device's files right now: they are copied to a temp folder and hashed
    /// locally (iOS has no remote hash command).
    ///
    /// The first device call of every push: a device that is not connected is reported at once
    /// (`deviceNotFound`), so the push waits for it instead of for afcclient's timeout.
    public func fingerprint(_ database: RemoteDatabase) async throws -> DeviceFingerprint {
        let (parent, name) = try Self.split(database)
        try await requireConnected(database.deviceID)
        let folder = temporaryDirectory.appendingPathComponent("flippio-ios-\(UUID().uuidString.prefix(12))", isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        return try await fetch(database, parent: parent, name: name, into: folder, progress: nil).fingerprint()
    }

    struct Fetched {
        var main: URL?
        var wal: URL?
        var journal: URL?

        func fingerprint() throws -> DeviceFingerprint {
            func hash(_ url: URL?) throws -> String? {
                guard let url else { return nil }
                return try ContentHash.sha256(fileAt: url)
            }
            return DeviceFingerprint(mainHash: try hash(main), walHash: try hash(wal), journalHash: try hash(journal))
        }
    }

    /// Copies `name`, `name-wal` and `name-journal` from `parent` into `folder` (which must not
    /// hold them yet: afcclient does not overwrite without `-f`). Absent or empty side files are nil.
    func fetch(_ database: RemoteDatabase, parent: String, name: String, into folder: URL,
               progress: TransferProgress?) async throws -> Fetched {
        let backend = files
        let app = IOSAppFiles(database)
        let listing: [IOSOutputParser.AFCEntry]
        do {
            listing = try await backend.list(app, path: parent)
        } catch let error as FlippioError where error.code == .noSuchFile {
            return Fetched()
        }
        func entry(_ fileName: String) -> IOSOutputParser.AFCEntry? {
            listing.first { $0.name == fileName && $0.kind == .file }
        }
        guard let mainEntry = entry(name) else { return Fetched() }
        let wal = entry(name + "-wal").flatMap { ($0.size ?? 1) > 0 ? $0 : nil }
        let journal = entry(name + "-journal").flatMap { ($0.size ?? 1) > 0 ? $0 : nil }
        let total = [mainEntry, wal, journal].compactMap { $0?.size }.reduce(0, +)
        var done: Int64 = 0
        func get(_ fileName: String, size: Int64?) async throws -> URL? {
            let local = folder.appendingPathComponent(fileName)
            do {
                try await backend.download(app, path: parent + "/" + fileName, to: local, size: size)
            } catch let error as FlippioError where error.code == .noSuchFile {
                return nil  // gone since the listing (a checkpoint removed the -wal)
            }
            done += size ?? 0
            progress?(done, total)
            return local
        }
        var fetched = Fetched()
        fetched.main = try await get(name, size: mainEntry.size)
        if fetched.main == nil { return Fetched() }
        if let wal { fetched.wal = try await get(wal.name, size: wal.size) }
        if let journal { fetched.journal = try await get(journal.name, size: journal.size) }
        for side in [\Fetched.wal, \Fetched.journal] {
            if let url = fetched[keyPath: side], (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) == 0 {
                fetched[keyPath: side] = nil  // an empty -wal counts as none
            }
        }
        return fetched
    }

    // MARK: - Push

    /// Replaces the device's database with `snapshot`: write it to `NAME.flippio-tmp-<attempt>` beside the
    /// database and check it arrived whole (afcclient: its size; ifuse: `fsync`, then its SHA-256
    /// read back), remove the stale `-wal`/`-shm`/`-journal`, rename the temp file over the
    /// database, then copy it back and check its SHA-256 against `snapshotHash`.
    ///
    /// The stale side files go before the rename: at every moment the device holds the old
    /// database (at worst without its uncheckpointed `-wal`) or the new one, never the new file
    /// beside an old `-wal` that SQLite would replay over it. Temp files of interrupted attempts
    /// (each attempt has a name of its own) go with them.
    ///
    /// Right before removing the side files and renaming, it fetches the device's fingerprint again:
    /// when it no longer matches `expecting` (the app wrote since the caller's check), it removes
    /// the temp file and replaces nothing. Neither AFC nor a FUSE mount of it has a compare-and-swap,
    /// so a write between that check and the rename is still possible; the window is a few calls.
    ///
    /// - throws: `conflict` when the device's copy no longer matches `expecting`;
    ///   `verificationFailed` when the upload came out short or the device's copy differs.
    public func push(snapshot: URL, snapshotHash: String, to database: RemoteDatabase, expecting: DeviceFingerprint,
                     progress: TransferProgress?) async throws -> DeviceFingerprint {
        let (parent, name) = try Self.split(database)
        let localHash = try ContentHash.sha256(fileAt: snapshot)
        guard localHash == snapshotHash else {
            throw FlippioError(.invalidArgument, "The snapshot \(snapshot.path) does not have the hash it was pushed with.",
                               remedy: "This is a bug in flippio; please report it with the log.")
        }
        let size = (try FileManager.default.attributesOfItem(atPath: snapshot.path)[.size] as? NSNumber)?.int64Value ?? 0
        let backend = files
        let app = IOSAppFiles(database)
        let tempPrefix = name + Self.pushTempSuffix
        let tempPath = parent + "/" + tempPrefix + "-" + String(UInt32.random(in: .min ... .max), radix: 16)

        do {
            try await backend.upload(snapshot, size: size, hash: snapshotHash, to: app, path: tempPath)
            progress?(size, size)
            guard try await fingerprint(database) == expecting else {
                throw FlippioError(.conflict,
                                   "The app changed \(name) on \(database.deviceID) during the push; nothing was replaced.",
                                   remedy: "Pull the device's version or resolve the conflict with `flippio resolve`; stop the app during pushes to avoid this.",
                                   context: ["path": database.path])
            }
            let listing = try await backend.list(app, path: parent)
            let stale = ["-wal", "-shm", "-journal"].map { name + $0 }
                .filter { sideName in listing.contains { $0.name == sideName } }
            let leftovers = listing.map(\.name)
                .filter { $0.hasPrefix(tempPrefix) && parent + "/" + $0 != tempPath }
            try await backend.remove(app, paths: (stale + leftovers).map { parent + "/" + $0 })
            try await backend.move(app, from: tempPath, to: database.path)
        } catch {
            try? await backend.remove(app, paths: [tempPath])
            throw error
        }
        let after = try await fingerprint(database)
        guard after.mainHash == snapshotHash else {
            throw FlippioError(.verificationFailed,
                               "After the push, \(database.path) on \(database.deviceID) does not match what was sent.",
                               remedy: "flippio pushes again; if the app is running, send it to the background.",
                               context: ["path": database.path, "expected": snapshotHash, "found": after.mainHash ?? "none"])
        }
        return after
    }

    /// What follows the database's name in the temp files a push writes beside it (then `-<attempt>`).
    static let pushTempSuffix = ".flippio-tmp"

    // MARK: - Checks

    /// The database's folder and file name, after checking that the path stays inside the app's
    /// reach (absolute, normalized, under `/Documents` or `/Library`).
    static func split(_ database: RemoteDatabase) throws -> (parent: String, name: String) {
        try validate(deviceID: database.deviceID)
        try validate(appID: database.appID)
        let path = database.path
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        let unsafe = FlippioError(.unsafePath, "\"\(path.prefix(200))\" is not a path flippio uses on iOS.",
                                  remedy: "Use a path that `flippio dbs` lists.", context: ["path": path])
        guard database.platform == .ios, path.hasPrefix("/"), parts.count >= 2,
              parts.allSatisfy({ IOSOutputParser.isSafeName(String($0)) }) else { throw unsafe }
        let top = parts.first!
        guard top == "Documents" || (top == "Library" && database.access == .container) else { throw unsafe }
        return ("/" + parts.dropLast().joined(separator: "/"), String(parts.last!))
    }

    static let sqliteMagic = Data("SQLite format 3\0".utf8)

    /// `path`'s folder and name (`/Documents/a.db` gives `/Documents` and `a.db`).
    static func splitPath(_ path: String) -> (parent: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("/", path) }
        return (slash == path.startIndex ? "/" : String(path[..<slash]), String(path[path.index(after: slash)...]))
    }

    /// Throws `notSQLite` unless the file starts with the SQLite header (an empty file is an
    /// empty database to SQLite and passes).
    static func checkHeader(_ file: URL, remotePath: String) throws {
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        let head = try handle.read(upToCount: 16) ?? Data()
        guard head.isEmpty || head == sqliteMagic else {
            throw FlippioError(.notSQLite, "\(remotePath) is not a SQLite database (its header is wrong).",
                               remedy: "Pick a database that `flippio dbs` lists; this file may be encrypted or another format.",
                               context: ["path": remotePath])
        }
    }
}
