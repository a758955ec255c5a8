import Foundation

extension DatabaseSync {
    /// The sync state of one database, as a pure value: events in, actions out, no I/O, no time.
    ///
    /// ```
    ///   clean ──change──▶ dirty ──settled──▶ pushing ──pushed/unchanged──▶ clean
    ///                      ▲  └─writer busy─┘    │ ├─conflict──▶ conflict (until another process resolves it)
    ///                      └─────change──────────┘ ├─invalid───▶ invalid  (until the next edit)
    ///                       (after the push ends)  ├─device gone▶ waiting-for-device ──device back──▶ pushing
    ///                                              ├─transient──▶ failed (retrying) ──retry due──▶ pushing
    ///                                              └─permanent──▶ failed (until the next edit)
    /// ```
    ///
    /// Following the device (DESIGN.md §6): the app changed its copy (a device-side event or a
    /// fingerprint poll, settled by the loop) → ``Event/deviceChanged``:
    ///
    /// ```
    ///   clean ──device changed──▶ bringing-in ──brought in / same content / nothing new──▶ clean
    ///                                   ├──local copy changed too──▶ pushing (the push merges)
    ///                                   └──transient failure──▶ clean, bring-in retried after backoff
    ///   any other state: remembered (one bit), looked at once the database is clean again
    /// ```
    ///
    /// A change seen while pushing is remembered (one bit, like syncthing's 1-buffered channel) and
    /// starts a new settle when the push ends, so a burst during a push costs at most one more push.
    ///
    /// The sidecar is the state shared with other processes: when one of them changes it (`flippio
    /// resolve`, `pull`, `push`), the agent adopts it (``Event/sidecarAdopted(_:)``). Adopting the end
    /// of a conflict or a failure checks the database at once: whatever the user did, the next
    /// edit is pushed.
    struct StateMachine: Sendable, Equatable {
        enum Event: Sendable, Equatable {
            /// The watcher saw the database (or its `-wal`/`-journal`) change.
            case fileChanged
            /// The settle window passed; `writerActive` if another process holds a write transaction,
            /// `overdue` if the upper bound of the settle wait passed.
            case settled(writerActive: Bool, overdue: Bool)
            /// Start-up resume, `flippio push` through the agent, an overflow or unwatched-folder rescan.
            case pushRequested
            case pushFinished(PushPipeline.Outcome)
            /// The device tracker's view of this database's device: listed as ready or not.
            case deviceListed(ready: Bool)
            /// The backoff delay of a transient failure passed.
            case retryDue
            /// Another process changed the sidecar; its state is now this one.
            case sidecarAdopted(SyncState)
            /// The device reported (or a poll found) a change to the app's copy, settled.
            case deviceChanged
            case bringInFinished(PushPipeline.BringInOutcome)
        }

        enum Action: Sendable, Equatable {
            /// Write the current state to the sidecar (with the failure, if any).
            case persist
            /// (Re)start the settle timer.
            case settle
            case startPush
            /// Record the failure in the sidecar and log it; retry after the backoff delay for
            /// `retryAttempt` when it is set.
            case recordFailure(FlippioError, retryAttempt: Int?)
            /// Look at the device again after the backoff delay for `attempt`: it is listed as ready,
            /// yet the push said it was unavailable (a passing failure), so no plug event will come.
            case recheckDevice(attempt: Int)
            /// Cancel pending settle, retry and recheck timers.
            case cancelTimers
            /// The database is no longer tracked (its sidecar is gone): stop.
            case stop
            /// Bring the device's change into the local copy (``PushPipeline/bringIn(_:)``).
            case startBringIn
            /// A bring-in failed: log it; look again after the backoff delay for `retryAttempt`
            /// when it is set (a busy local file, a timeout), else at the next device change.
            case bringInFailed(FlippioError, retryAttempt: Int?)
        }

