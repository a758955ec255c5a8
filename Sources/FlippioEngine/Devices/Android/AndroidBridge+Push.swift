import Crypto
import Foundation

// MARK: - Push

extension AndroidBridge {
    /// The temp names of one push attempt to `database`: unique per attempt, so two pushes never
    /// write the same file, and recognisable, so an attempt removes what interrupted ones left.
    struct PushNames: Sendable, Equatable {
        /// `/data/local/tmp/flippio-<16 hex>-<attempt>.db`, where `adb push` writes.
        var staging: String
        /// `DIR/.x.db.flippio-tmp-<attempt>`, beside the target, renamed over it.
        var sibling: String
        /// Shell words (a quoted prefix and `*`) that match the temp files of every attempt.
        var stagingPattern: String
        var siblingPattern: String

        init(serial: String, path: String, attempt: String = String(UInt32.random(in: .min ... .max), radix: 16)) {
            let digest = SHA256.hash(data: Data((serial + path).utf8))
            let id = digest.prefix(8).map { String(format: "%02x", $0) }.joined()
            let slash = path.lastIndex(of: "/")!
            let directory = String(path[..<slash])
            let name = String(path[path.index(after: slash)...])
            let stagingPrefix = "/data/local/tmp/flippio-\(id)-"
            let siblingPrefix = "\(directory)/.\(name).flippio-tmp-"
            staging = stagingPrefix + attempt + ".db"
            sibling = siblingPrefix + attempt
            stagingPattern = DeviceShellQuoting.quote(stagingPrefix) + "*"
            siblingPattern = DeviceShellQuoting.quote(siblingPrefix) + "*"
        }
    }

