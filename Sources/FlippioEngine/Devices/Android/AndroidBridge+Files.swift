import Foundation

// MARK: - Finding, hashing and pulling databases

extension AndroidBridge {
    /// SHA-256 of zero bytes: an empty `-wal` or `-journal` counts as none.
    static let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// How deep below an app's folder the header scan looks (`databases/x` is depth 2).
    static let scanDepth = 8

    /// The `find` command that reads the first 16 bytes of every file under `root` that could be
    /// a database, in one device process tree.
    ///
    /// Room names databases without an extension (`databases/app_database`), so names tell
    /// nothing: a database is a file that starts with the SQLite header. Per candidate file,
    /// toybox `find` runs `head -c 16 FILE` and then, only when that succeeded, `printf '%s\0'
    /// FILE`, so each record is exactly 16 header bytes, the path, and a NUL byte: file names
    /// travel as `find` found them, never through a shell, and a NUL cannot occur in a path, so
    /// spaces, quotes, `$(...)` and even line breaks cannot split or inject a record (unsafe
    /// names are then refused by the parser). `-size +15c` keeps files shorter than a header
    /// out, so every record has its 16 bytes. All output comes from the `-exec` children
    /// (which exit before the next starts): `find`'s own stdout is block-buffered and would
    /// arrive out of order. The scan is bounded by ``scanDepth``, the listing byte limit and the
    /// command deadline; the companions (`-wal`, `-shm`, `-journal`) and flippio's own temp files
    /// are never read, and `cache/` and `code_cache/` (the system's throw-away folders, which can
    /// hold thousands of files: two processes each) are not entered.
    static func headerScan(_ root: String) -> String {
        let q = DeviceShellQuoting.quote
        return "find \(q(root)) -maxdepth \(scanDepth)"
            + " '(' -path \(q(root + "/cache")) -o -path \(q(root + "/code_cache")) ')' -prune -o"
            + " -type f -size +15c ! -name '*-wal' ! -name '*-shm' ! -name '*-journal' ! -name '*.flippio-tmp'"
            + " -exec head -c 16 {} ';' -exec printf '%s\\0' {} ';'"
    }

    /// The one device command that lists an app's databases: the scan of its private folder as
    /// the app (`prefix`: `run-as P ` or `su 0 `), then of its folder on shared storage as the
    /// shell user (complaints about a missing folder silenced). It exits with the private scan's
    /// status, whose errors (`run-as: package not debuggable`) matter.
    static func listingCommand(package: String, prefix: String) -> String {
        prefix + headerScan(privateRoot(package)) + "; s=$?; " + headerScan(sharedRoot(package)) + " 2>/dev/null; exit $s"
    }

    /// The app's private folder, where run-as and su look.
    static func privateRoot(_ package: String) -> String { "/data/data/\(package)" }
    /// The app's folder on shared storage.
    static func sharedRoot(_ package: String) -> String { "/sdcard/Android/data/\(package)" }

    /// The words that run a device command with `access` for `package` (`run-as P `, `su 0 `, or nothing).
    static func accessPrefix(_ access: RemoteDatabase.Access, package: String) throws -> String {
        switch access {
        case .runAs: "run-as \(package) "
        case .su: "su 0 "
        case .shell: ""
        case .container, .documents:
            throw FlippioError(.invalidArgument, "The \(access.rawValue) access is for iOS, not Android.",
                               remedy: "This is a bug in flippio; please report it with the log.")
        }
    }

    /// Checks that `database` names a safe path inside the area its access reaches; returns the
    /// access prefix and the error subject.
    func validate(_ database: RemoteDatabase) throws -> (prefix: String, subject: AndroidErrors.Subject) {
        let subject = AndroidErrors.Subject(serial: database.deviceID, package: database.appID, path: database.path)
        try Self.checkSerial(database.deviceID)
        try Self.checkPackage(database.appID, serial: database.deviceID)
        let prefix = try Self.accessPrefix(database.access, package: database.appID)
        let roots = database.access == .shell
            ? [Self.sharedRoot(database.appID), "/storage/emulated/0/Android/data/\(database.appID)"]
            : [Self.privateRoot(database.appID), "/data/user/0/\(database.appID)"]
        let name = database.fileName
        guard database.platform == .android, DeviceShellQuoting.isSafeDevicePath(database.path),
              roots.contains(where: { database.path.hasPrefix($0 + "/") }), AndroidOutputParser.isDatabaseName(name)
        else {
            throw FlippioError(.unsafePath, "'\(AndroidErrors.excerpt(database.path))' is not a database path inside the app \(database.appID)'s storage.",
                               remedy: "Pick a database from `flippio dbs \(database.deviceID) \(database.appID)`.",
                               context: subject.context)
        }
        return (prefix, subject)
    }

