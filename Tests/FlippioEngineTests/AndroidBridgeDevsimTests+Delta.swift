import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

// MARK: - Delta push

/// `AndroidBridge.pushDelta` through the real `/usr/bin/adb` against flippio-devsim's toybox
/// `dd` and `truncate`: what lands on the device, and that every failure leaves it untouched.
extension AndroidBridgeDevsimTests {
    var target: URL { databasesFolder.appendingPathComponent("notes.db") }

    /// A base of `rows` rows of 1 KB on the device (and a copy of it here), and a snapshot made from
    /// it by `edit`.
    func prepare(rows: Int = 400, edit: String) throws -> (base: URL, snapshot: URL) {
        // Host-side files live in the simulator's work folder, removed with it.
        let work = sim.workDirectory.appendingPathComponent("delta-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: databasesFolder, withIntermediateDirectories: true)
        let base = work.appendingPathComponent("base.db"), snapshot = work.appendingPathComponent("snapshot.db")
        try Shell.sqlite(base, """
            CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body BLOB);
            WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < \(rows))
            INSERT INTO notes SELECT x, 'note ' || x, randomblob(1000) FROM n;
            """)
        try FileManager.default.copyItem(at: base, to: snapshot)
        try Shell.sqlite(snapshot, edit)
        try FileManager.default.copyItem(at: base, to: target)
        return (base, snapshot)
    }

    func patch(_ delta: PageDelta, from snapshot: URL) throws -> URL {
        let patch = snapshot.deletingLastPathComponent().appendingPathComponent("patch-\(UUID().uuidString)")
        try delta.writePatch(from: snapshot, to: patch)
        return patch
    }

    /// What the device's database folder and temp folder hold besides notes.db.
    func leftovers() throws -> [String] {
        let folder = try FileManager.default.contentsOfDirectory(atPath: target.deletingLastPathComponent().path).filter { $0 != "notes.db" }
        let tmp = (try? FileManager.default.contentsOfDirectory(atPath: device.fs.appendingPathComponent("data/local/tmp").path)) ?? []
        return folder + tmp
    }

    @Test func pushDelta_writesTheChangedPages_deviceIsTheSnapshot() async throws {
        let (base, snapshot) = try prepare(edit: "UPDATE notes SET title = 'edited' WHERE id = 200;")
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        #expect(delta.isWorthSending())
        let hash = try ContentHash.sha256(fileAt: snapshot)
        let fingerprint = try await bridge().pushDelta(delta, patch: try patch(delta, from: snapshot), snapshotHash: hash, to: remote(),
                                                     expecting: DeviceFingerprint(mainHash: try ContentHash.sha256(fileAt: base)))
        #expect(fingerprint == DeviceFingerprint(mainHash: hash))
        #expect(try Data(contentsOf: target) == Data(contentsOf: snapshot))
        #expect(try leftovers().isEmpty)
        // The device ran one dd per run, in place, in the app's user.
        let script = try #require(sim.requests().first { ($0.command ?? "").contains("dd if=") }?.command)
        #expect(script.hasPrefix("run-as \(Self.pkg) sh -c "))
        #expect(script.contains("conv=notrunc"))
        #expect(!script.contains("truncate"))
    }

    @Test func pushDelta_patchThatShrinksTheFile_truncatesTheCopy() async throws {
        let (base, snapshot) = try prepare(edit: "DELETE FROM notes WHERE id > 100; VACUUM;")
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        #expect(delta.shrinks)
        let hash = try ContentHash.sha256(fileAt: snapshot)
        _ = try await bridge().pushDelta(delta, patch: try patch(delta, from: snapshot), snapshotHash: hash, to: remote(),
                                       expecting: DeviceFingerprint(mainHash: try ContentHash.sha256(fileAt: base)))
        #expect(try Data(contentsOf: target) == Data(contentsOf: snapshot))
        #expect(try sim.requests().contains { ($0.command ?? "").contains("truncate -s \(delta.targetSize) ") })
        #expect(try Shell.sqlite(target, "PRAGMA quick_check").trimmingCharacters(in: .whitespacesAndNewlines) == "ok")
        #expect(try leftovers().isEmpty)
    }

    @Test func pushDelta_deviceNotTheBase_copyFailsItsHashCheck_nothingReplaced() async throws {
        let (base, snapshot) = try prepare(edit: "UPDATE notes SET title = 'edited' WHERE id = 200;")
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        // The app changed another row; the caller (wrongly) expects exactly what is there now.
        try Shell.sqlite(target, "UPDATE notes SET title = 'by the app' WHERE id = 3;")
        let before = try Data(contentsOf: target)
        let error = await #expect(throws: FlippioError.self) {
            try await bridge().pushDelta(delta, patch: try patch(delta, from: snapshot), snapshotHash: try ContentHash.sha256(fileAt: snapshot),
                                       to: remote(), expecting: DeviceFingerprint(mainHash: ContentHash.sha256(before)))
        }
        #expect(error?.code == .verificationFailed)
        #expect(try Data(contentsOf: target) == before)
        #expect(try leftovers().isEmpty)
    }

