@testable import FlippioEngine
import Foundation
import Testing

/// The per-database state machine, fed events, checked by the actions it asks for. No I/O, no clock.
@Suite("DatabaseSync.StateMachine")
struct DatabaseSyncStateMachineTests {
    typealias Machine = DatabaseSync.StateMachine
    let record = Sidecar.PushRecord(at: Date(timeIntervalSince1970: 0), contentHash: "h", bytes: 1, durationMilliseconds: 1)

    @Test func aChangeSettlesThenPushesThenIsClean() {
        var machine = Machine()
        #expect(machine.handle(.changed) == [.persist(.dirty), .settle])
        #expect(machine.state == .settling)
        #expect(machine.handle(.changed) == [.settle], "more events only restart the quiet period")
        #expect(machine.handle(.settled(writerActive: false, overdue: false)) == [.startPush])
        #expect(machine.handle(.pushFinished(.pushed(record))) == [])
        #expect(machine.state == .clean)
    }

    @Test func aBusyWriterDelaysThePushUntilTheUpperBound() {
        var machine = Machine()
        _ = machine.handle(.changed)
        #expect(machine.handle(.settled(writerActive: true, overdue: false)) == [.settle])
        #expect(machine.state == .settling)
        #expect(machine.handle(.settled(writerActive: true, overdue: true)) == [.startPush], "a file that never goes quiet is pushed anyway")
    }

    @Test func changesDuringAPushQueueExactlyOneMoreSettle() {
        var machine = Machine()
        _ = machine.handle(.changed)
        _ = machine.handle(.settled(writerActive: false, overdue: false))
        for _ in 0..<100 { #expect(machine.handle(.changed) == []) }
        #expect(machine.state == .pushing(changedSince: true))
        #expect(machine.handle(.pushFinished(.pushed(record))) == [.persist(.dirty), .settle])
        #expect(machine.state == .settling)
    }

    @Test func aConflictIgnoresEverythingButReset() {
        var machine = Machine()
        _ = machine.handle(.pushRequested)
        _ = machine.handle(.pushFinished(.conflict(copy: URL(fileURLWithPath: "/x.device.db"))))
        #expect(machine.state == .conflict)
        for event: Machine.Event in [.changed, .settled(writerActive: false, overdue: true), .pushRequested, .deviceReady, .retryDue] {
            #expect(machine.handle(event) == [])
            #expect(machine.state == .conflict)
        }
        _ = machine.handle(.reset)
        #expect(machine.state == .clean)
    }

    @Test func aMissingDeviceWaitsForItsReturnWithoutATimer() {
        var machine = Machine()
        _ = machine.handle(.pushRequested)
        let offline = FlippioError(.deviceOffline, "offline")
        #expect(machine.handle(.pushFinished(.failed(offline))) == [.recordFailure(offline, waitingForDevice: true, retryAttempt: nil)])
        #expect(machine.state == .waitingForDevice)
        #expect(machine.handle(.retryDue) == [], "no timer-driven retries while the device is away")
        #expect(machine.handle(.deviceReady) == [.startPush])
    }

    @Test func transientFailuresRetryWithGrowingAttemptsAndPermanentOnesWait() {
        var machine = Machine()
        _ = machine.handle(.pushRequested)
        let timeout = FlippioError(.timedOut, "slow")
        #expect(machine.handle(.pushFinished(.failed(timeout))) == [.recordFailure(timeout, waitingForDevice: false, retryAttempt: 1)])
        #expect(machine.handle(.retryDue) == [.startPush])
        #expect(machine.handle(.pushFinished(.failed(timeout))) == [.recordFailure(timeout, waitingForDevice: false, retryAttempt: 2)])
        _ = machine.handle(.retryDue)
        #expect(machine.handle(.pushFinished(.pushed(record))) == [])
        #expect(machine.failures == 0, "success resets the backoff")

        _ = machine.handle(.pushRequested)
        let notDebuggable = FlippioError(.appNotDebuggable, "no")
        #expect(machine.handle(.pushFinished(.failed(notDebuggable))) == [.recordFailure(notDebuggable, waitingForDevice: false, retryAttempt: nil)])
        #expect(machine.state == .failed(retrying: false))
        #expect(machine.handle(.retryDue) == [], "a permanent failure is tried once")
        #expect(machine.handle(.changed) == [.persist(.dirty), .settle], "a new edit is the user acting")
    }

    @Test func anInvalidCopyIsNotPushedUntilItChanges() {
        var machine = Machine(resumingFrom: .invalid)
        #expect(machine.state == .invalid)
        #expect(machine.handle(.deviceReady) == [])
        #expect(machine.handle(.changed) == [.persist(.dirty), .settle])
    }

    @Test func resumingFromASidecarKeepsConflictsAndRechecksTheRest() {
        #expect(Machine(resumingFrom: .conflict).state == .conflict)
        for state: Sidecar.SyncState in [.clean, .dirty, .settling, .pushing, .failed, .waitingForDevice] {
            var machine = Machine(resumingFrom: state)
            #expect(machine.handle(.pushRequested) == [.startPush], "\(state) is re-checked at start-up")
        }
    }
}
