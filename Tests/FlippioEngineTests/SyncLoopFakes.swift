@testable import FlippioEngine
import Foundation
import Logging
import Synchronization
import TestSupport

/// A pusher that records each push and answers with scripted outcomes; a push can be held
/// open until the test releases it (to make changes during a push).
final class RecordingPusher: DatabasePushing, Sendable {
    private struct State {
        var pushes: [URL] = []
        var outcomes: [PushPipeline.Outcome] = []
        var holding = false
        var held: [CheckedContinuation<Void, Never>] = []
        var inFlight = 0
        var maxInFlight = 0
    }

    private let state = Mutex(State())

    /// Outcomes for the next pushes, in order; `.unchanged` once they run out.
    func script(_ outcomes: PushPipeline.Outcome...) { state.withLock { $0.outcomes += outcomes } }
    /// Keeps pushes from returning until ``release()``.
    func hold() { state.withLock { $0.holding = true } }
    func release() {
        let held = state.withLock { state in
            state.holding = false
            defer { state.held = [] }
            return state.held
        }
        for continuation in held { continuation.resume() }
    }

    var pushes: [URL] { state.withLock { $0.pushes } }
    var count: Int { pushes.count }
    /// The most pushes that were in progress at the same time.
    var maxInFlight: Int { state.withLock { $0.maxInFlight } }