    @Test func pushDelta_ddFailsHalfWay_deviceUntouched_tempFilesRemoved() async throws {
        let (base, snapshot) = try prepare(edit: "UPDATE notes SET title = 'a' WHERE id = 10; UPDATE notes SET title = 'b' WHERE id = 390;")
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        #expect(delta.runs.count >= 2)
        try device.setFaults(["failDdAfterRuns": 1])
        let before = try Data(contentsOf: target)
        let error = await #expect(throws: FlippioError.self) {
            try await bridge().pushDelta(delta, patch: try patch(delta, from: snapshot), snapshotHash: try ContentHash.sha256(fileAt: snapshot),
                                       to: remote(), expecting: DeviceFingerprint(mainHash: ContentHash.sha256(before)))
        }
        #expect(error?.code == .verificationFailed)
        #expect(error?.message.contains("No space left on device") == true)
        #expect(try Data(contentsOf: target) == before)
        #expect(try leftovers().isEmpty)
    }

    @Test func pushDelta_deviceChangedAtTheSwap_isAConflict() async throws {
        let (base, snapshot) = try prepare(edit: "UPDATE notes SET title = 'edited' WHERE id = 200;")
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        try Data("stale journal".utf8).write(to: URL(fileURLWithPath: target.path + "-journal"))
        let error = await #expect(throws: FlippioError.self) {
            try await bridge().pushDelta(delta, patch: try patch(delta, from: snapshot), snapshotHash: try ContentHash.sha256(fileAt: snapshot),
                                       to: remote(), expecting: DeviceFingerprint(mainHash: try ContentHash.sha256(fileAt: base)))
        }
        #expect(error?.code == .conflict)
        #expect(try Data(contentsOf: target) == Data(contentsOf: base))
    }

    @Test func pushDelta_iOSDefault_isUnsupported() async throws {
        let error = await #expect(throws: FlippioError.self) {
            try await FullOnlyBridge().pushDelta(PageDelta(pageSize: 4096, runs: [], targetSize: 0, baseSize: 0, pageSizeChanged: false),
                                                 patch: URL(fileURLWithPath: "/nonexistent"), snapshotHash: "", to: remote(), expecting: DeviceFingerprint(mainHash: nil))
        }
        #expect(error?.code == .deltaUnsupported)
        #expect(error?.isRetryable == false)
    }
}

/// A bridge that only has the protocol's default `pushDelta` (as the iOS bridge).
private struct FullOnlyBridge: DeviceBridge {
    var platform: Platform { .ios }
    func devices() async throws -> [Device] { [] }
    func apps(deviceID: String, includeSystem: Bool) async throws -> [AppInfo] { [] }
    func databases(deviceID: String, appID: String) async throws -> [RemoteDatabase] { [] }
    func pull(_ database: RemoteDatabase, into directory: URL, progress: TransferProgress?) async throws -> PulledFiles { fatalError() }
    func fingerprint(_ database: RemoteDatabase) async throws -> DeviceFingerprint { fatalError() }
    func stopApp(deviceID: String, appID: String) async throws {}
    func push(snapshot: URL, snapshotHash: String, to database: RemoteDatabase, expecting: DeviceFingerprint,
              progress: TransferProgress?) async throws -> DeviceFingerprint { fatalError() }
}
