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
}