        private(set) var state: SyncState
        /// A change arrived during the push in flight.
        private(set) var changedDuringPush = false
        /// Whether a failed push is retried by itself (transient) or waits for the user (permanent).
        private(set) var retrying = false
        /// Consecutive transient failures, for the backoff delay.
        private(set) var failures = 0
        /// Consecutive "device unavailable" failures while the tracker listed the device as ready.
        private(set) var unexpectedDeviceFailures = 0
        /// The tracker's last word on the device (nil before it said anything).
        private(set) var deviceListedReady: Bool?
        /// The device changed while the database was not clean (a push or bring-in in flight, a
        /// local edit settling, a failure): look at it as soon as it is clean again.
        private(set) var deviceChangedDuringWork = false
        /// Consecutive transient bring-in failures (backoff), and whether a retry is due.
        private(set) var bringInFailures = 0
        private(set) var bringInRetrying = false

        init(state: SyncState = .clean) {
            self.state = Self.resumable(state)
        }

        /// Where a database starts after a restart: a conflict or an invalid copy stay as they are;
        /// everything else starts clean, and the start-up push request finds out what differs.
        static func resumable(_ state: SyncState) -> SyncState {
            switch state {
            case .conflict, .invalid: state
            case .clean, .dirty, .settling, .pushing, .bringingIn, .waitingForDevice, .failed: .clean
            }
        }

        var isPushing: Bool { state == .pushing }

        mutating func handle(_ event: Event) -> [Action] {
            switch (state, event) {
            // A conflict ends only when another process resolves it (``Event/sidecarAdopted(_:)``);
            // edits meanwhile stay local.
            case (.conflict, .fileChanged), (.conflict, .settled), (.conflict, .pushRequested),
                 (.conflict, .retryDue):
                return []

            case (.pushing, .fileChanged), (.bringingIn, .fileChanged), (.bringingIn, .pushRequested):
                // During a bring-in, the rows it writes come back as a file change too: the push
                // that follows recognises them by content (``Sidecar/localWrittenByMerge``).
                changedDuringPush = true
                return []
            case (.dirty, .fileChanged):
                return [.settle]
            case (_, .fileChanged):
                state = .dirty
                retrying = false
                return [.cancelTimers, .persist, .settle]

            case (.dirty, .settled(let writerActive, let overdue)):
                if writerActive && !overdue { return [.settle] }
                return startPush()
            case (_, .settled):
                return []

            case (.pushing, .pushRequested):
                return []
            case (_, .pushRequested):
                return [.cancelTimers] + startPush()

            case (.pushing, .pushFinished(let outcome)):
                let actions = finish(outcome)
                return lookAtDeviceIfChanged(actions)
            case (_, .pushFinished):
                return []

            case (_, .deviceListed(let ready)):
                let wasReady = deviceListedReady
                deviceListedReady = ready
                if ready && wasReady != true && state == .waitingForDevice {
                    unexpectedDeviceFailures = 0
                    return startPush()
                }
                return []

            case (.waitingForDevice, .retryDue):
                return startPush()
            case (.clean, .retryDue) where bringInRetrying:
                return startBringIn()
            case (.failed, .retryDue) where retrying:
                return startPush()
            case (_, .retryDue):
                return []

            case (let current, .sidecarAdopted(let adopted)):
                return adopt(adopted, from: current)

            case (.clean, .deviceChanged):
                return startBringIn()
            case (_, .deviceChanged):
                // Remembered until the database is clean again: a push that finds the local
                // content equal to the device's last known one never looks at the device, so
                // the change would otherwise be lost (dirty because a tool only read the copy).
                deviceChangedDuringWork = true
                return []

            case (.bringingIn, .bringInFinished(let outcome)):
                return finishBringIn(outcome)
            case (_, .bringInFinished):
                return []
            }
        }

        private mutating func startBringIn() -> [Action] {
            state = .bringingIn
            deviceChangedDuringWork = false
            bringInRetrying = false
            return [.startBringIn]
        }