    /// Replaces the device's database with `snapshot` (the contract's steps e, a, b, c, d):
    ///
    /// 1. remove temp files left by interrupted pushes (`DIR/.x.db.flippio-tmp-*`, as the app, and
    ///    `/data/local/tmp/flippio-<id>-*`); this attempt's names are its own (``PushNames``);
    /// 2. `adb push` the snapshot to `/data/local/tmp/flippio-<id>-<attempt>.db`;
    /// 3. in ONE device-side script, as the app: copy it to `DIR/.x.db.flippio-tmp-<attempt>`,
    ///    `chmod 660`, check the copy's SHA-256 (else remove it and exit 4: a damaged copy, retried),
    ///    check that `x.db`, `x.db-wal` and `x.db-journal` still have the hashes of `expecting`
    ///    (else remove the copy and exit 3: a conflict), remove `x.db-wal`, `x.db-shm`,
    ///    `x.db-journal`, then `mv -f` it over `x.db` (a rename: atomic);
    /// 4. verify that the device's `sha256sum x.db` equals `snapshotHash`;
    /// 5. remove the staging file.
    ///
    /// Does not stop the app: the sync engine does that first (or lets it run, `--no-stop-app`),
    /// and the check in step 3 keeps a write the app made since the caller's check.
    ///
    /// - Important: `adb push` keeps the local file's permission bits, and the app's user must be
    ///   able to read the staging copy, so the snapshot is made readable (`a+r`) before it is sent.
    /// - throws: ``FlippioError/Code/conflict`` when the device's copy no longer matches `expecting`
    ///   (nothing was replaced); ``FlippioError/Code/verificationFailed`` when the device's hash differs from
    ///   `snapshotHash`; the codes of `AndroidErrors` for adb and device failures.
    public func push(snapshot: URL, snapshotHash: String, to database: RemoteDatabase, expecting: DeviceFingerprint,
                     progress: TransferProgress?) async throws -> DeviceFingerprint {
        let (prefix, subject) = try validate(database)
        let serial = database.deviceID
        let names = PushNames(serial: serial, path: database.path)
        let guards = try Self.unchangedChecks(path: database.path, expecting: expecting, otherwiseRemove: names.sibling)
        let path = database.path
        let q = DeviceShellQuoting.quote

        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: snapshot.path)
        } catch {
            throw FlippioError(.noSuchFile, "The snapshot \(snapshot.path) to push to \(path) cannot be read.",
                               remedy: "This is a bug in flippio; please report it with the log.", context: subject.context)
        }
        let size = (attributes[.size] as? NSNumber)?.int64Value
        if let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue, mode & 0o444 != 0o444 {
            try? FileManager.default.setAttributes([.posixPermissions: mode | 0o444], ofItemAtPath: snapshot.path)
        }

        // e. Temp files of interrupted attempts. The app's folder is only readable as the app, so
        // its glob is expanded by a shell running as the app, not by the shell user's.
        try await shellChecked(serial, prefix + "sh -c " + q("rm -f " + names.siblingPattern), subject: subject)
        try await shellChecked(serial, "rm -f " + names.stagingPattern, subject: subject)

        // a. Upload.
        progress?(0, size)
        let pushArguments = ["push", snapshot.path, names.staging]
        let upload = try await adb(pushArguments, serial: serial, subject: .init(serial: serial, package: database.appID, path: names.staging),
                                   timeout: timeouts.transfer(bytes: size))
        guard upload.succeeded else {
            throw failure(upload, pushArguments, serial: serial, .init(serial: serial, package: database.appID, path: names.staging))
        }
        progress?(size ?? 0, size)

        // b. Copy beside the target; check that the app has not written since the caller's check
        // (a failed check removes the copy, and a missing copy exits 3); drop the stale journals,
        // rename over the target. All in one script, so the window for a write is a few commands.
        // su copies as root: hand the copy to the owner of the file it replaces.
        var copy = ["cp \(q(names.staging)) \(q(names.sibling))", "chmod 660 \(q(names.sibling))"]
        if database.access == .su, let owner = await owner(of: path, serial: serial) {
            copy.append("chown \(owner) \(q(names.sibling))")
        }
        guard snapshotHash.wholeMatch(of: /[0-9a-fA-F]{64}/) != nil else {
            throw FlippioError(.invalidArgument, "'\(AndroidErrors.excerpt(snapshotHash))' is not a SHA-256 hash.",
                               remedy: "This is a bug in flippio; please report it with the log.", context: subject.context)
        }
        // The copy beside the target is what will become the database: check it before the rename.
        let copyCheck = ["sha256sum \(q(names.sibling)) | grep -q \(q("^" + snapshotHash.lowercased() + " ")) || rm -f \(q(names.sibling))",
                         "test -e \(q(names.sibling)) || exit \(Self.damagedCopyStatus)"]
        let script = [copy.joined(separator: " && ") + " || exit 1"] + copyCheck
            + guards
            + ["test -e \(q(names.sibling)) || exit \(Self.conflictStatus)",
               "rm -f \(q(path + "-wal")) \(q(path + "-shm")) \(q(path + "-journal")) && mv -f \(q(names.sibling)) \(q(path))"]
        // Copying and hashing on the device take time in proportion to the size, like a transfer.
        let onDevice = max(timeouts.control, timeouts.transfer(bytes: size))
        let swapCommand = prefix + "sh -c " + q(script.joined(separator: "; "))
        let swap = try await shell(serial, swapCommand, subject: subject, timeout: onDevice)
        if swap.termination == .exited(Self.conflictStatus), AndroidErrors.adbLevel(swap.stderrText, subject) == nil {
            _ = try? await shell(serial, "rm -f " + q(names.staging), subject: subject)
            throw FlippioError(.conflict,
                               "The app changed \(database.fileName) on device \(serial) during the push; nothing was replaced.",
                               remedy: "Pull the device's version or resolve the conflict with `flippio resolve`; stop the app during pushes to avoid this.",
                               context: subject.context)
        }
        if swap.termination == .exited(Self.damagedCopyStatus), AndroidErrors.adbLevel(swap.stderrText, subject) == nil {
            _ = try? await shell(serial, "rm -f " + q(names.staging), subject: subject)
            throw FlippioError(.verificationFailed,
                               "The copy of the snapshot beside \(path) on device \(serial) did not have the snapshot's hash; nothing was replaced.",
                               remedy: "flippio pushes again by itself; if this repeats, check the device's free space.",
                               context: subject.context)
        }
        guard swap.succeeded else { throw failure(swap, ["shell", swapCommand], serial: serial, subject) }

        // c. Verify.
        let verify = try await shellChecked(serial, prefix + "sha256sum " + q(path), subject: subject, timeout: onDevice)
        let deviceHash = AndroidOutputParser.sha256sums(verify.stdoutText)[path]
        guard deviceHash == snapshotHash.lowercased() else {
            throw FlippioError(.verificationFailed,
                               "After the push, \(path) on device \(serial) has hash \(deviceHash ?? "none") instead of \(snapshotHash).",
                               remedy: "flippio pushes again by itself; if this repeats, check the device's free space.",
                               context: subject.context.merging(["expected": snapshotHash, "actual": deviceHash ?? ""]) { $1 })
        }

        // d. Clean up; a failure here leaves only a temp file that the next push overwrites.
        do {
            try await shellChecked(serial, "rm -f " + q(names.staging), subject: subject)
        } catch {
            logger.warning("Could not remove \(names.staging) on \(serial): \(error)")
        }
        return DeviceFingerprint(mainHash: deviceHash)
    }

    /// The exit status of the device-side script when the device's copy changed: a conflict.
    static let conflictStatus: Int32 = 3
    /// The exit status of the device-side script when the copy beside the target has the wrong hash.
    static let damagedCopyStatus: Int32 = 4

    /// Shell commands that remove `otherwiseRemove` unless `path`, `path-wal` and `path-journal`
    /// still have the hashes of `expecting` (an empty side file counts as none, as in the fingerprint).
    ///
    /// - throws: `invalidArgument` when a hash is not 64 lowercase hex digits (it goes into a shell string).
    static func unchangedChecks(path: String, expecting: DeviceFingerprint, otherwiseRemove temp: String) throws -> [String] {
        let q = DeviceShellQuoting.quote
        let remove = "rm -f " + q(temp)
        func check(_ file: String, _ hash: String?, mustExist: Bool) throws -> String {
            guard let hash else {
                return "test \(mustExist ? "-e" : "-s") \(q(file)) && \(remove)"
            }
            guard hash.wholeMatch(of: /[0-9a-f]{64}/) != nil else {
                throw FlippioError(.invalidArgument, "'\(AndroidErrors.excerpt(hash))' is not a SHA-256 hash.",
                                   remedy: "This is a bug in flippio; please report it with the log.", context: ["path": path])
            }
            return "sha256sum \(q(file)) | grep -q \(q("^" + hash + " ")) || \(remove)"
        }
        return [try check(path, expecting.mainHash, mustExist: true),
                try check(path + "-wal", expecting.walHash, mustExist: false),
                try check(path + "-journal", expecting.journalHash, mustExist: false)]
    }

    /// `uid:gid` of `path` (or of its folder when it does not exist), through su; nil when unknown.
    private func owner(of path: String, serial: String) async -> String? {
        let folder = String(path[..<path.lastIndex(of: "/")!])
        for candidate in [path, folder] {
            guard let result = try? await shell(serial, "su 0 stat -c %u:%g " + DeviceShellQuoting.quote(candidate),
                                                subject: .init(serial: serial)),
                  result.succeeded else { continue }
            let owner = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            if owner.wholeMatch(of: /[0-9]+:[0-9]+/) != nil { return owner }
        }
        return nil
    }
}
