@testable import FlippioEngine
import Foundation
import Logging
import Synchronization
import Testing
import TestSupport

/// Following (issue 13) inside one database's loop: device changes settle, become one bring-in,
/// hand both-sides changes to a push, and are never lost while the loop is busy. Manual clock,
/// recording fakes, no device.
@Suite("DatabaseSync following the device", .serialized)
struct DatabaseSyncFollowTests {
    @Test func aBurstOfDeviceEventsBecomesOneBringInAfterTheDeviceSettleWindow() async throws {
        let fixture = try await SyncLoopFixture()
        let importer = RecordingImporter()
        let sync = try fixture.startSync(importer: importer)
        for _ in 0..<20 { sync.send(.deviceChanged) }
        try await waitUntil("the device settle window is armed") { await sync.armedTimers.contains(.deviceSettle) }
        try await Task.sleep(for: .milliseconds(30))
        #expect(importer.count == 0, "nothing before the window ends")
        try await fixture.advance(by: .milliseconds(300))
        try await waitUntil("one bring-in") { importer.count == 1 }
        try await waitUntil("clean") { await sync.state == .clean }
        #expect(fixture.pusher.count == 0, "a bring-in is not a push")
        #expect(await sync.armedTimers.isEmpty, "no timer runs while nothing changes")
    }

    @Test func bothSidesChanged_theBringInHandsOverToAPush() async throws {
        let fixture = try await SyncLoopFixture()
        let importer = RecordingImporter()
        importer.script(.localChanged)
        let sync = try fixture.startSync(importer: importer)
        sync.send(.deviceChanged)
        try await fixture.advance(by: .milliseconds(300))
        try await waitUntil("a push merges both sides") { fixture.pusher.count == 1 }
        try await waitUntil("clean") { await sync.state == .clean }
        #expect(importer.count == 1)
    }

    @Test func aDeviceChangeDuringAPushIsLookedAtWhenThePushEnds() async throws {
        let fixture = try await SyncLoopFixture()
        let importer = RecordingImporter()
        importer.script(.unchanged)  // our own push's rename: the fingerprint it recorded
        fixture.pusher.hold()
        let sync = try fixture.startSync(importer: importer)
        sync.send(.pushRequested)
        try await waitUntil("pushing") { fixture.pusher.count == 1 }
        sync.send(.deviceChanged)
        try await fixture.advance(by: .milliseconds(300))
        try await Task.sleep(for: .milliseconds(30))
        #expect(importer.count == 0, "not during the push: the push holds the database")
        fixture.pusher.release()
        try await waitUntil("looked at after the push") { importer.count == 1 }
        try await waitUntil("clean") { await sync.state == .clean }
        #expect(fixture.pusher.count == 1, "an echo of our own push is not pushed again")
    }

    @Test func aDeviceChangeWhileDirtyIsNotLost_evenWhenThePushFindsNothingToSend() async throws {
        let fixture = try await SyncLoopFixture()
        let importer = RecordingImporter()
        let sync = try fixture.startSync(importer: importer)
        sync.send(.fileChanged)  // a tool only read the copy: the push will find it unchanged
        try await waitUntil("dirty") { await sync.state == .dirty }
        sync.send(.deviceChanged)
        try await fixture.advance(by: .milliseconds(300), once: 3)  // settle, overdue, device settle
        try await waitUntil("pushed (unchanged), then brought in") { fixture.pusher.count == 1 && importer.count == 1 }
        try await waitUntil("clean") { await sync.state == .clean }
    }

    @Test func aBusyLocalFileIsTriedAgainAfterTheBackoff_neverForced() async throws {
        let fixture = try await SyncLoopFixture()
        let importer = RecordingImporter()
        importer.script(.failed(FlippioError(.databaseBusy, "locked", remedy: nil)), .broughtIn(rows: 2))
        let sync = try fixture.startSync(importer: importer)
        sync.send(.deviceChanged)
        try await fixture.advance(by: .milliseconds(300))
        try await waitUntil("first try") { importer.count == 1 }
        try await waitUntil("a retry is armed") { await sync.armedTimers.contains(.retry) }
        try await fixture.advance(by: .seconds(60))
        try await waitUntil("second try") { importer.count == 2 }
        try await waitUntil("clean") { await sync.state == .clean }
    }

