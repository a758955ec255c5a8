@testable import FlippioEngine
import Foundation
import Synchronization
import Testing
import TestSupport

/// One database's loop (``DatabaseSync``) with a recording pusher and a manual clock: inputs in,
/// pushes and sidecar writes out, no real time.
@Suite("DatabaseSync loop", .serialized)
struct DatabaseSyncLoopTests {
    @Test func aBurstOfChangesBecomesOnePushAfterTheQuietPeriod() async throws {
        let fixture = try await SyncLoopFixture()
        let sync = try fixture.startSync()
        for _ in 0..<50 { sync.send(.fileChanged) }
        // How many of the 50 were queued depends on how fast the loop takes them (adjacent ones
        // waiting together are coalesced): wait for whatever was queued.
        try await waitUntil("every queued change handled") { await sync.inputsHandled == sync.inputsSent }
        try await fixture.advance(by: .milliseconds(299), once: 2)  // the settle and the overdue timers
        #expect(fixture.clock.sleepingDeadlines.count == 2, "neither timer is due yet")
        #expect(fixture.pusher.count == 0, "still inside the quiet period")
        fixture.clock.advance(by: .milliseconds(1))
        try await waitUntil("one push") { fixture.pusher.count == 1 }
        try await waitUntil("clean") { await sync.state == .clean }
        #expect(fixture.pusher.count == 1)
    }

    @Test func changesQueuedTogetherAreOneInput_andOnePushAfterTheQuietPeriod() async throws {
        let fixture = try await SyncLoopFixture()
        let sync = try fixture.makeSync()
        for _ in 0..<1000 { sync.send(.fileChanged) }
        #expect(sync.inputsSent == 1, "a change queued behind a change not taken yet adds nothing")
        Task { await sync.run() }
        try await waitUntil("the change handled") { await sync.inputsHandled == 1 }
        #expect(await sync.state == .dirty)
        try await fixture.advance(by: .milliseconds(299), once: 2)  // the settle and the overdue timers
        #expect(fixture.pusher.count == 0, "still inside the quiet period")
        fixture.clock.advance(by: .milliseconds(1))
        try await waitUntil("one push") { fixture.pusher.count == 1 }
        try await waitUntil("clean") { await sync.state == .clean }
        // Taken, it no longer absorbs the next change: that one is handled, and pushed.
        sync.send(.fileChanged)
        try await waitUntil("the next change handled") { await sync.inputsHandled == sync.inputsSent }
        #expect(await sync.state == .dirty)
        try await fixture.advance(by: fixture.settle, once: 2)
        try await waitUntil("a second push") { fixture.pusher.count == 2 }
        #expect(fixture.pusher.count == 2)
    }

    @Test func aChangeQueuedAfterAResolveIsNotCoalescedIntoOneBefore_andIsPushed() async throws {
        let fixture = try await SyncLoopFixture(state: .conflict)
        let sync = try fixture.makeSync()
        sync.send(.fileChanged)  // during the conflict: stays local
        try await fixture.writeSidecarFromAnotherProcess { $0.state = .clean; $0.conflictCopy = nil }
        sync.send(.sidecarChanged)  // `flippio resolve`: the loop pushes the copy
        sync.send(.fileChanged)  // an edit after the resolve, queued behind it: not the one before
        sync.send(.fileChanged)  // next to the one before: coalesced
        #expect(sync.inputsSent == 3)
        Task { await sync.run() }
        try await waitUntil("the resolve pushes") { fixture.pusher.count >= 1 }
        try await waitUntil("dirty again: the edit came during that push") { await sync.state == .dirty }
        try await fixture.advance(by: fixture.settle, once: 2)
        try await waitUntil("the edit after the resolve is pushed") { fixture.pusher.count == 2 }
    }