    func push(_ database: URL, mode: PushPipeline.Mode) async -> PushPipeline.Outcome {
        let holding = state.withLock { state in
            state.pushes.append(database)
            state.inFlight += 1
            state.maxInFlight = max(state.maxInFlight, state.inFlight)
            return state.holding
        }
        defer { state.withLock { $0.inFlight -= 1 } }
        if holding {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    guard state.holding else { return true }
                    state.held.append(continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
        return state.withLock { $0.outcomes.isEmpty ? .unchanged : $0.outcomes.removeFirst() }
    }
}

/// Brings device changes in, as scripted: records each bring-in, returns the scripted outcomes
/// (`.broughtIn(rows: 1)` once they run out).
final class RecordingImporter: DeviceChangeImporting, Sendable {
    private let state = Mutex((bringIns: [URL](), outcomes: [PushPipeline.BringInOutcome]()))

    func script(_ outcomes: PushPipeline.BringInOutcome...) { state.withLock { $0.outcomes += outcomes } }
    var count: Int { state.withLock { $0.bringIns.count } }

    func bringIn(_ database: URL) async -> PushPipeline.BringInOutcome {
        state.withLock { state in
            state.bringIns.append(database)
            return state.outcomes.isEmpty ? .broughtIn(rows: 1) : state.outcomes.removeFirst()
        }
    }
}

/// A watcher that records the folders it is asked to watch, refuses those listed in
/// ``refused`` with the kernel's watch-limit error, and delivers events the test sends (each
/// ``send(_:)`` as a batch of one, as if each were a read of its own).
final class FakeWatcher: FileWatching, Sendable {
    private struct State {
        var watched: Set<String> = []
        var refused: Set<String> = []
    }

    private let state = Mutex(State())
    let eventBatches: AsyncStream<[WatchEvent]>
    private let continuation: AsyncStream<[WatchEvent]>.Continuation

    init() {
        (eventBatches, continuation) = AsyncStream.makeStream(of: [WatchEvent].self)
    }

    /// Folders that fail with ENOSPC, as when `fs.inotify.max_user_watches` is used up.
    func refuse(_ folders: [URL]) { state.withLock { $0.refused = Set(folders.map(\.standardizedFileURL.path)) } }
    func allowAll() { state.withLock { $0.refused = [] } }

    func send(_ event: WatchEvent) { continuation.yield([event]) }
    /// Delivers `events` as one read of the kernel queue would.
    func send(batch events: [WatchEvent]) { continuation.yield(events) }

    func watch(directory: URL) throws {
        let path = directory.standardizedFileURL.path
        try state.withLock { state in
            if state.refused.contains(path) { throw InotifyWatcher.limitError(errno: ENOSPC, directory: directory) }
            state.watched.insert(path)
        }
    }

    func unwatch(directory: URL) { _ = state.withLock { $0.watched.remove(directory.standardizedFileURL.path) } }
    var watchedDirectories: [URL] { state.withLock { $0.watched.map { URL(fileURLWithPath: $0, isDirectory: true) } } }
    func isWatching(_ directory: URL) -> Bool { state.withLock { $0.watched.contains(directory.standardizedFileURL.path) } }
    func close() { continuation.finish() }
}

/// A workspace with one tracked database (a sidecar on disk; the database file itself is only
/// needed by tests that look at it), and the parts of a loop around it.
struct SyncLoopFixture {
    let directory: TemporaryDirectory
    let workspace: Workspace
    let database: URL
    let sidecars = SidecarStore()
    let pusher = RecordingPusher()
    let clock = ManualClock()
    let settle = Duration.milliseconds(300)
    let maxWait = Duration.seconds(10)

    init(state: SyncState = .clean, deviceID: String = "emulator-5554") async throws {
        directory = try TemporaryDirectory("sync-loop")
        workspace = Workspace(root: directory.url)
        let remote = RemoteDatabase(platform: .android, deviceID: deviceID, appID: "com.example.notes",
                                    path: "/data/data/com.example.notes/databases/notes.db", access: .runAs)
        database = try workspace.localURL(for: remote)
        var sidecar = Sidecar(origin: .init(platform: .android, deviceID: deviceID, deviceModel: nil, appID: remote.appID,
                                            remotePath: remote.path, access: .runAs),
                              pulledAt: Date(), fingerprintAtPull: DeviceFingerprint(mainHash: "m"), contentHash: "base")
        sidecar.state = state
        // Written as another process would: this store has no record of it.
        try await SidecarStore().write(sidecar, forDatabase: database)
    }

    func dependencies(writerActive: @escaping @Sendable () -> Bool = { false }) -> DatabaseSync.Dependencies {
        DatabaseSync.Dependencies(
            pusher: pusher, sidecars: sidecars, workspace: workspace, isWriterActive: { _ in writerActive() },
            clock: clock, settleWindow: settle, settleMaxWait: maxWait,
            retry: RetryPolicy(maxAttempts: 5, initialDelay: .milliseconds(250), maxDelay: .seconds(30)),
            logger: Logger(label: "test"))
    }

    /// A running loop for the database.
    func startSync(writerActive: @escaping @Sendable () -> Bool = { false },
                   onForgotten: @escaping @Sendable (URL) async -> Void = { _ in },
                   importer: RecordingImporter? = nil) throws -> DatabaseSync {
        let sync = try makeSync(writerActive: writerActive, onForgotten: onForgotten, importer: importer)
        Task { await sync.run() }
        return sync
    }

    /// A loop for the database that does not run yet (inputs sent to it wait in its queue).
    func makeSync(writerActive: @escaping @Sendable () -> Bool = { false },
                  onForgotten: @escaping @Sendable (URL) async -> Void = { _ in },
                  importer: RecordingImporter? = nil) throws -> DatabaseSync {
        var dependencies = dependencies(writerActive: writerActive)
        dependencies.onForgotten = onForgotten
        dependencies.importer = importer
        return DatabaseSync(database: database, sidecar: try SidecarStore.load(forDatabase: database), dependencies: dependencies)
    }

    /// Waits until the code under test sleeps on the manual clock (it armed a timer), then moves
    /// time on by `duration`.
    func advance(by duration: Duration, once sleepers: Int = 1) async throws {
        try await waitUntil("\(sleepers) timer(s) armed") { clock.sleepingDeadlines.count >= sleepers }
        clock.advance(by: duration)
    }

    /// Writes the sidecar as another process (`flippio resolve`, `pull`) would.
    func writeSidecarFromAnotherProcess(_ change: (inout Sidecar) -> Void) async throws {
        var sidecar = try SidecarStore.load(forDatabase: database)
        change(&sidecar)
        try await SidecarStore().write(sidecar, forDatabase: database)
    }
}