    @Test func aGoneDeviceArmsNoTimer() async throws {
        let fixture = try await SyncLoopFixture()
        let importer = RecordingImporter()
        importer.script(.failed(FlippioError(.deviceNotFound, "gone", remedy: nil)))
        let sync = try fixture.startSync(importer: importer)
        sync.send(.deviceChanged)
        try await fixture.advance(by: .milliseconds(300))
        try await waitUntil("tried once") { importer.count == 1 }
        try await waitUntil("clean") { await sync.state == .clean }
        #expect(await sync.armedTimers.isEmpty, "the watcher's restart looks again when the device is back")
    }
}

/// The per-app watchers and polls (``DeviceFollower``) with a scripted watcher and a manual clock.
@Suite("DeviceFollower", .serialized)
struct DeviceFollowerTests {
    /// A device-side watcher the test drives: each run records its folders and waits until the
    /// test ends it (or refuses it).
    final class FakeAppWatcher: Sendable {
        struct Run { var folders: [String]; var onChange: @Sendable (String) -> Void; var end: CheckedContinuation<Void, Error>? }
        private let state = Mutex((runs: [Run](), refuse: false))

        func refuse() { state.withLock { $0.refuse = true } }
        var runs: Int { state.withLock { $0.runs.count } }
        func folders(_ run: Int) -> [String] { state.withLock { $0.runs[run].folders } }
        func report(_ path: String) { state.withLock { $0.runs.last?.onChange }?(path) }
        func endStream() { state.withLock { state -> CheckedContinuation<Void, Error>? in
            defer { if !state.runs.isEmpty { state.runs[state.runs.count - 1].end = nil } }
            return state.runs.last?.end
        }?.resume() }

