@testable import FlippioEngine
import Foundation
import Testing

/// The per-database state machine, fed events, checked by the actions it asks for. No I/O, no clock.
@Suite("DatabaseSync.StateMachine")
struct DatabaseSyncStateMachineTests {
    typealias Machine = DatabaseSync.StateMachine
    let record = Sidecar.PushRecord(at: Date(timeIntervalSince1970: 0), contentHash: "h", bytes: 1, durationMilliseconds: 1)
    let offline = FlippioError(.deviceOffline, "offline")
    let timedOut = FlippioError(.timedOut, "timed out")
    let notDebuggable = FlippioError(.appNotDebuggable, "not debuggable")

    /// A machine that has started a push.
    func pushing() -> Machine {
        var machine = Machine()
        _ = machine.handle(.fileChanged)
        _ = machine.handle(.settled(writerActive: false, overdue: false))
        return machine
    }

    @Test func aChangeSettlesThenPushesThenIsClean() {
        var machine = Machine()
        #expect(machine.handle(.fileChanged) == [.cancelTimers, .persist, .settle])
        #expect(machine.state == .dirty)
        #expect(machine.handle(.fileChanged) == [.settle], "more events only restart the quiet period")
        #expect(machine.handle(.settled(writerActive: false, overdue: false)) == [.startPush])
        #expect(machine.state == .pushing)
        #expect(machine.handle(.pushFinished(.pushed(record))) == [])
        #expect(machine.state == .clean)
    }

    @Test func aBusyWriterDelaysThePushUntilTheUpperBound() {
        var machine = Machine()
        _ = machine.handle(.fileChanged)
        #expect(machine.handle(.settled(writerActive: true, overdue: false)) == [.settle])
        #expect(machine.state == .dirty)
        #expect(machine.handle(.settled(writerActive: true, overdue: true)) == [.startPush], "a file that never goes quiet is pushed anyway")
    }

