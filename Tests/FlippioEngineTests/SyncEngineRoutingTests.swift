@testable import FlippioEngine
import Foundation
import Logging
import Testing
import TestSupport

/// The engine only routes: watch events to their database, device lists to the databases on
/// that device. With a fake watcher, a recording pusher and a manual clock.
@Suite("SyncEngine routing", .serialized)
struct SyncEngineRoutingTests {
    func engine(_ fixture: SyncLoopFixture, watcher: FakeWatcher) -> SyncEngine {
        SyncEngine(.init(
            workspace: fixture.workspace, sidecars: fixture.sidecars, pool: ConnectionPool(capacity: 4), watcher: watcher,
            pusher: fixture.pusher, clock: fixture.clock, settleWindow: fixture.settle, settleMaxWait: fixture.maxWait,
            retry: RetryPolicy(), unwatchedRescanInterval: .seconds(10), logger: Logger(label: "test")))
    }

    @Test func aWatchEventForTheDatabaseOrItsWALReachesItsLoop() async throws {
        let fixture = try await SyncLoopFixture()
        let watcher = FakeWatcher()
        let engine = engine(fixture, watcher: watcher)
        try await engine.start()
        Task { await engine.consumeWatchEvents() }
        #expect(watcher.isWatching(fixture.database.deletingLastPathComponent()))
        let folder = fixture.database.deletingLastPathComponent()
        watcher.send(.changed(directory: folder.path, name: "notes.db-wal"))
        watcher.send(.changed(directory: folder.path, name: "other.db"))  // not tracked: ignored
        try await fixture.advance(by: fixture.settle, once: 2)
        try await waitUntil("pushed") { fixture.pusher.pushes == [fixture.database] }
        await engine.shutdown(grace: .seconds(5))
    }

    @Test func aBatchOfEventsFromOneReadIsRouted_andBecomesOnePush() async throws {
        let fixture = try await SyncLoopFixture()
        let watcher = FakeWatcher()
        let engine = engine(fixture, watcher: watcher)
        try await engine.start()
        Task { await engine.consumeWatchEvents() }
        let folder = fixture.database.deletingLastPathComponent().path
        // What a read during a burst of commits holds: the journal and the database, over and over.
        let commit: [WatchEvent] = [.changed(directory: folder, name: "notes.db-journal"),
                                    .changed(directory: folder, name: "notes.db"),
                                    .changed(directory: folder, name: "other.db")]
        watcher.send(batch: Array(repeating: commit, count: 500).flatMap { $0 })
        let sync = try #require(await engine.sync(for: fixture.database))
        try await waitUntil("dirty") { await sync.state == .dirty }
        // The engine routes a batch in one turn of its actor: once it answers, the batch is routed;
        // then the loop's queue drains, and the quiet period runs from the last change.
        _ = await engine.trackedCount
        try await waitUntil("every change queued handled") { await sync.inputsHandled == sync.inputsSent }
        try await fixture.advance(by: fixture.settle, once: 2)
        try await waitUntil("pushed") { fixture.pusher.pushes == [fixture.database] }
        await engine.shutdown(grace: .seconds(5))
        #expect(fixture.pusher.pushes == [fixture.database])
    }

    @Test func aDeviceListRoutesToTheDatabasesOnThatDevice() async throws {
        let fixture = try await SyncLoopFixture()
        fixture.pusher.script(.failed(FlippioError(.deviceOffline, "device offline")))
        let watcher = FakeWatcher()
        let engine = engine(fixture, watcher: watcher)
        try await engine.start()
        await engine.devicesChanged([], platform: .android)
        await engine.checkAll()
        let sync = try #require(await engine.sync(for: fixture.database))
        try await waitUntil("waiting for the device") { await sync.state == .waitingForDevice }
        #expect(await engine.statusLine().contains("1 waiting for a device"))
        let handled = await sync.inputsHandled
        await engine.devicesChanged([Device(platform: .android, id: "emulator-5556", state: .ready, model: nil)], platform: .android)
        try await waitUntil("the device list handled") { await sync.inputsHandled > handled }
        #expect(fixture.pusher.count == 1, "another device coming does not wake it")
        await engine.devicesChanged([Device(platform: .android, id: "emulator-5554", state: .ready, model: nil)], platform: .android)
        try await waitUntil("pushed when its device is back") { fixture.pusher.count == 2 }
        await engine.shutdown(grace: .seconds(5))
    }

    @Test func aSidecarRemovedByForgetUntracksTheDatabase() async throws {
        let fixture = try await SyncLoopFixture()
        let watcher = FakeWatcher()
        let engine = engine(fixture, watcher: watcher)
        try await engine.start()
        Task { await engine.consumeWatchEvents() }
        #expect(await engine.trackedCount == 1)
        try FileManager.default.removeItem(at: Sidecar.url(forDatabase: fixture.database))
        watcher.send(.changed(directory: fixture.database.deletingLastPathComponent().path, name: "notes.db.flippio.json"))
        try await waitUntil("untracked") { await engine.trackedCount == 0 }
        await engine.shutdown(grace: .seconds(5))
    }

    // MARK: - Watch limits

    @Test func aFolderInotifyRefusesIsReported_rescanned_andWatchedOnceTheLimitAllows() async throws {
        let fixture = try await SyncLoopFixture()
        let folder = fixture.database.deletingLastPathComponent()
        try Data("SQLite format 3\0".utf8).write(to: fixture.database)
        let watcher = FakeWatcher()
        watcher.refuse([folder])
        let engine = engine(fixture, watcher: watcher)
        try await engine.start()  // does not throw: the agent keeps running
        #expect(await engine.trackedCount == 1, "the database is tracked although its folder is not watched")
        #expect(await engine.unwatchedFolders.count == 1)
        #expect(await engine.unwatchedFolders.remedy?.contains("fs.inotify.max_user_watches") == true)
        #expect(await engine.statusLine().contains("1 folder unwatched"))

        // The first rescan records what the files look like; an edit shows at the next one.
        try await fixture.advance(by: .seconds(10))
        try await waitUntil("first rescan armed the next") { fixture.clock.sleepingDeadlines.count == 1 }
        let handle = try FileHandle(forWritingTo: fixture.database)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(repeating: 1, count: 4096))
        try handle.close()
        try await fixture.advance(by: .seconds(10))
        try await waitUntil("an edit in the unwatched folder starts a settle") {
            await engine.sync(for: fixture.database)?.state == .dirty
        }
        try await fixture.advance(by: fixture.settle, once: 2)
        try await waitUntil("and is pushed") { fixture.pusher.count == 1 }

        watcher.allowAll()
        try await fixture.advance(by: .seconds(10))
        try await waitUntil("watched again") { await engine.unwatchedFolders.count == 0 }
        #expect(watcher.isWatching(folder))
        await engine.shutdown(grace: .seconds(5))
    }
}
