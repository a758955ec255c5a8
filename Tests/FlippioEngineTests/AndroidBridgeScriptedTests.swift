import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// A ``ProcessRunning`` that answers from a script and records every command: checks the exact
/// commands the bridge sends and how it reads the answers, without a device.
actor ScriptedRunner: ProcessRunning {
    typealias Reply = @Sendable (ProcessCommand) -> (status: Int32, stdout: String, stderr: String)
    private(set) var commands: [ProcessCommand] = []
    private let reply: Reply

    init(_ reply: @escaping Reply) { self.reply = reply }

    func run(_ command: ProcessCommand) async throws -> ProcessResult {
        commands.append(command)
        let (status, stdout, stderr) = reply(command)
        var captured = Data(stdout.utf8)
        if case .file(let path) = command.output {
            FileManager.default.createFile(atPath: path, contents: captured)
            captured = Data()
        }
        return ProcessResult(termination: .exited(status), stdout: captured, stderr: Data(stderr.utf8),
                             duration: .milliseconds(1), timedOut: false)
    }

    /// The argument after `shell`/`exec-out`, or the arguments joined.
    var deviceCommands: [String] {
        commands.map { $0.arguments.count >= 4 ? $0.arguments[3...].joined(separator: " ") : $0.arguments.joined(separator: " ") }
    }
}

@Suite("Android bridge commands (scripted adb)")
struct AndroidBridgeScriptedTests {
    static let pkg = "com.example.notes"
    static let path = "/data/data/com.example.notes/databases/notes.db"
    static let db = RemoteDatabase(platform: .android, deviceID: "emulator-5554", appID: pkg, path: path, access: .runAs)

    func bridge(_ runner: ScriptedRunner) -> AndroidBridge {
        AndroidBridge(adbPath: "/usr/bin/adb", runner: runner)
    }

    /// A whole-file push of a small snapshot through scripted adb (the stale-temp clean-up answers
    /// `cleanupOutput`); what it returned and every adb call it made.
    func scriptedPush(cleanupOutput: String = "") async throws
        -> (fingerprint: DeviceFingerprint, commands: [[String]], snapshot: URL, hash: String, old: String) {
        let dir = try TemporaryDirectory()
        let snapshot = dir.child("snap.db")
        try Data("SQLite format 3\0rest".utf8).write(to: snapshot)
        let hash = try ContentHash.sha256(fileAt: snapshot)
        let size = try Data(contentsOf: snapshot).count
        let runner = ScriptedRunner { command in
            let last = command.arguments.last ?? ""
            if last.contains("flippio-waited") { return (0, cleanupOutput, "") }
            if last.contains("mv -f") { return (0, "sibling 4242 \(size)\ntarget 4242 \(size)\n", "") }
            return (0, "", "")
        }
        let old = String(repeating: "b", count: 64)
        let fingerprint = try await bridge(runner).push(snapshot: snapshot, snapshotHash: hash, to: Self.db,
                                                        expecting: DeviceFingerprint(mainHash: old), progress: nil)
        return (fingerprint, await runner.commands.map(\.arguments), snapshot, hash, old)
    }