    // MARK: - Listing

    public func databases(deviceID: String, appID: String) async throws -> [RemoteDatabase] {
        try Self.checkSerial(deviceID)
        try Self.checkPackage(appID, serial: deviceID)
        let subject = AndroidErrors.Subject(serial: deviceID, package: appID)
        var access = RemoteDatabase.Access.runAs
        var result = try await shell(deviceID, Self.listingCommand(package: appID, prefix: "run-as \(appID) "),
                                     subject: subject, limit: Self.listingLimit)
        if let error = findFailure(result, subject) {
            guard error.code == .appNotDebuggable else { throw error }
            guard await hasSu(deviceID) else { throw error }
            logger.info("\(appID) on \(deviceID) is not debuggable; listing its databases through su")
            access = .su
            result = try await shell(deviceID, Self.listingCommand(package: appID, prefix: "su 0 "),
                                     subject: subject, limit: Self.listingLimit)
            if let error = findFailure(result, subject) { throw error }
        }
        let privateRoot = Self.privateRoot(appID), sharedRoot = Self.sharedRoot(appID)
        var listing = AndroidOutputParser.databasesByHeader(result.stdout, roots: [privateRoot, sharedRoot],
                                                           limit: Self.databaseLimit, truncated: result.stdoutTruncated)
        // Directory order is the file system's; a sorted listing reads and compares better.
        listing.paths.sort()
        for warning in listing.warnings { logger.warning("\(deviceID): \(warning)") }
        let privatePaths = listing.paths.filter { $0.hasPrefix(privateRoot + "/") }
        let sharedPaths = listing.paths.filter { $0.hasPrefix(sharedRoot + "/") }
        async let sharedSizes = sizes(of: sharedPaths, prefix: "", serial: deviceID)
        let privateSizes = await sizes(of: privatePaths, prefix: try Self.accessPrefix(access, package: appID), serial: deviceID)
        let sizes = privateSizes.merging(await sharedSizes) { first, _ in first }
        return privatePaths.map {
            RemoteDatabase(platform: .android, deviceID: deviceID, appID: appID, path: $0, access: access, size: sizes[$0])
        } + sharedPaths.map {
            RemoteDatabase(platform: .android, deviceID: deviceID, appID: appID, path: $0, access: .shell, size: sizes[$0])
        }
    }

    /// The error the private-storage scan reported, or nil when its output can be used. toybox
    /// `find` exits 1 when some folder could not be read but still lists the rest, and `head`
    /// complains about a file it may not read without failing the scan.
    private func findFailure(_ result: ProcessResult, _ subject: AndroidErrors.Subject) -> FlippioError? {
        let stdoutHead = String(decoding: result.stdout.prefix(512), as: UTF8.self)
        // Without adb's shell protocol, run-as's complaint arrives on stdout with status 0.
        if stdoutHead.hasPrefix("run-as:") || stdoutHead.contains("inaccessible or not found") {
            return AndroidErrors.recognise(stdoutHead, subject) ?? failure(result, ["shell", "find"], serial: subject.serial, subject)
        }
        let errors = result.stderrText
        // run-as's complaint decides even when the shared-storage scan after it ran.
        if errors.contains("run-as:"), let error = AndroidErrors.deviceLevel(errors, subject) { return error }
        if result.succeeded { return nil }
        if let error = AndroidErrors.adbLevel(errors, subject) { return error }
        let lines = errors.split(whereSeparator: \.isNewline)
        if lines.allSatisfy({ $0.hasPrefix("find:") || $0.hasPrefix("head:") }), !lines.isEmpty {
            // `find: /data/data/P: No such file or directory`: the app has no private folder (yet).
            return nil
        }
        return AndroidErrors.deviceLevel(errors, subject) ?? failure(result, ["shell", "find"], serial: subject.serial, subject)
    }

