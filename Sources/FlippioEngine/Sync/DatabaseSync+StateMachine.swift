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

        init(state: SyncState = .clean) {
            self.state = Self.resumable(state)
        }

        /// Where a database starts after a restart: a conflict or an invalid copy stay as they are;
        /// everything else starts clean, and the start-up push request finds out what differs.
        static func resumable(_ state: SyncState) -> SyncState {
            switch state {
            case .conflict, .invalid: state
            case .clean, .dirty, .settling, .pushing, .waitingForDevice, .failed: .clean
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

            case (.pushing, .fileChanged):
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
                return finish(outcome)
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
            case (.failed, .retryDue) where retrying:
                return startPush()
            case (_, .retryDue):
                return []

            case (let current, .sidecarAdopted(let adopted)):
                return adopt(adopted, from: current)
            }
        }

        private mutating func startPush() -> [Action] {
            state = .pushing
            changedDuringPush = false
            return [.startPush]
        }

        private mutating func adopt(_ adopted: SyncState, from current: SyncState) -> [Action] {
            switch (current, adopted) {
            case (.pushing, _):
                // The push in flight holds the database's lock: whatever it finds wins, and the
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