        func watch(_ app: DeviceFollower.App, _ folders: [String], _ onChange: @escaping @Sendable (String) -> Void) async throws {
            if state.withLock({ $0.refuse }) {
                state.withLock { $0.runs.append(Run(folders: folders, onChange: onChange, end: nil)) }
                throw FlippioError.deviceWatchUnavailable(serial: app.deviceID, appID: app.appID, detail: "inotifyd: inaccessible or not found")
            }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    state.withLock { $0.runs.append(Run(folders: folders, onChange: onChange, end: continuation)) }
                }
            } onCancel: {
                state.withLock { state -> CheckedContinuation<Void, Error>? in
                    defer { if !state.runs.isEmpty { state.runs[state.runs.count - 1].end = nil } }
                    return state.runs.last?.end
                }?.resume(throwing: CancellationError())
            }
        }
    }

    let clock = ManualClock()
    let watcher = FakeAppWatcher()
    /// The looks delivered to databases, in order.
    final class Deliveries: Sendable {
        let urls = Mutex([URL]())
    }
    let delivered = Deliveries()
    let notes = URL(fileURLWithPath: "/ws/emulator-5554/com.example.notes/notes.db")
    let other = URL(fileURLWithPath: "/ws/emulator-5554/com.example.notes/other.db")

    func makeFollower() -> DeviceFollower {
        let watcher = self.watcher, delivered = self.delivered
        return DeviceFollower(.init(watch: { try await watcher.watch($0, $1, $2) }, clock: clock,
                                    androidPollInterval: .seconds(5), restartDelay: .milliseconds(500),
                                    maximumRestartDelay: .seconds(30), logger: Logger(label: "test"),
                                    deliver: { url in delivered.urls.withLock { $0.append(url) } }))
    }

    func remote(_ name: String) -> RemoteDatabase {
        RemoteDatabase(platform: .android, deviceID: "emulator-5554", appID: "com.example.notes",
                       path: "/data/data/com.example.notes/databases/\(name)", access: .runAs)
    }

    var deliveries: [URL] { delivered.urls.withLock { $0 } }

    @Test func oneWatcherPerApp_onlyWhileTheDeviceIsListed_andEventsReachTheirDatabase() async throws {
        let follower = makeFollower()
        await follower.setFollowed(notes, remote: remote("notes.db"))
        await follower.setFollowed(other, remote: remote("other.db"))
        #expect(watcher.runs == 0, "the device has not been listed yet")
        await follower.devicesChanged(ready: ["emulator-5554"], platform: .android)
        try await waitUntil("one watcher for the app") { watcher.runs == 1 }
        #expect(watcher.folders(0) == ["/data/data/com.example.notes/databases"], "one folder, watched once")
        try await waitUntil("each database looked at once at the start") { Set(deliveries) == [notes, other] }
        let before = deliveries.count
        watcher.report("/data/data/com.example.notes/databases/notes.db-wal")
        watcher.report("/data/data/com.example.notes/databases/notes.db-shm")
        watcher.report("/data/data/com.example.notes/databases/.notes.db.flippio-tmp-1")
        try await waitUntil("the -wal event reaches notes.db") { deliveries.count == before + 1 }
        #expect(deliveries.last == notes)
        #expect(clock.sleepingDeadlines.isEmpty, "no timer while the stream runs")

        await follower.devicesChanged(ready: [], platform: .android)
        #expect(await follower.runningApps.isEmpty, "stopped while the device is gone")
        try await Task.sleep(for: .milliseconds(30))
        #expect(watcher.runs == 1)
        #expect(clock.sleepingDeadlines.isEmpty, "no restart timer while the device is gone")
    }

    @Test func followingAgainWhatIsFollowedKeepsTheWatcher_movingADatabaseRestartsIt() async throws {
        let follower = makeFollower()
        await follower.setFollowed(notes, remote: remote("notes.db"))
        await follower.devicesChanged(ready: ["emulator-5554"], platform: .android)
        try await waitUntil("running") { watcher.runs == 1 }
        // The engine says it again each time it reads the sidecar.
        await follower.setFollowed(notes, remote: remote("notes.db"))
        await follower.setFollowed(notes, remote: remote("notes.db"))
        #expect(await follower.runningApps.count == 1)
        try await Task.sleep(for: .milliseconds(30))
        #expect(watcher.runs == 1, "the same database followed again: the watcher keeps running")

        // The same local copy now stands for another device file: the watcher follows the new set.
        await follower.setFollowed(notes, remote: remote("renamed.db"))
        try await waitUntil("started for the new set") { watcher.runs == 2 }
        await follower.setFollowed(notes, remote: nil)
        #expect(await follower.runningApps.isEmpty, "nothing left to follow")
    }

    @Test func aStreamThatEndsIsStartedAgainWithBackoff() async throws {
        let follower = makeFollower()
        await follower.setFollowed(notes, remote: remote("notes.db"))
        await follower.devicesChanged(ready: ["emulator-5554"], platform: .android)
        try await waitUntil("running") { watcher.runs == 1 }
        watcher.endStream()
        try await waitUntil("a restart is scheduled") { clock.sleepingDeadlines.count == 1 }
        clock.advance(by: .milliseconds(499))
        try await Task.sleep(for: .milliseconds(30))
        #expect(watcher.runs == 1)
        clock.advance(by: .milliseconds(1))
        try await waitUntil("started again") { watcher.runs == 2 }
        watcher.endStream()
        try await waitUntil("the next restart waits longer") { clock.sleepingDeadlines.count == 1 }
        clock.advance(by: .milliseconds(999))
        try await Task.sleep(for: .milliseconds(30))
        #expect(watcher.runs == 2, "doubled: 1 s")
        clock.advance(by: .milliseconds(1))
        try await waitUntil("started a third time") { watcher.runs == 3 }
        await follower.stopAll()
    }

    @Test func noInotifyd_pollsTheFingerprintEveryInterval_andSaysSoOnce() async throws {
        watcher.refuse()
        let follower = makeFollower()
        await follower.setFollowed(notes, remote: remote("notes.db"))
        await follower.devicesChanged(ready: ["emulator-5554"], platform: .android)
        try await waitUntil("the poll sleeps") { clock.sleepingDeadlines.count == 1 }
        let app = DeviceFollower.App(platform: .android, deviceID: "emulator-5554", appID: "com.example.notes")
        #expect(await follower.pollFallbacks[app] != nil)
        let before = deliveries.count
        clock.advance(by: .seconds(5))
        try await waitUntil("one look per interval") { deliveries.count == before + 1 }
        try await waitUntil("the next poll sleeps") { clock.sleepingDeadlines.count == 1 }
        #expect(watcher.runs == 1, "inotifyd is not asked for again")
        await follower.devicesChanged(ready: [], platform: .android)
        try await Task.sleep(for: .milliseconds(30))
        #expect(clock.sleepingDeadlines.isEmpty, "no poll while the device is gone")
    }
}
