import Foundation

/// A tracked database's sync state, with stable names: the one vocabulary of the sidecar, the
/// state machine (``DatabaseSync/StateMachine``) and `flippio status`.
///
/// ```
///   clean ──app wrote──▶ bringing-in ──▶ clean (or pushing, when the local copy changed too)
///   clean ──edit──▶ dirty ──quiet──▶ pushing ──▶ clean
///                                       ├──▶ conflict          (until `flippio resolve`)
///                                       ├──▶ waiting-for-device (until it is back)
///                                       ├──▶ failed            (retried at `nextRetryAt`, or until the user acts)
///                                       └──▶ invalid           (until the next edit)
/// ```
public enum SyncState: String, Sendable, Codable, Equatable, CaseIterable {
    /// Local copy and device agree.
    case clean
    /// A change was seen and not yet pushed (the writer may still be busy: the settle window runs).
    case dirty
    /// Kept for sidecars written by earlier versions: read as ``dirty``.
    case settling
    case pushing
    /// The app changed its copy and the local one did not: its rows are being written into the
    /// local file (``PushPipeline/bringIn(_:)``). Never written to a sidecar; a restart finds `clean`.
    case bringingIn = "bringing-in"
    /// The app changed its copy since the pull or last push; the user must `resolve`.
    case conflict
    /// The device is unplugged, offline or unauthorized; pushed when it is back.
    case waitingForDevice = "waiting-for-device"
    /// The last push failed; see ``Sidecar/lastError`` and ``Sidecar/nextRetryAt``.
    case failed
    /// The local copy is not a database SQLite can read; never pushed until fixed.
    case invalid

    /// States in which the user must do something before the database syncs again.
    public var needsAttention: Bool {
        switch self {
        case .conflict, .failed, .invalid: true
        case .clean, .dirty, .settling, .pushing, .bringingIn, .waitingForDevice: false
        }
    }
}