    @Test func changesDuringAPushQueueExactlyOneMoreSettle() {
        var machine = pushing()
        for _ in 0..<100 { #expect(machine.handle(.fileChanged) == []) }
        #expect(machine.changedDuringPush)
        #expect(machine.handle(.pushFinished(.pushed(record))) == [.persist, .settle])
        #expect(machine.state == .dirty)
        #expect(!machine.changedDuringPush)
    }

    @Test func aConflictIgnoresEditsAndPushRequestsUntilTheSidecarSaysItEnded() {
        var machine = pushing()
        #expect(machine.handle(.pushFinished(.conflict(copy: URL(fileURLWithPath: "/w/x.device.db")))) == [])
        #expect(machine.state == .conflict)
        #expect(machine.handle(.fileChanged) == [])
        #expect(machine.handle(.pushRequested) == [])
        #expect(machine.handle(.settled(writerActive: false, overdue: true)) == [])
        #expect(machine.handle(.retryDue) == [])
        #expect(machine.state == .conflict)
        #expect(machine.handle(.sidecarAdopted(.conflict)) == [.cancelTimers], "still in conflict: nothing to do")
        // `flippio resolve` wrote a clean sidecar: look at the copy at once, so the next edit flows again.
        #expect(machine.handle(.sidecarAdopted(.clean)) == [.cancelTimers, .startPush])
        #expect(machine.state == .pushing)
        #expect(machine.handle(.pushFinished(.unchanged)) == [])
        #expect(machine.handle(.fileChanged) == [.cancelTimers, .persist, .settle], "the next edit is pushed")
    }

    @Test func aConflictFoundByAnotherProcessIsAdopted() {
        var machine = Machine()
        #expect(machine.handle(.sidecarAdopted(.conflict)) == [.cancelTimers])
        #expect(machine.state == .conflict)
    }

    @Test func anAdoptedSidecarDuringAPushWaitsForThePushOutcome() {
        var machine = pushing()
        #expect(machine.handle(.sidecarAdopted(.conflict)) == [])
        #expect(machine.state == .pushing)
    }

    @Test func anAdoptedCleanSidecarEndsAFailureOrAWait() {
        var failed = pushing()
        _ = failed.handle(.pushFinished(.failed(notDebuggable)))
        #expect(failed.state == .failed)
        #expect(failed.handle(.sidecarAdopted(.clean)) == [.cancelTimers, .startPush])

        var waiting = pushing()
        _ = waiting.handle(.pushFinished(.failed(offline)))
        #expect(waiting.handle(.sidecarAdopted(.clean)) == [.cancelTimers, .startPush])

        var clean = Machine()
        #expect(clean.handle(.sidecarAdopted(.clean)) == [], "our own kind of state: nothing to look at")
    }

    @Test func anInvalidCopyWaitsForTheNextEdit() {
        var machine = pushing()
        let error = FlippioError(.notSQLite, "not a database")
        #expect(machine.handle(.pushFinished(.invalid(error))) == [])
        #expect(machine.state == .invalid)
        #expect(machine.handle(.pushRequested) == [.cancelTimers, .startPush], "a restart checks it again")
        _ = machine.handle(.pushFinished(.invalid(error)))
        #expect(machine.handle(.fileChanged) == [.cancelTimers, .persist, .settle])
    }

    @Test func aGoneDeviceWaitsForItsReturnWithoutTimers() {
        var machine = pushing()
        _ = machine.handle(.deviceListed(ready: false))
        #expect(machine.handle(.pushFinished(.failed(offline))) == [.recordFailure(offline, retryAttempt: nil)])
        #expect(machine.state == .waitingForDevice)
        #expect(machine.handle(.deviceListed(ready: false)) == [])
        #expect(machine.handle(.deviceListed(ready: true)) == [.startPush])
        #expect(machine.state == .pushing)
    }

    @Test func aDeviceListedAsReadyThatFailsAnywayIsLookedAtAgainWithGrowingAttempts() {
        var machine = Machine()
        _ = machine.handle(.deviceListed(ready: true))
        _ = machine.handle(.pushRequested)
        #expect(machine.handle(.pushFinished(.failed(offline))) == [.recordFailure(offline, retryAttempt: nil), .recheckDevice(attempt: 1)])
        #expect(machine.handle(.retryDue) == [.startPush])
        #expect(machine.handle(.pushFinished(.failed(offline))) == [.recordFailure(offline, retryAttempt: nil), .recheckDevice(attempt: 2)])
        _ = machine.handle(.retryDue)
        _ = machine.handle(.pushFinished(.pushed(record)))
        #expect(machine.unexpectedDeviceFailures == 0)
    }

    @Test func transientFailuresRetryWithGrowingAttempts_permanentOnesWaitForTheUser() {
        var machine = pushing()
        #expect(machine.handle(.pushFinished(.failed(timedOut))) == [.recordFailure(timedOut, retryAttempt: 1)])
        #expect(machine.state == .failed)
        #expect(machine.handle(.retryDue) == [.startPush])
        #expect(machine.handle(.pushFinished(.failed(timedOut))) == [.recordFailure(timedOut, retryAttempt: 2)])
        _ = machine.handle(.retryDue)
        #expect(machine.handle(.pushFinished(.failed(notDebuggable))) == [.recordFailure(notDebuggable, retryAttempt: nil)])
        #expect(machine.handle(.retryDue) == [], "a permanent failure does not retry by itself")
        #expect(machine.handle(.fileChanged) == [.cancelTimers, .persist, .settle], "the next edit tries again")
    }

    @Test func aPermanentFailureWithAChangeDuringThePushSettlesAgain() {
        var machine = pushing()
        _ = machine.handle(.fileChanged)
        #expect(machine.handle(.pushFinished(.failed(notDebuggable)))
            == [.recordFailure(notDebuggable, retryAttempt: nil), .cancelTimers, .persist, .settle])
        #expect(machine.state == .dirty)
    }

    @Test func aForgottenDatabaseStops() {
        var machine = pushing()
        #expect(machine.handle(.pushFinished(.forgotten)) == [.cancelTimers, .stop])
    }

    @Test func aRestartResumesConflictsAndInvalidCopies_andChecksEverythingElse() {
        for state in SyncState.allCases {
            let machine = Machine(state: state)
            let expected: SyncState = state == .conflict || state == .invalid ? state : .clean
            #expect(machine.state == expected, "resuming \(state)")
        }
    }
}
