@testable import FlippioEngine
import Foundation
import Logging
import Synchronization
import Testing
import TestSupport

/// Start-up: before READY the engine only reads sidecars and routes (no push, no SQLite
/// connection); after it every database gets its check, a few at a time; the status counts
/// stay right however many databases start or change together.
@Suite("SyncEngine start-up", .serialized)
struct SyncEngineStartupTests {
    /// The fixture's database plus `extra` more, on two devices; `states` sets some sidecars' state.
    func workspace(extra: Int, states: [Int: SyncState] = [:]) async throws -> (SyncLoopFixture, [URL]) {
        let fixture = try await SyncLoopFixture()
        var databases = [fixture.database]
        for index in 0..<extra {
            let device = index.isMultiple(of: 2) ? "emulator-5554" : "emulator-5556"
            let remote = RemoteDatabase(platform: .android, deviceID: device, appID: "com.example.notes",
                                        path: "/data/data/com.example.notes/databases/set\(index % 3)/db\(index).db", access: .runAs)
            let database = try fixture.workspace.localURL(for: remote)
            var sidecar = Sidecar(origin: .init(platform: .android, deviceID: device, deviceModel: nil, appID: remote.appID,
                                                remotePath: remote.path, access: .runAs),
                                  pulledAt: Date(), fingerprintAtPull: DeviceFingerprint(mainHash: "m"), contentHash: "base")
            sidecar.state = states[index] ?? .clean
            try await SidecarStore().write(sidecar, forDatabase: database)
            databases.append(database)
        }
        return (fixture, databases.sorted { $0.path < $1.path })
    }

    func engine(_ fixture: SyncLoopFixture, pool: ConnectionPool = ConnectionPool(capacity: 4),
                onStatusChange: @escaping @Sendable (String) -> Void = { _ in }) -> SyncEngine {
        SyncEngine(.init(
            workspace: fixture.workspace, sidecars: fixture.sidecars, pool: pool, watcher: FakeWatcher(),
            pusher: fixture.pusher, clock: fixture.clock, settleWindow: fixture.settle, settleMaxWait: fixture.maxWait,
            retry: RetryPolicy(), unwatchedRescanInterval: .seconds(10), logger: Logger(label: "test"),
            onStatusChange: onStatusChange))
    }

    @Test func startTracksEveryDatabase_publishesOneStatus_andTouchesNoDatabase() async throws {
        let (fixture, databases) = try await workspace(extra: 40, states: [3: .conflict, 10: .conflict, 20: .conflict, 7: .dirty])
        let published = Mutex<[String]>([])
        let pool = ConnectionPool(capacity: 4)
        let engine = engine(fixture, pool: pool) { line in published.withLock { $0.append(line) } }
        // The agent's instance lock lives there; agent.json is written beside it.
        try FileManager.default.createDirectory(at: fixture.workspace.stateDirectory, withIntermediateDirectories: true)
        try await engine.start()

        #expect(await engine.trackedCount == databases.count)
        let line = "watching 41 databases on 2 devices; 3 conflicts"
        #expect(await engine.statusLine() == line, "conflicts stay conflicts; a dirty sidecar starts clean and is checked")
        #expect(published.withLock { $0 } == [line], "one status for the whole start-up, not one per database")
        #expect(AgentStatusFile(pid: getpid(), status: line, unwatchedFolders: 0, unwatchedRemedy: nil, pollingApps: [])
            == (try JSONDecoder().decode(AgentStatusFile.self, from: Data(contentsOf: AgentStatusFile.url(in: fixture.workspace)))))
        #expect(fixture.pusher.count == 0, "nothing is checked before READY")
        #expect(await pool.counters.opens == 0, "no connection is opened before READY")
        await engine.shutdown(grace: .seconds(5))
    }

    @Test func afterStart_everyDatabaseIsChecked_aFewAtATime_aDirtyOneIncluded() async throws {
        let (fixture, databases) = try await workspace(extra: 12, states: [5: .dirty, 6: .pushing])
        let engine = engine(fixture)
        try await engine.start()
        #expect(fixture.pusher.count == 0)

        fixture.pusher.hold()
        let checked = Task { await engine.checkAll(concurrency: 3) }
        try await waitUntil("three checks pushing") { fixture.pusher.count == 3 }
        fixture.pusher.release()
        await checked.value

        #expect(fixture.pusher.pushes.sorted { $0.path < $1.path } == databases, "every database checked, once")
        #expect(fixture.pusher.maxInFlight == 3, "never more than three at a time")
        for database in databases {
            let sync = try #require(await engine.sync(for: database))
            #expect(await sync.state == .clean)
            #expect(!(await sync.isPushing), "checkAll returns once every check's push has ended")
        }
        await engine.shutdown(grace: .seconds(5))
    }

    @Test func statusStaysRight_whenManyDatabasesChangeTogether() async throws {
        let (fixture, databases) = try await workspace(extra: 20)
        for _ in databases { fixture.pusher.script(.failed(FlippioError(.deviceOffline, "device offline"))) }
        let published = Mutex<[String]>([])
        let engine = engine(fixture) { line in published.withLock { $0.append(line) } }
        try await engine.start()
        await engine.devicesChanged([], platform: .android)
        await engine.checkAll(concurrency: 8)

        let line = "watching 21 databases on 2 devices; 21 waiting for a device"
        #expect(await engine.statusLine() == line)
        try await waitUntil("the last status published is the current one") { published.withLock { $0.last } == line }
        #expect(await engine.devicesAwaited(on: .android) == ["emulator-5554", "emulator-5556"])
        await engine.shutdown(grace: .seconds(5))
    }
}