    /// Whether the device has a working `su` (rooted devices, emulator images with root).
    func hasSu(_ serial: String) async -> Bool {
        guard let result = try? await shell(serial, "su 0 id", subject: .init(serial: serial), limit: 4096) else { return false }
        return result.succeeded && result.stdoutText.contains("uid=0")
    }

    /// Sizes of `paths` by `stat -c '%s %n'`, best effort: empty when the call fails. Listings
    /// of more than 500 files are not sized (the command line would get too long).
    func sizes(of paths: [String], prefix: String, serial: String) async -> [String: Int64] {
        guard !paths.isEmpty, paths.count <= 500 else { return [:] }
        let command = prefix + "stat -c '%s %n' " + DeviceShellQuoting.join(paths)
        guard let result = try? await shell(serial, command, subject: .init(serial: serial)) else { return [:] }
        return AndroidOutputParser.sizes(result.stdoutText)
    }

    // MARK: - Fingerprint

    public func fingerprint(_ database: RemoteDatabase) async throws -> DeviceFingerprint {
        let (prefix, subject) = try validate(database)
        let main = database.path, wal = main + "-wal", journal = main + "-journal"
        // Hashing a large database takes a while: allow for its size when the listing told it.
        let timeout = database.size.map { max(timeouts.control, timeouts.transfer(bytes: $0)) } ?? timeouts.control
        let result = try await shell(database.deviceID, prefix + "sha256sum " + DeviceShellQuoting.join([main, wal, journal]),
                                     subject: subject, timeout: timeout)
        let errors = result.stderrText
        if !result.succeeded, let error = AndroidErrors.adbLevel(errors, subject) { throw error }
        if errors.contains("run-as:") || errors.contains("inaccessible or not found"),
           let error = AndroidErrors.deviceLevel(errors, subject) {
            throw error
        }
        let hashes = AndroidOutputParser.sha256sums(result.stdoutText)
        // Every complaint must be "No such file or directory" about one of the three files.
        for line in errors.split(whereSeparator: \.isNewline) where !line.isEmpty {
            let text = String(line)
            if text.lowercased().contains("no such file or directory"),
               [main, wal, journal].contains(where: { text.contains($0 + ":") || text.contains("'\($0)'") }) {
                continue
            }
            throw AndroidErrors.deviceLevel(text, subject) ?? failure(result, ["shell", "sha256sum"], serial: database.deviceID, subject)
        }
        guard let mainHash = hashes[main] else {
            if !result.succeeded, errors.contains(main + ":") { return .absent }
            throw AndroidErrors.recognise(result.stdoutText, subject)
                ?? FlippioError(.unexpectedOutput, "sha256sum printed no hash for \(main) on device \(database.deviceID).",
                                remedy: "Check the device with `adb -s \(database.deviceID) shell`.", context: subject.context)
        }
        func meaningful(_ hash: String?) -> String? { hash == Self.emptyHash ? nil : hash }
        return DeviceFingerprint(mainHash: mainHash, walHash: meaningful(hashes[wal]), journalHash: meaningful(hashes[journal]))
    }

    // MARK: - Pull

    /// How many times a pull starts over when the device's files change while it copies them.
    static let pullAttempts = 3