    @Test func aChangeInsideTheQuietPeriodMovesItsEnd_withoutANewTimer() async throws {
        let fixture = try await SyncLoopFixture()
        let sync = try fixture.startSync()
        let start = fixture.clock.now
        sync.send(.fileChanged)
        try await fixture.advance(by: .milliseconds(200), once: 2)  // the settle and the overdue timers
        sync.send(.fileChanged)
        try await waitUntil("both changes handled") { await sync.inputsHandled == 2 }
        #expect(fixture.clock.sleepingDeadlines.first == start.advanced(by: fixture.settle),
                "the running settle timer is kept, not replaced by one per change")
        fixture.clock.advance(by: .milliseconds(100))  // the first timer fires: 100 ms after the last change
        try await waitUntil("it sleeps for the rest of the quiet period") {
            fixture.clock.sleepingDeadlines.first == start.advanced(by: .milliseconds(500))
        }
        #expect(fixture.pusher.count == 0, "not quiet for a whole window yet")
        fixture.clock.advance(by: .milliseconds(200))
        try await waitUntil("pushed a window after the last change") { fixture.pusher.count == 1 }
    }

    @Test func check_returnsOnceThePushItStartedEnded() async throws {
        let fixture = try await SyncLoopFixture(state: .dirty)
        let sync = try fixture.startSync()
        fixture.pusher.hold()
        let checked = Task { () -> (SyncState, Bool) in
            await sync.check()
            return (await sync.state, await sync.isPushing)
        }
        try await waitUntil("the check pushes") { fixture.pusher.count == 1 }
        fixture.pusher.release()
        let (state, pushing) = await checked.value
        #expect(state == .clean && !pushing, "not while its push was held")
        #expect(fixture.pusher.count == 1)
    }

    @Test func check_endsWhenTheLoopStops_andAtOnceOnAStoppedLoop() async throws {
        let fixture = try await SyncLoopFixture()
        let sync = try fixture.startSync()
        fixture.pusher.hold()
        let checked = Task { await sync.check() }
        try await waitUntil("the check pushes") { fixture.pusher.count == 1 }
        await sync.abandon()
        await checked.value  // would hang if the stop left the check waiting
        fixture.pusher.release()
        await sync.check()
        #expect(fixture.pusher.count == 1, "a stopped loop checks nothing")
    }

    @Test func aChangeIsRecordedAsDirtyInTheSidecar() async throws {
        let fixture = try await SyncLoopFixture()
        let sync = try fixture.startSync()
        sync.send(.fileChanged)
        try await waitUntil("the sidecar says dirty") { (try? SidecarStore.load(forDatabase: fixture.database).state) == .dirty }
    }

    @Test func aBusyWriterDelaysThePushUntilTheUpperBound() async throws {
        let fixture = try await SyncLoopFixture()
        let sync = try fixture.startSync(writerActive: { true })
        sync.send(.fileChanged)
        try await fixture.advance(by: fixture.settle, once: 2)
        // Each quiet period ends with the writer still busy: settle again, no push.
        for _ in 0..<3 {
            try await fixture.advance(by: fixture.settle, once: 2)
        }
        #expect(fixture.pusher.count == 0)
        // Past the upper bound: pushed at once, even though the settle timer keeps being re-armed
        // (a file that never goes quiet must not wait forever).
        try await fixture.advance(by: fixture.maxWait, once: 2)
        try await waitUntil("pushed although the writer never went quiet") { fixture.pusher.count == 1 }
    }

    @Test func aChangeDuringAPushQueuesOneMorePush() async throws {
        let fixture = try await SyncLoopFixture()
        fixture.pusher.hold()
        let sync = try fixture.startSync()
        sync.send(.pushRequested)
        try await waitUntil("pushing") { fixture.pusher.count == 1 }
        for _ in 0..<10 { sync.send(.fileChanged) }
        try await waitUntil("the changes during the push handled") { await sync.inputsHandled == sync.inputsSent }
        fixture.pusher.release()
        try await waitUntil("dirty again") { await sync.state == .dirty }
        try await fixture.advance(by: fixture.settle, once: 2)
        try await waitUntil("second push") { fixture.pusher.count == 2 }
        try await waitUntil("clean") { await sync.state == .clean }
    }

    @Test func aTransientFailureIsRetriedAfterTheBackoff_andRecorded() async throws {
        let fixture = try await SyncLoopFixture()
        fixture.pusher.script(.failed(FlippioError(.timedOut, "adb timed out")))
        let sync = try fixture.startSync()
        sync.send(.pushRequested)
        try await waitUntil("failed") { await sync.state == .failed }
        try await waitUntil("the failure is in the sidecar") {
            let sidecar = try? SidecarStore.load(forDatabase: fixture.database)
            return sidecar?.state == .failed && sidecar?.lastError?.code == .timedOut && sidecar?.nextRetryAt != nil
        }
        try await fixture.advance(by: .seconds(1))  // the first backoff is at most 250 ms
        try await waitUntil("retried") { fixture.pusher.count == 2 }
        try await waitUntil("clean") { await sync.state == .clean }
    }

    @Test func aGoneDeviceIsPushedWhenItIsListedAgain_withNoTimerMeanwhile() async throws {
        let fixture = try await SyncLoopFixture()
        fixture.pusher.script(.failed(FlippioError(.deviceNotFound, "device 'emulator-5554' not found")))
        let sync = try fixture.startSync()
        sync.send(.deviceListed(ready: false))
        sync.send(.pushRequested)
        try await waitUntil("waiting for the device") { await sync.state == .waitingForDevice }
        #expect(await sync.armedTimers.isEmpty, "nothing wakes up while the device is gone")
        sync.send(.deviceListed(ready: true))
        try await waitUntil("pushed when it is back") { fixture.pusher.count == 2 }
    }

    // MARK: - Sidecars written by other processes

    @Test func aResolveByAnotherProcessEndsTheConflict_andTheNextEditIsPushed() async throws {
        let fixture = try await SyncLoopFixture()
        fixture.pusher.script(.conflict(copy: URL(fileURLWithPath: "/tmp/notes.device-1.db")))
        let sync = try fixture.startSync()
        sync.send(.pushRequested)
        try await waitUntil("conflict") { await sync.state == .conflict }
        let handled = await sync.inputsHandled
        sync.send(.fileChanged)
        try await waitUntil("the edit handled") { await sync.inputsHandled > handled }
        #expect(fixture.pusher.count == 1, "edits during a conflict stay local")
        #expect(await sync.armedTimers.isEmpty, "no settle timer during a conflict")

        try await fixture.writeSidecarFromAnotherProcess { $0.state = .clean; $0.conflictCopy = nil }
        sync.send(.sidecarChanged)
        try await waitUntil("the loop looks at the copy again") { fixture.pusher.count == 2 }
        try await waitUntil("clean") { await sync.state == .clean }
        sync.send(.fileChanged)
        try await fixture.advance(by: fixture.settle, once: 2)
        try await waitUntil("the next edit is pushed") { fixture.pusher.count == 3 }
    }

    @Test func itsOwnSidecarWritesAreNotAdopted() async throws {
        let fixture = try await SyncLoopFixture()
        let sync = try fixture.startSync()
        sync.send(.fileChanged)
        try await waitUntil("dirty on disk") { (try? SidecarStore.load(forDatabase: fixture.database).state) == .dirty }
        #expect(fixture.sidecars.diskState(forDatabase: fixture.database) == .ownWrite)
        let handled = await sync.inputsHandled
        sync.send(.sidecarChanged)
        try await waitUntil("the sidecar event handled") { await sync.inputsHandled > handled }
        #expect(await sync.state == .dirty)
        #expect(fixture.pusher.count == 0)
    }

    @Test func aForgottenDatabaseStopsAndIsNeverWrittenBack() async throws {
        let fixture = try await SyncLoopFixture()
        let forgotten = Mutex(false)
        let sync = try fixture.startSync(onForgotten: { _ in forgotten.withLock { $0 = true } })
        try FileManager.default.removeItem(at: Sidecar.url(forDatabase: fixture.database))
        sync.send(.sidecarChanged)
        try await waitUntil("forgotten") { forgotten.withLock { $0 } }
        sync.send(.fileChanged)
        await sync.stop()  // returns once any sidecar write in flight has ended
        #expect(!FileManager.default.fileExists(atPath: Sidecar.url(forDatabase: fixture.database).path), "not recreated")
        #expect(fixture.pusher.count == 0)
    }

    @Test func aSidecarWriteNeverPutsBackAnOlderState() async throws {
        let fixture = try await SyncLoopFixture()
        // Another process holds the database's lock (a long pull) while the loop wants to record `dirty`.
        let lock = try fixture.workspace.lock(for: SidecarStore.load(forDatabase: fixture.database).origin.remoteDatabase)
        #expect(try lock.tryAcquire())
        let sync = try fixture.startSync()
        sync.send(.fileChanged)
        try await waitUntil("dirty") { await sync.state == .dirty }
        // Meanwhile that process records a conflict, then lets go.
        try await fixture.writeSidecarFromAnotherProcess { $0.state = .conflict }
        sync.send(.sidecarChanged)
        try await waitUntil("conflict adopted") { await sync.state == .conflict }
        lock.release()
        try await waitUntil("the waiting write ran") { await sync.pendingSidecarWrites == 0 }
        #expect(try SidecarStore.load(forDatabase: fixture.database).state == .conflict, "the waiting write used the state as of its turn")
    }
}
