import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

// MARK: - Delta push without dd

extension AndroidBridgeScriptedTests {
    /// A device whose toybox lacks `dd`: the script exits 5 with the shell's "not found"; the bridge
    /// says "unsupported" (the pipeline then pushes whole files) and remembers the device, so the
    /// next delta costs no upload at all.
    @Test func pushDelta_withoutDd_isUnsupported_andRememberedForTheDevice() async throws {
        let dir = try TemporaryDirectory()
        let patch = dir.child("patch")
        try Data(count: 4096).write(to: patch)
        // A serial of its own: the memory is per device, for the process's life.
        let db = RemoteDatabase(platform: .android, deviceID: "emulator-5570", appID: Self.pkg, path: Self.path, access: .runAs)
        let runner = ScriptedRunner { command in
            if (command.arguments.last ?? "").contains("dd if=") {
                return (AndroidBridge.deltaFailedStatus, "", "/system/bin/sh: dd: inaccessible or not found\n")
            }
            return (0, "", "")
        }
        let delta = PageDelta(pageSize: 4096, runs: [.init(firstPage: 0, count: 1, patchOffset: 0)],
                              targetSize: 8192, baseSize: 8192, pageSizeChanged: false)
        let hash = String(repeating: "a", count: 64)
        for attempt in 1...2 {
            let error = await #expect(throws: FlippioError.self) {
                try await bridge(runner).pushDelta(delta, patch: patch, snapshotHash: hash, to: db,
                                                   expecting: DeviceFingerprint(mainHash: String(repeating: "b", count: 64)))
            }
            #expect(error?.code == .deltaUnsupported, "attempt \(attempt)")
        }
        let commands = await runner.deviceCommands
        #expect(commands.filter { $0.contains("dd if=") }.count == 1, "the second attempt sends nothing")
        #expect(await runner.commands.filter { $0.arguments.contains("push") }.count == 1)
        // The failed attempt removed its copy and its upload.
        #expect(commands.contains { $0.hasPrefix("run-as \(Self.pkg) rm -f ") && $0.contains(".notes.db.flippio-tmp-") })
    }

    /// A delta swap prints the sibling's inode and size before its `mv` and the target's after it:
    /// no `sha256sum` of the whole target after the rename (the sibling was hashed in the same script).
    @Test func pushDelta_checksTheRenameByInodeAndSize_withoutHashingTheTargetAgain() async throws {
        let dir = try TemporaryDirectory()
        let patch = dir.child("patch")
        try Data(count: 4096).write(to: patch)
        let runner = ScriptedRunner { command in
            let script = command.arguments.last ?? ""
            return script.contains("dd if=") ? (0, "sibling 4242 8192\ntarget 4242 8192\n", "") : (0, "", "")
        }
        let hash = String(repeating: "a", count: 64)
        let fingerprint = try await bridge(runner).pushDelta(Self.delta, patch: patch, snapshotHash: hash, to: Self.db,
                                                             expecting: DeviceFingerprint(mainHash: String(repeating: "b", count: 64)))
        #expect(fingerprint == DeviceFingerprint(mainHash: hash))
        let commands = await runner.deviceCommands
        let script = try #require(commands.first { $0.contains("dd if=") })
        // The copy is hashed before the rename, the target's inode printed around it.
        #expect(script.contains("sha256sum "))
        // (The script is one quoted word of `sh -c`: its own quotes are escaped.)
        let before = try #require(script.range(of: "sibling %i %s"))
        let rename = try #require(script.range(of: "mv -f "))
        let after = try #require(script.range(of: "target %i %s"))
        #expect(before.lowerBound < rename.lowerBound && rename.lowerBound < after.lowerBound)
        #expect(script.hasSuffix(" \(Self.path)' && rm -f \(try Self.names(of: await runner.commands.map(\.arguments)).staging)"))
        #expect(!commands.contains { $0.hasPrefix("run-as \(Self.pkg) sha256sum ") }, "no whole-file hash after the rename")
    }

    /// What the hash after the rename guarded against, caught by the `stat` lines instead: the file
    /// at the target after the `mv` is not the copy that was checked (another inode, or a size
    /// other than the snapshot's).
    @Test(arguments: ["sibling 4242 8192\ntarget 4343 8192\n", "sibling 4242 8192\ntarget 4242 4096\n",
                      "sibling 4242 8192\n", ""])
    func pushDelta_targetIsNotTheCheckedCopy_isAVerificationFailure(stdout: String) async throws {
        let dir = try TemporaryDirectory()
        let patch = dir.child("patch")
        try Data(count: 4096).write(to: patch)
        let runner = ScriptedRunner { command in
            (command.arguments.last ?? "").contains("dd if=") ? (0, stdout, "") : (0, "", "")
        }
        let error = await #expect(throws: FlippioError.self) {
            try await bridge(runner).pushDelta(Self.delta, patch: patch, snapshotHash: String(repeating: "a", count: 64), to: Self.db,
                                               expecting: DeviceFingerprint(mainHash: String(repeating: "b", count: 64)))
        }
        #expect(error?.code == .verificationFailed)
    }

    /// One changed page of an 8 KB file.
    static let delta = PageDelta(pageSize: 4096, runs: [.init(firstPage: 0, count: 1, patchOffset: 0)],
                                 targetSize: 8192, baseSize: 8192, pageSizeChanged: false)
}