    public func pull(_ database: RemoteDatabase, into directory: URL, progress: TransferProgress?) async throws -> PulledFiles {
        let (prefix, subject) = try validate(database)
        let name = database.fileName
        let mainURL = directory.appendingPathComponent(name)
        let walURL = directory.appendingPathComponent(name + "-wal")
        let journalURL = directory.appendingPathComponent(name + "-journal")
        let shmURL = directory.appendingPathComponent(name + "-shm")

        for attempt in 1...Self.pullAttempts {
            var times = StepTimes()
            // Sizes (for the progress and the transfer's deadline) do not depend on the hashes:
            // one device round trip instead of two in a row.
            async let sizesOfAll = sizes(of: [database.path, database.path + "-wal", database.path + "-journal"],
                                         prefix: prefix, serial: database.deviceID)
            let fingerprint = try await fingerprint(database)
            times.lap("fingerprint")
            guard let mainHash = fingerprint.mainHash else {
                throw FlippioError(.noSuchFile, "\(database.path) does not exist on device \(database.deviceID).",
                                   remedy: "List the app's databases again with `flippio dbs \(database.deviceID) \(database.appID)`.",
                                   context: subject.context)
            }
            var remote: [(path: String, url: URL, hash: String)] = [(database.path, mainURL, mainHash)]
            if let hash = fingerprint.walHash { remote.append((database.path + "-wal", walURL, hash)) }
            if let hash = fingerprint.journalHash { remote.append((database.path + "-journal", journalURL, hash)) }
            let sizes = await sizesOfAll
            times.lap("sizes")
            let total: Int64? = remote.allSatisfy({ sizes[$0.path] != nil }) ? remote.reduce(0) { $0 + sizes[$1.path]! } : nil

            // Stale companions from an earlier pull would be replayed over the new main file.
            for url in [walURL, journalURL, shmURL] { try? FileManager.default.removeItem(at: url) }

            var done: Int64 = 0
            progress?(0, total)
            var consistent = true
            for file in remote {
                let size = sizes[file.path] ?? (file.path == database.path ? database.size : nil)
                // Hashed as it arrives: the file is not read a second time to check it.
                let received = try await cat(file.path, to: file.url, prefix: prefix, size: size, subject: .init(
                    serial: database.deviceID, package: database.appID, path: file.path))
                times.lap("cat and hash \(file.url.lastPathComponent)")
                if file.path == database.path {
                    try checkHeader(of: file.url, isExpected: received == file.hash, subject: subject)
                }
                guard received == file.hash else {
                    consistent = false
                    break
                }
                done += sizes[file.path] ?? 0
                progress?(done, total)
            }
            if consistent {
                logger.debug("pull \(database.path) from \(database.deviceID): \(times)")
                return PulledFiles(mainFile: mainURL, walFile: fingerprint.walHash == nil ? nil : walURL,
                                   journalFile: fingerprint.journalHash == nil ? nil : journalURL, fingerprint: fingerprint)
            }
            logger.info("\(database.path) on \(database.deviceID) changed while it was copied (attempt \(attempt)); copying again")
        }
        for url in [walURL, journalURL] { try? FileManager.default.removeItem(at: url) }
        throw FlippioError(.verificationFailed,
                           "\(database.path) on device \(database.deviceID) kept changing while it was copied.",
                           remedy: "Stop the app (or let it go idle) and pull again.", context: subject.context)
    }

    /// `adb exec-out [run-as P] cat FILE > local`; returns the SHA-256 (hex) of the bytes that
    /// arrived, computed while they arrived (``GrowingFileHasher``).
    func cat(_ path: String, to url: URL, prefix: String, size: Int64?, subject: AndroidErrors.Subject) async throws -> String {
        let arguments = ["exec-out", prefix + "cat " + DeviceShellQuoting.quote(path)]
        let hasher = try GrowingFileHasher(fileAt: url)
        let result: ProcessResult
        do {
            result = try await adb(arguments, serial: subject.serial, subject: subject,
                                   timeout: timeouts.transfer(bytes: size), output: .file(path: url.path))
        } catch {
            hasher.cancel()
            throw error
        }
        guard result.succeeded else {
            hasher.cancel()
            throw failure(result, arguments, serial: subject.serial, subject)
        }
        return try await hasher.finish()
    }

    /// Checks the SQLite header of a pulled main file. `exec-out` has no stderr: when run-as or
    /// cat failed, their complaint is what the file holds, and it is mapped to its error.
    ///
    /// - parameter isExpected: whether the file's hash is the one the device reported for it.
    func checkHeader(of url: URL, isExpected: Bool, subject: AndroidErrors.Subject) throws {
        let handle = try FileHandle(forReadingFrom: url)
        let head = try handle.read(upToCount: 4096) ?? Data()
        try? handle.close()
        if head.isEmpty || head.starts(with: Array("SQLite format 3\0".utf8)) { return }
        if isExpected {
            throw FlippioError(.notSQLite, "\(subject.file) on \(subject.device) is not an SQLite database.",
                               remedy: "Pick another file from `flippio dbs \(subject.serial ?? "DEVICE") \(subject.package ?? "APP")`.",
                               context: subject.context)
        }
        if let error = AndroidErrors.recognise(String(decoding: head, as: UTF8.self), subject) { throw error }
        // Otherwise the file changed under the copy: the hash check makes the caller start over.
    }
}