        /// After a push, a device change seen meanwhile is looked at
        /// (our own push's rename shows up as one: the bring-in then finds the fingerprint it recorded).
        private mutating func lookAtDeviceIfChanged(_ actions: [Action]) -> [Action] {
            guard deviceChangedDuringWork, state == .clean || state == .dirty else { return actions }
            // Dirty again already (a tool that keeps touching the copy would otherwise starve the
            // device's change): bring it in first; the bring-in snapshots the copy and hands a real
            // edit to a push, and the local change is looked at again when it ends.
            if state == .dirty { changedDuringPush = true }
            return actions + startBringIn()
        }

        private mutating func finishBringIn(_ outcome: PushPipeline.BringInOutcome) -> [Action] {
            let changed = changedDuringPush
            changedDuringPush = false
            var actions: [Action] = []
            switch outcome {
            case .unchanged, .sameContent, .broughtIn:
                bringInFailures = 0
                state = .clean
            case .localChanged:
                // Both sides changed: the push path pulls the device again and merges row by row.
                bringInFailures = 0
                return startPush()
            case .forgotten:
                return [.cancelTimers, .stop]
            case .failed(let error):
                state = .clean
                if error.isRetryable && !Self.meansDeviceUnavailable(error.code) {
                    bringInFailures += 1
                    bringInRetrying = true
                    actions.append(.bringInFailed(error, retryAttempt: bringInFailures))
                } else {
                    // A device that went away is looked at again when its watcher starts again.
                    actions.append(.bringInFailed(error, retryAttempt: nil))
                }
            }
            if changed {
                bringInRetrying = false
                return actions + handle(.fileChanged)
            }
            if deviceChangedDuringWork { return actions + startBringIn() }
            return actions
        }

        private mutating func startPush() -> [Action] {
            state = .pushing
            changedDuringPush = false
            return [.startPush]
        }

        private mutating func adopt(_ adopted: SyncState, from current: SyncState) -> [Action] {
            switch (current, adopted) {
            case (.pushing, _), (.bringingIn, _):
                // The push (or bring-in) in flight holds the database's lock: whatever it finds wins, and the
                // outcome arrives as ``Event/pushFinished(_:)``.
                return []
            case (_, .conflict):
                state = .conflict
                return [.cancelTimers]
            case (.conflict, _), (.failed, _), (.waitingForDevice, _), (.invalid, _):
                // Resolved, re-pulled or pushed by the user: look at the copy now.
                failures = 0
                unexpectedDeviceFailures = 0
                return [.cancelTimers] + startPush()
            case (.clean, _), (.dirty, _), (.settling, _):
                return []
            }
        }

        private mutating func finish(_ outcome: PushPipeline.Outcome) -> [Action] {
            let changed = changedDuringPush
            changedDuringPush = false
            switch outcome {
            case .pushed, .unchanged:
                failures = 0
                unexpectedDeviceFailures = 0
                retrying = false
                if changed {
                    state = .dirty
                    return [.persist, .settle]
                }
                state = .clean
                return []
            case .conflict:
                state = .conflict
                return []
            case .forgotten:
                return [.cancelTimers, .stop]
            case .invalid:
                state = .invalid
                return changed ? handle(.fileChanged) : []
            case .failed(let error):
                if Self.meansDeviceUnavailable(error.code) {
                    state = .waitingForDevice
                    retrying = false
                    var actions: [Action] = [.recordFailure(error, retryAttempt: nil)]
                    if deviceListedReady == true {
                        unexpectedDeviceFailures += 1
                        actions.append(.recheckDevice(attempt: unexpectedDeviceFailures))
                    }
                    return actions
                }
                state = .failed
                if error.isRetryable {
                    failures += 1
                    retrying = true
                    return [.recordFailure(error, retryAttempt: failures)]
                }
                retrying = false
                let record = Action.recordFailure(error, retryAttempt: nil)
                return changed ? [record] + handle(.fileChanged) : [record]
            }
        }

        /// Failures that end when the device comes back, not after a delay.
        static func meansDeviceUnavailable(_ code: FlippioError.Code) -> Bool {
            [.deviceOffline, .deviceNotFound, .deviceUnauthorized, .deviceConnecting,
             .iosDeviceLocked, .iosNotPaired, .usbmuxdUnavailable].contains(code)
        }
    }
}
