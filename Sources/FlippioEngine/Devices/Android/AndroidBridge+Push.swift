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
        /// `DIR/.x.db.flippio-tmp-<attempt>-unchanged`: made before the swap's app-write guards,
        /// removed by one that finds the device changed (see ``swap(building:names:snapshotHash:to:expecting:prefix:subject:bytes:)``).
        var permit: String { sibling + "-unchanged" }
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
    ///    `chmod 660` (through su also `chown` to the target's owner and `restorecon`, so the app's
    ///    SELinux domain may open it), check the copy's SHA-256 (else remove it and exit 4: a damaged copy, retried),
    ///    check that `x.db`, `x.db-wal` and `x.db-journal` still have the hashes of `expecting`
    ///    (else remove the copy and exit 3: a conflict), remove `x.db-wal`, `x.db-shm`,
    ///    `x.db-journal`, then `mv -f` it over `x.db` (a rename: atomic);
    /// 4. verify that `x.db` is now the copy the script hashed: the same inode and size, printed
    ///    by `stat` before and after the `mv` in that script (no second whole-file hash);
    /// 5. remove the staging file (as the shell user, in the same call, after the script).
    ///
    /// Does not stop the app: the sync engine does that first (or lets it run, `--no-stop-app`),
    /// and the check in step 3 keeps a write the app made since the caller's check.
    ///
    /// The upload is ``upload(_:as:for:prefix:subject:progress:)``, steps 3 to 5 are
    /// ``swap(building:names:snapshotHash:to:expecting:prefix:subject:bytes:)``, shared with
    /// ``pushDelta(_:patch:snapshotHash:to:expecting:beforeSwap:)``.
    ///
    /// - throws: ``FlippioError/Code/conflict`` when the device's copy no longer matches `expecting`
    ///   (nothing was replaced); ``FlippioError/Code/verificationFailed`` when the copy's hash differs from
    ///   `snapshotHash` or the target is not that copy after the rename; the codes of `AndroidErrors`
    ///   for adb and device failures.
    public func push(snapshot: URL, snapshotHash: String, to database: RemoteDatabase, expecting: DeviceFingerprint,
                     progress: TransferProgress?) async throws -> DeviceFingerprint {
        let (prefix, subject) = try validate(database)
        let names = PushNames(serial: database.deviceID, path: database.path)
        let uploaded = try await upload(snapshot, as: names, for: database, prefix: prefix, subject: subject, progress: progress)
        // b. Copy beside the target; the swap checks it and renames it over the target.
        // su copies as root: hand the copy to the owner (and SELinux label) of the file it replaces.
        let copy = await makeCopy(of: names.staging, to: names.sibling, for: database)
        return try await swap(building: copy, names: names, snapshotHash: snapshotHash, to: database, expecting: expecting,
                              prefix: prefix, subject: subject, bytes: uploaded.size, hashesSideBySide: uploaded.shellRunsJobs)
    }

    /// Checks the snapshot (or patch) can be read, makes it readable by the app's user, removes the
    /// temp files of interrupted attempts and `adb push`es it to `names.staging`. Returns its size.
    ///
    /// - Important: `adb push` keeps the local file's permission bits, and the app's user must be
    ///   able to read the staging copy, so the file is made readable (`a+r`) before it is sent.
    func upload(_ file: URL, as names: PushNames, for database: RemoteDatabase, prefix: String,
                subject: AndroidErrors.Subject, progress: TransferProgress?) async throws -> Uploaded {
        let serial = database.deviceID
        let q = DeviceShellQuoting.quote
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        } catch {
            throw FlippioError(.noSuchFile, "The file \(file.path) to push to \(database.path) cannot be read.",
                               remedy: "This is a bug in flippio; please report it with the log.", context: subject.context)
        }
        let size = (attributes[.size] as? NSNumber)?.int64Value
        if let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue, mode & 0o444 != 0o444 {
            try? FileManager.default.setAttributes([.posixPermissions: mode | 0o444], ofItemAtPath: file.path)
        }

        // e. Temp files of interrupted attempts, in one call: the staging folder's as the shell
        // user (who owns them), then the app's folder's as the app (only it can read that folder,
        // so its glob is expanded by a shell running as the app). The app's shell also says
        // whether it runs `list &` and `wait` (``jobsProbe``), for the swap's hashes.
        let cleanup = try await shellChecked(serial, "rm -f " + names.stagingPattern + " && " + prefix + "sh -c "
                                                 + q("rm -f " + names.siblingPattern + " || exit 1; " + Self.jobsProbe),
                                             subject: subject)

        // a. Upload.
        progress?(0, size)
        let stagingSubject = AndroidErrors.Subject(serial: serial, package: database.appID, path: names.staging)
        let pushArguments = ["push", file.path, names.staging]
        let result = try await adb(pushArguments, serial: serial, subject: stagingSubject, timeout: timeouts.transfer(bytes: size))
        guard result.succeeded else { throw failure(result, pushArguments, serial: serial, stagingSubject) }
        progress?(size ?? 0, size)
        return Uploaded(size: size, shellRunsJobs: Self.runsJobs(cleanup.stdoutText))
    }

    /// What ``upload(_:as:for:prefix:subject:progress:)`` learned.
    struct Uploaded {
        /// The file's size in bytes, when known.
        var size: Int64?
        /// Whether the app's shell takes `list &` and `wait` (see ``jobsProbe``).
        var shellRunsJobs: Bool
    }

    /// Asks the shell whether it knows `&` and `wait`: mksh and toybox sh print the three lines
    /// (the first two in either order); a shell that takes `&` as `;` prints them too, and runs
    /// the swap's hashes one after the other with the same outcome. Anything else (an `&` passed
    /// as an argument, no `wait`) gets the swap with no job at all.
    static let jobsProbe = "echo flippio-job & echo flippio-main; wait && echo flippio-waited; true"

    /// Whether `output` of ``jobsProbe`` shows a shell that runs jobs.
    static func runsJobs(_ output: String) -> Bool {
        let lines = Set(output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) })
        return lines.isSuperset(of: ["flippio-job", "flippio-main", "flippio-waited"])
    }

    /// The commands that make `copy` of `database`: `cp`, `chmod 660`, and through su (root copies)
    /// `chown` to the target's owner, chained so that any failure exits 1; then, through su,
    /// `restorecon` on its own line. `run-as` copies are the app's already, label included.
    ///
    /// A root-made file keeps the label of its creator's context, which the app's SELinux domain
    /// may not open (EACCES on an enforcing device even with the right owner). toybox's `chcon` has
    /// no `--reference` (and the shell no `$(…)` to read the target's label into it), so the label
    /// comes from `restorecon`, which applies the label policy gives the path: the target's. It is
    /// not fatal: on images without a restorecon the copy keeps root's label, as before.
    func makeCopy(of source: String, to copy: String, for database: RemoteDatabase) async -> [String] {
        let q = DeviceShellQuoting.quote
        var chain = ["cp \(q(source)) \(q(copy))", "chmod 660 \(q(copy))"]
        guard database.access == .su else { return [chain.joined(separator: " && ") + " || exit 1"] }
        if let owner = await owner(of: database.path, serial: database.deviceID) { chain.append("chown \(owner) \(q(copy))") }
        return [chain.joined(separator: " && ") + " || exit 1", "restorecon \(q(copy)) 2>/dev/null || true"]
    }

    /// The device-side half every push shares, in ONE script as the app: `building` makes
    /// `names.sibling` (exit 1 when it cannot, 5 when a step of a delta failed); then the sibling's
    /// SHA-256 must be `snapshotHash` (else exit 4) and the device must still hold `expecting`
    /// (else the sibling is removed, exit 3), hashed side by side when the shell runs jobs
    /// (``checksSideBySide(names:path:snapshotHash:expecting:)``, else ``checksInTurn(names:path:snapshotHash:expecting:)``);
    /// the stale journals are removed and the sibling renamed over the target; then the result is
    /// verified and the staging file removed.
    ///
    /// The verification is a check that the target is now the very file the script hashed as the
    /// sibling a few commands before: the same inode (a rename keeps it) and `size` bytes, printed
    /// by `stat` before and after the `mv` in the same script. A `sha256sum` of the target after
    /// the rename would be a second whole pass over the file to learn the same (0.16 s at 200 MB).
    ///
    /// Whatever fails, the target is untouched and the sibling and staging files are removed.
    func swap(building: [String], names: PushNames, snapshotHash: String, to database: RemoteDatabase,
              expecting: DeviceFingerprint, prefix: String, subject: AndroidErrors.Subject, bytes size: Int64?,
              hashesSideBySide: Bool) async throws -> DeviceFingerprint {
        let serial = database.deviceID
        let path = database.path
        let q = DeviceShellQuoting.quote
        guard snapshotHash.wholeMatch(of: /[0-9a-fA-F]{64}/) != nil else {
            throw FlippioError(.invalidArgument, "'\(AndroidErrors.excerpt(snapshotHash))' is not a SHA-256 hash.",
                               remedy: "This is a bug in flippio; please report it with the log.", context: subject.context)
        }
        let checks = try hashesSideBySide ? Self.checksSideBySide(names: names, path: path, snapshotHash: snapshotHash, expecting: expecting)
            : Self.checksInTurn(names: names, path: path, snapshotHash: snapshotHash, expecting: expecting)
        // Drop the stale journals, rename over the target. All in one script with the checks, so
        // the window for an app write is a few commands.
        let rename = (hashesSideBySide ? "rm -f \(q(names.permit)); " : "")
            + "stat -c \(q(Self.renamedFormat("sibling"))) \(q(names.sibling)) && "
            + "rm -f \(q(path + "-wal")) \(q(path + "-shm")) \(q(path + "-journal")) && mv -f \(q(names.sibling)) \(q(path)) && "
            + "stat -c \(q(Self.renamedFormat("target"))) \(q(path))"
        let script = building + checks + [rename]
        // Copying and hashing on the device take time in proportion to the size, like a transfer.
        let onDevice = max(timeouts.control, timeouts.transfer(bytes: max(size ?? 0, 0)))
        // The staging file belongs to the shell user: removed by the shell that runs the app's
        // script, once that succeeded (`&&` keeps a failed script's exit status).
        let swapCommand = prefix + "sh -c " + q(script.joined(separator: "; ")) + " && rm -f " + q(names.staging)
        let swap = try await shell(serial, swapCommand, subject: subject, timeout: onDevice)
        // Both `stat` lines, matching: the rename happened, whatever the exit status says after it
        // (only the staging file's removal runs after the target's `stat`).
        let renamedCheck = Result { try Self.checkRenamed(swap.stdoutText, size: size, path: path, subject: subject) }
        let renamed = (try? renamedCheck.get()) != nil
        if !swap.succeeded && !renamed {
            // Nothing was renamed: remove what this attempt left (the next attempt's glob would too).
            _ = try? await shell(serial, prefix + "rm -f " + q(names.sibling) + " " + q(names.permit), subject: subject)
            _ = try? await shell(serial, "rm -f " + q(names.staging), subject: subject)
        }
        let deviceSide = AndroidErrors.adbLevel(swap.stderrText, subject) == nil
        if swap.termination == .exited(Self.conflictStatus), deviceSide {
            throw FlippioError(.conflict,
                               "The app changed \(database.fileName) on device \(serial) during the push; nothing was replaced.",
                               remedy: "Pull the device's version or resolve the conflict with `flippio resolve`; stop the app during pushes to avoid this.",
                               context: subject.context)
        }
        if swap.termination == .exited(Self.damagedCopyStatus), deviceSide {
            throw FlippioError(.verificationFailed,
                               "The copy of the snapshot beside \(path) on device \(serial) did not have the snapshot's hash; nothing was replaced.",
                               remedy: "flippio pushes again by itself; if this repeats, check the device's free space.",
                               context: subject.context)
        }
        if swap.termination == .exited(Self.deltaFailedStatus), deviceSide {
            if swap.stderrText.contains("inaccessible or not found") {
                throw FlippioError.deltaUnsupported("Device \(serial) has no `dd` or `truncate` to write a page delta with.")
            }
            throw FlippioError(.verificationFailed,
                               "Writing the page delta into the copy beside \(path) on device \(serial) failed (\(AndroidErrors.excerpt(swap.stderrText))); nothing was replaced.",
                               remedy: "flippio pushes the whole file instead; if this repeats, check the device's free space.",
                               context: subject.context)
        }
        guard swap.succeeded || renamed else { throw failure(swap, ["shell", swapCommand], serial: serial, subject) }

        // c. Verify.
        try renamedCheck.get()
        if !swap.succeeded {
            // d. Only the clean-up failed: the next push's removes the file.
            logger.warning("Could not remove \(names.staging) on \(serial): \(AndroidErrors.excerpt(swap.stderrText))")
        }
        return DeviceFingerprint(mainHash: snapshotHash.lowercased())
    }

    /// The swap's checks one after the other: the copy's SHA-256 must be `snapshotHash` (else it
    /// is removed, exit 4), then the device must still hold `expecting` (else the copy is removed,
    /// exit 3). Only commands every shell has: the script for a shell that fails ``jobsProbe``.
    static func checksInTurn(names: PushNames, path: String, snapshotHash: String, expecting: DeviceFingerprint) throws -> [String] {
        let q = DeviceShellQuoting.quote
        return ["sha256sum \(q(names.sibling)) | grep -q \(q("^" + snapshotHash.lowercased() + " ")) || rm -f \(q(names.sibling))",
                "test -e \(q(names.sibling)) || exit \(damagedCopyStatus)"]
            + (try unchangedChecks(path: path, expecting: expecting, otherwiseRemove: names.sibling))
            + ["test -e \(q(names.sibling)) || exit \(conflictStatus)"]
    }

    /// The same checks with the two whole-file hashes side by side: the target's in the background
    /// (the app-write guard), the copy's in the foreground (a difference exits 4), then `wait`.
    ///
    /// The guards say "changed" by removing ``PushNames/permit``, made before them, never by
    /// removing the copy, which the foreground may not have opened yet (a small target's guard ends
    /// first). Every signal is a removal or an exit, so a full disk cannot lose one (a permit that
    /// cannot be made exits 1). The guard's window is the one of ``checksInTurn(names:path:snapshotHash:expecting:)``:
    /// it ends with the copy's hash, right before the `mv`. (`a & b`, never `a &; b`: a `;` right
    /// after `&` is a syntax error in sh.)
    static func checksSideBySide(names: PushNames, path: String, snapshotHash: String, expecting: DeviceFingerprint) throws -> [String] {
        let q = DeviceShellQuoting.quote
        let guards = try unchangedChecks(path: path, expecting: expecting, otherwiseRemove: names.permit)
        return [": > \(q(names.permit)) || exit 1",
                guards[0] + " & "
                    + "sha256sum \(q(names.sibling)) | grep -q \(q("^" + snapshotHash.lowercased() + " ")) || exit \(damagedCopyStatus)",
                "wait"]
            + guards.dropFirst()
            + ["test -e \(q(names.permit)) || rm -f \(q(names.sibling))", "test -e \(q(names.permit)) || exit \(conflictStatus)"]
    }

    /// `stat -c` format of the lines the swap prints around its rename: `sibling|target INODE SIZE`.
    static func renamedFormat(_ which: String) -> String { "\(which) %i %s" }

    /// Checks the `stat` lines a swap prints around its rename: the target is the sibling (same
    /// inode) and has `size` bytes (when known).
    ///
    /// - throws: ``FlippioError/Code/verificationFailed``.
    static func checkRenamed(_ output: String, size: Int64?, path: String, subject: AndroidErrors.Subject) throws {
        var seen: [String: (inode: String, size: String)] = [:]
        for line in output.split(whereSeparator: \.isNewline) {
            let words = line.split(separator: " ").map(String.init)
            if words.count == 3, ["sibling", "target"].contains(words[0]) { seen[words[0]] = (words[1], words[2]) }
        }
        guard let sibling = seen["sibling"], let target = seen["target"], sibling == target,
              size.map({ String($0) == target.size }) ?? true
        else {
            throw FlippioError(.verificationFailed,
                               "After the push, \(path) on \(subject.device) is not the checked copy (stat: \(AndroidErrors.excerpt(output))).",
                               remedy: "flippio pushes again by itself; if this repeats, check the device's free space.",
                               context: subject.context)
        }
    }

    /// The exit status of the device-side script when the device's copy changed: a conflict.
    static let conflictStatus: Int32 = 3
    /// The exit status of the device-side script when the copy beside the target has the wrong hash.
    static let damagedCopyStatus: Int32 = 4
    /// The exit status of the device-side script when a `dd` or `truncate` of a delta failed.
    static let deltaFailedStatus: Int32 = 5

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