    @Test func push_runsContractStepsInOrder() async throws {
        let (fingerprint, commands, snapshot, hash, old) = try await scriptedPush()
        #expect(fingerprint == DeviceFingerprint(mainHash: hash))

        let names = try Self.names(of: commands)
        #expect(names.staging.wholeMatch(of: /\/data\/local\/tmp\/flippio-[0-9a-f]{16}-[0-9a-f]+\.db/) != nil)
        #expect(names.sibling.hasPrefix("/data/data/com.example.notes/databases/.notes.db.flippio-tmp-"))
        let sibling = names.sibling, staging = names.staging, p = Self.path
        #expect(commands == [
            ["-s", "emulator-5554", "shell", "rm -f " + names.stagingPattern + " && run-as com.example.notes sh -c "
                + DeviceShellQuoting.quote("rm -f /data/data/com.example.notes/databases/.notes.db.flippio-tmp-* || exit 1; "
                                           + AndroidBridge.jobsProbe)],
            ["-s", "emulator-5554", "push", snapshot.path, staging],
            ["-s", "emulator-5554", "shell", "run-as com.example.notes sh -c " + DeviceShellQuoting.quote(
                "cp \(staging) \(sibling) && chmod 660 \(sibling) || exit 1; "
                + "sha256sum \(sibling) | grep -q '^\(hash) ' || rm -f \(sibling); test -e \(sibling) || exit 4; "
                + "sha256sum \(p) | grep -q '^\(old) ' || rm -f \(sibling); "
                + "test -s \(p)-wal && rm -f \(sibling); test -s \(p)-journal && rm -f \(sibling); "
                + "test -e \(sibling) || exit 3; "
                + "stat -c 'sibling %i %s' \(sibling) && rm -f \(p)-wal \(p)-shm \(p)-journal && mv -f \(sibling) \(p) && "
                + "stat -c 'target %i %s' \(p)") + " && rm -f \(staging)"],
        ])
        #expect(!commands.contains { $0.last?.hasPrefix("run-as com.example.notes sha256sum") == true },
                "no second whole-file hash after the rename: the script hashed the copy it renamed")
    }

    /// A shell that runs jobs (its answer to the probe in the clean-up call) gets the two hashes
    /// side by side: the target's guard in the background, removing a permit rather than the copy.
    @Test func push_aShellThatRunsJobs_hashesTheCopyAndTheTargetSideBySide() async throws {
        let (_, commands, _, hash, old) = try await scriptedPush(cleanupOutput: "flippio-main\nflippio-job\nflippio-waited\n")
        let names = try Self.names(of: commands)
        let sibling = names.sibling, permit = names.permit, p = Self.path
        // (The script is one quoted word of `sh -c`: its own quotes are escaped.)
        let quoted: String = try #require(commands.first { $0.last?.contains("mv -f") == true }?.last)
        let script = quoted.replacingOccurrences(of: "'\\''", with: "'")
        let checks: [String] = [
            ": > \(permit) || exit 1",
            "sha256sum \(p) | grep -q '^\(old) ' || rm -f \(permit) & sha256sum \(sibling) | grep -q '^\(hash) ' || exit 4",
            "wait",
            "test -s \(p)-wal && rm -f \(permit)",
            "test -s \(p)-journal && rm -f \(permit)",
            "test -e \(permit) || rm -f \(sibling)",
            "test -e \(permit) || exit 3",
            "rm -f \(permit)",
            "stat -c 'sibling %i %s' \(sibling) && ",
        ]
        #expect(script.contains(checks.joined(separator: "; ")), "\(script)")
    }

    @Test(arguments: [("flippio-job\nflippio-main\nflippio-waited\n", true), ("flippio-main\nflippio-job\nflippio-waited\n", true),
                      ("flippio-job & echo flippio-main\nflippio-waited\n", false), ("flippio-job\nflippio-main\n", false), ("", false)])
    func jobsProbe_countsOnlyAShellThatRanEveryPart(output: String, runsJobs: Bool) {
        // An `&` passed as an argument prints it; a shell without `wait` never says it waited.
        #expect(AndroidBridge.runsJobs(output) == runsJobs)
    }

    /// The names of the attempt that `commands` made, from its `adb push` target.
    static func names(of commands: [[String]]) throws -> AndroidBridge.PushNames {
        let staging = try #require(commands.first { $0.count > 2 && $0[2] == "push" }?.last)
        let attempt = try #require(staging.wholeMatch(of: /\/data\/local\/tmp\/flippio-[0-9a-f]{16}-([0-9a-f]+)\.db/)?.1)
        return AndroidBridge.PushNames(serial: "emulator-5554", path: path, attempt: String(attempt))
    }

    @Test func pushNames_areUniquePerAttempt_andTheirPatternsMatchEveryAttempt() {
        let first = AndroidBridge.PushNames(serial: "emulator-5554", path: Self.path)
        let second = AndroidBridge.PushNames(serial: "emulator-5554", path: Self.path)
        #expect(first.staging != second.staging)
        #expect(first.sibling != second.sibling)
        #expect(first.stagingPattern == second.stagingPattern)
        #expect(first.siblingPattern == second.siblingPattern)
        #expect(second.sibling.hasPrefix(String(first.siblingPattern.dropLast())))
    }

    @Test func push_aCopyWithTheWrongHashIsNotRenamed_andIsRetryable() async throws {
        let dir = try TemporaryDirectory()
        let snapshot = dir.child("snap.db")
        try Data("SQLite format 3\0rest".utf8).write(to: snapshot)
        let runner = ScriptedRunner { command in
            (command.arguments.last?.contains("exit 4") == true ? 4 : 0, "", "")
        }
        let error = await #expect(throws: FlippioError.self) {
            try await bridge(runner).push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: Self.db,
                                          expecting: .absent, progress: nil)
        }
        #expect(error?.code == .verificationFailed)
        #expect(error?.isRetryable == true)
        let commands = await runner.commands.map(\.arguments)
        #expect(!commands.contains { $0.last?.contains("run-as com.example.notes sha256sum") == true }, "nothing renamed, nothing to verify")
        #expect(commands.last?.last == "rm -f " + (try Self.names(of: commands)).staging)
    }

    /// After the rename the target must be the copy the script hashed (same inode, the snapshot's
    /// size); another file there, or no `stat` line, is a verification failure, retried.
    @Test(arguments: ["sibling 4242 20\ntarget 4343 20\n", "sibling 4242 20\ntarget 4242 19\n", "sibling 4242 20\n", ""])
    func push_targetIsNotTheCheckedCopyAfterTheRename_isVerificationFailed(stdout: String) async throws {
        let dir = try TemporaryDirectory()
        let snapshot = dir.child("snap.db")
        try Data("SQLite format 3\0rest".utf8).write(to: snapshot)  // 20 bytes
        let runner = ScriptedRunner { command in
            (0, command.arguments.last?.contains("mv -f") == true ? stdout : "", "")
        }
        let error = await #expect(throws: FlippioError.self) {
            try await bridge(runner).push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: Self.db, expecting: .absent, progress: nil)
        }
        #expect(error?.code == .verificationFailed)
        #expect(error?.isRetryable == true)
        #expect(await runner.commands.count == 3, "clean-up, upload, swap (whose call removed the staging copy)")
    }

    /// The swap's call removes the staging file after the app's script, as the shell user: when
    /// only that removal fails, the push landed (both `stat` lines agree) and is not reported as
    /// failed; the next push's clean-up removes the file.
    @Test func push_whenOnlyTheStagingRemovalFails_thePushLanded() async throws {
        let dir = try TemporaryDirectory()
        let snapshot = dir.child("snap.db")
        try Data("SQLite format 3\0rest".utf8).write(to: snapshot)  // 20 bytes
        let hash = try ContentHash.sha256(fileAt: snapshot)
        let runner = ScriptedRunner { command in
            command.arguments.last?.contains("mv -f") == true
                ? (1, "sibling 4242 20\ntarget 4242 20\n", "rm: /data/local/tmp/x: Permission denied\n") : (0, "", "")
        }
        let fingerprint = try await bridge(runner).push(snapshot: snapshot, snapshotHash: hash, to: Self.db, expecting: .absent, progress: nil)
        #expect(fingerprint == DeviceFingerprint(mainHash: hash))
        #expect(await runner.commands.count == 3, "no clean-up of a sibling that was renamed")
    }

    @Test func push_quotesSpecialPaths() async throws {
        let dir = try TemporaryDirectory()
        let snapshot = dir.child("snap.db")
        try Data("x".utf8).write(to: snapshot)
        let hash = try ContentHash.sha256(fileAt: snapshot)
        let odd = "/data/data/com.example.notes/databases/it's $(x).db"
        let runner = ScriptedRunner { command in
            (0, command.arguments.last?.contains("mv -f") == true ? "sibling 7 1\ntarget 7 1\n" : "", "")
        }
        var db = Self.db
        db.path = odd
        _ = try await bridge(runner).push(snapshot: snapshot, snapshotHash: hash, to: db, expecting: .absent, progress: nil)
        let move = await runner.commands[2].arguments[3]
        // Quoted twice: once inside `sh -c`, once for the device shell that runs run-as.
        #expect(move.hasPrefix("run-as com.example.notes sh -c '"))
        #expect(move.contains(#"'\''/data/data/com.example.notes/databases/it'\''\'\'''\''s $(x).db'\''"#))
    }

    @Test func push_exitStatus3IsAConflict_andRemovesTheStagingCopy() async throws {
        let dir = try TemporaryDirectory()
        let snapshot = dir.child("snap.db")
        try Data("SQLite format 3\0rest".utf8).write(to: snapshot)
        let runner = ScriptedRunner { command in
            (command.arguments.last?.contains("mv -f") == true ? 3 : 0, "", "")
        }
        let error = await #expect(throws: FlippioError.self) {
            try await bridge(runner).push(snapshot: snapshot, snapshotHash: try ContentHash.sha256(fileAt: snapshot), to: Self.db,
                                          expecting: DeviceFingerprint(mainHash: String(repeating: "c", count: 64), walHash: String(repeating: "d", count: 64)),
                                          progress: nil)
        }
        #expect(error?.code == .conflict)
        #expect(error?.message.contains("nothing was replaced") == true)
        let commands = await runner.commands.map(\.arguments)
        let swap = try #require(commands.first { $0.last?.contains("mv -f") == true }?.last)
        #expect(swap.contains("dddd"), "the wal's hash is checked: \(swap)")
        #expect(!commands.contains { $0.last?.contains("run-as com.example.notes sha256sum") == true }, "no verification after a conflict")
        #expect(commands.last?.last == "rm -f " + (try Self.names(of: commands)).staging)
    }

    @Test func fingerprint_emptyWalCountsAsNone_missingMainIsAbsent() async throws {
        let main = "1111111111111111111111111111111111111111111111111111111111111111"
        let runner = ScriptedRunner { _ in
            (1, "\(main)  \(Self.path)\n\(AndroidBridge.emptyHash)  \(Self.path)-wal\n",
             "sha256sum: \(Self.path)-journal: No such file or directory\n")
        }
        let fingerprint = try await bridge(runner).fingerprint(Self.db)
        #expect(fingerprint == DeviceFingerprint(mainHash: main, walHash: nil, journalHash: nil))
        #expect(await runner.deviceCommands == ["run-as com.example.notes sha256sum \(Self.path) \(Self.path)-wal \(Self.path)-journal"])

        let absent = ScriptedRunner { _ in
            (1, "", "sha256sum: \(Self.path): No such file or directory\nsha256sum: \(Self.path)-wal: No such file or directory\nsha256sum: \(Self.path)-journal: No such file or directory\n")
        }
        #expect(try await bridge(absent).fingerprint(Self.db) == .absent)

        let denied = ScriptedRunner { _ in (1, "", "sha256sum: \(Self.path): Permission denied\n") }
        let error = await #expect(throws: FlippioError.self) { try await bridge(denied).fingerprint(Self.db) }
        #expect(error?.code == .permissionDenied)
    }

    @Test func pull_runAsErrorInByteStream_mapsToCode() async throws {
        let dir = try TemporaryDirectory()
        let runner = ScriptedRunner { command in
            if command.arguments.contains("exec-out") { return (0, "run-as: package not debuggable: com.example.notes\n", "") }
            if command.arguments.last?.contains("sha256sum") == true { return (0, "\(String(repeating: "a", count: 64))  \(Self.path)\n", "") }
            return (1, "", "")
        }
        let error = await #expect(throws: FlippioError.self) { try await bridge(runner).pull(Self.db, into: dir.url, progress: nil) }
        #expect(error?.code == .appNotDebuggable)
    }

    @Test func pull_notSQLite() async throws {
        let dir = try TemporaryDirectory()
        let text = "just some text, not a database"
        let hash = ContentHash.sha256(Data(text.utf8))
        let runner = ScriptedRunner { command in
            if command.arguments.contains("exec-out") { return (0, text, "") }
            if command.arguments.last?.contains("sha256sum") == true { return (0, "\(hash)  \(Self.path)\n", "") }
            return (1, "", "")
        }
        let error = await #expect(throws: FlippioError.self) { try await bridge(runner).pull(Self.db, into: dir.url, progress: nil) }
        #expect(error?.code == .notSQLite)
    }

    @Test func databases_notDebuggableWithoutSu_namesTheFix() async throws {
        let runner = ScriptedRunner { command in
            let line = command.arguments.last ?? ""
            if line.hasPrefix("run-as") { return (1, "", "run-as: package not debuggable: com.example.notes\n") }
            if line.hasPrefix("su") { return (127, "", "/system/bin/sh: su: inaccessible or not found\n") }
            return (1, "", "")
        }
        let error = await #expect(throws: FlippioError.self) { try await bridge(runner).databases(deviceID: "emulator-5554", appID: Self.pkg) }
        #expect(error?.code == .appNotDebuggable)
        #expect(error?.remedy?.contains("android:debuggable=true") == true)
        #expect(error?.message.contains(Self.pkg) == true)
    }

    @Test func databases_notDebuggableWithSu_usesSu() async throws {
        let runner = ScriptedRunner { command in
            let line = command.arguments.last ?? ""
            if line.hasPrefix("run-as") { return (1, "", "run-as: package not debuggable: com.example.notes\n") }
            if line == "su 0 id" { return (0, "uid=0(root) gid=0(root)\n", "") }
            if line.hasPrefix("su 0 find") { return (0, "SQLite format 3\u{0}\(Self.path)\u{0}", "") }
            if line.hasPrefix("su 0 stat") { return (0, "8192 \(Self.path)\n", "") }
            return (1, "", "")
        }
        let dbs = try await bridge(runner).databases(deviceID: "emulator-5554", appID: Self.pkg)
        #expect(dbs == [RemoteDatabase(platform: .android, deviceID: "emulator-5554", appID: Self.pkg, path: Self.path, access: .su, size: 8192)])
        let commands = await runner.deviceCommands
        #expect(commands.contains(AndroidBridge.listingCommand(package: Self.pkg, prefix: "run-as com.example.notes ")))
        #expect(commands.contains(AndroidBridge.listingCommand(package: Self.pkg, prefix: "su 0 ")))
    }

    @Test func invalidPackage_neverReachesTheDevice() async throws {
        let runner = ScriptedRunner { _ in (0, "", "") }
        let error = await #expect(throws: FlippioError.self) { try await bridge(runner).databases(deviceID: "emulator-5554", appID: "x;reboot") }
        #expect(error?.code == .invalidArgument)
        var db = Self.db
        db.path = "/data/data/com.example.other/databases/x.db"
        let unsafe = await #expect(throws: FlippioError.self) { try await bridge(runner).fingerprint(db) }
        #expect(unsafe?.code == .unsafePath)
        #expect(await runner.commands.isEmpty)
    }

    @Test func devices_unauthorizedOnly_noGetprop() async throws {
        let runner = ScriptedRunner { command in
            if command.arguments == ["devices", "-l"] {
                return (0, "List of devices attached\nemulator-5554          device product:sdk model:Pixel_7 device:x transport_id:1\nR58M                   unauthorized usb:1-1 transport_id:2\n\n", "")
            }
            if command.arguments.last == "getprop ro.build.version.release" { return (0, "14\n", "") }
            return (1, "", "")
        }
        let devices = try await bridge(runner).devices()
        #expect(devices.map(\.osVersion) == ["14", nil])
        #expect(devices[1].remedy?.contains("Allow USB debugging") == true)
        #expect(await runner.commands.count == 2)
    }

    @Test func timeoutsScaleWithSize() {
        let timeouts = AndroidBridge.Timeouts()
        #expect(timeouts.control == .seconds(20))
        #expect(timeouts.transfer(bytes: 0) == .seconds(30))
        #expect(timeouts.transfer(bytes: 50_000_000) == .seconds(40))
    }
}
