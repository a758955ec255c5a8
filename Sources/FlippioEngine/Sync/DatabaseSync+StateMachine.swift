import Foundation

extension DatabaseSync {
    /// The sync state of one database, as a pure value: events in, actions out, no I/O.
    ///
    /// ```
    ///   clean ──change──▶ settling ──settled──▶ pushing ──pushed/unchanged──▶ clean
    ///                        ▲   └─writer busy─┘    │ ├─conflict──▶ conflict (until `resolve`)
    ///                        └──────change──────────┘ ├─invalid───▶ invalid  (until the next edit)
    ///                         (after the push ends)   ├─device gone▶ waiting-for-device ──device back──▶ pushing
    ///                                                 ├─transient──▶ failed(retry at T) ──T──▶ pushing
    ///                                                 └─permanent──▶ failed (until the user acts)
    /// ```
    ///
    /// A change seen while pushing is remembered (one bit, like syncthing's 1-buffered channel) and
    /// starts a new settle when the push ends, so a burst during a push costs at most one more push.
    struct StateMachine: Sendable, Equatable {
        enum State: Sendable, Equatable {
            case clean
            case settling
            case pushing(changedSince: Bool)
            case conflict
            case waitingForDevice
            /// `retrying` is false for permanent failures: nothing happens until the user acts.
            case failed(retrying: Bool)
            case invalid
        }

        enum Event: Sendable, Equatable {
            /// The watcher saw the database (or its `-wal`/`-journal`) change.
            case changed
            /// The settle window passed; `writerActive` if another process holds a write transaction,
            /// `overdue` if the upper bound of the settle wait passed.
            case settled(writerActive: Bool, overdue: Bool)
            /// Start-up resume, `flippio push` through the agent, or an overflow rescan.
            case pushRequested
            case pushFinished(PushPipeline.Outcome)
            /// The device of this database is connected and authorized again.
            case deviceReady
            /// The backoff delay of a transient failure passed.
            case retryDue
            /// The user resolved a conflict (or re-pulled): start from clean.
            case reset
        }

        enum Action: Sendable, Equatable {
            /// Persist this state (with no error) in the sidecar.
            case persist(Sidecar.SyncState)
            /// (Re)start the settle timer.
            case settle
            case startPush
            /// Persist the failure, and retry after the backoff delay for `attempt` if `retrying`.
            case recordFailure(FlippioError, waitingForDevice: Bool, retryAttempt: Int?)
        }

        private(set) var state: State
        /// Consecutive transient failures, for the backoff delay.
        private(set) var failures = 0

        init(state: State = .clean) {
            self.state = state
        }

        /// The state machine for a database whose sidecar says `sidecarState`.
        init(resumingFrom sidecarState: Sidecar.SyncState) {
            switch sidecarState {
            case .conflict: state = .conflict
            case .invalid: state = .invalid
            default: state = .clean  // start-up sends `.pushRequested`, which finds out
            }
        }

        mutating func handle(_ event: Event) -> [Action] {
            switch (state, event) {
            case (.conflict, .changed), (.conflict, .settled), (.conflict, .pushRequested),
                 (.conflict, .deviceReady), (.conflict, .retryDue):
                // Only `resolve` ends a conflict; edits meanwhile stay local.
                return []

            case (.pushing, .changed):
                state = .pushing(changedSince: true)
                return []
            case (.settling, .changed):
                return [.settle]
            case (_, .changed):
                state = .settling
                return [.persist(.dirty), .settle]

            case (.settling, .settled(let writerActive, let overdue)):
                if writerActive && !overdue { return [.settle] }
                state = .pushing(changedSince: false)
                return [.startPush]
            case (_, .settled):
                return []

            case (.pushing, .pushRequested), (.settling, .pushRequested):
                return []
            case (_, .pushRequested):
                state = .pushing(changedSince: false)
                return [.startPush]

            case (.pushing(let changedSince), .pushFinished(let outcome)):
                return finish(outcome, changedSince: changedSince)
            case (_, .pushFinished):
                return []

            case (.waitingForDevice, .deviceReady), (.failed(retrying: true), .retryDue):
                state = .pushing(changedSince: false)
                return [.startPush]
            case (_, .deviceReady), (_, .retryDue):
                return []

            case (_, .reset):
                state = .clean
                failures = 0
                return []
            }
        }

        private mutating func finish(_ outcome: PushPipeline.Outcome, changedSince: Bool) -> [Action] {
            switch outcome {
            case .pushed, .unchanged:
                failures = 0
                if changedSince {
                    state = .settling
                    return [.persist(.dirty), .settle]
                }
                state = .clean
                return []
            case .conflict:
                state = .conflict
                return []
            case .invalid:
                state = .invalid
                return changedSince ? handle(.changed) : []
            case .failed(let error):
                if Self.meansDeviceUnavailable(error.code) {
                    state = .waitingForDevice
                    return [.recordFailure(error, waitingForDevice: true, retryAttempt: nil)]
                }
                if error.isRetryable {
                    failures += 1
                    state = .failed(retrying: true)
                    return [.recordFailure(error, waitingForDevice: false, retryAttempt: failures)]
                }
                state = .failed(retrying: false)
                if changedSince { return [.recordFailure(error, waitingForDevice: false, retryAttempt: nil)] + handle(.changed) }
                return [.recordFailure(error, waitingForDevice: false, retryAttempt: nil)]
            }
        }

        /// Failures that end when the device comes back, not after a delay.
        static func meansDeviceUnavailable(_ code: FlippioError.Code) -> Bool {
            [.deviceOffline, .deviceNotFound, .deviceUnauthorized, .deviceConnecting,
             .iosDeviceLocked, .iosNotPaired, .usbmuxdUnavailable].contains(code)
        }
    }
}
