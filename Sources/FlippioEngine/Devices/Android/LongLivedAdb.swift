import Foundation
import Subprocess

/// How the agent runs an `adb` that keeps running (`track-devices`, `shell run-as PKG inotifyd`):
/// the settings ``DeviceTracker`` and ``AppChangeStream`` share.
///
/// Such a child is not run through ``ProcessRunner`` (which collects output until the tool exits,
/// under a deadline): it streams for hours. It gets its own process group, so cancelling the task
/// that reads it sends SIGTERM to `adb` and anything it started (and SIGKILL after 500 ms), and
/// the inherited environment plus the bridge's variables, so `ANDROID_ADB_SERVER_PORT` and
/// `ADB_SERVER_SOCKET` reach it as they reach every other `adb` call.
enum LongLivedAdb {
    /// Its own process group, torn down as a whole.
    static var platformOptions: PlatformOptions {
        var options = PlatformOptions()
        options.processGroupID = 0
        options.teardownSequence = [
            .send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: .milliseconds(500)),
        ]
        return options
    }

    /// The inherited environment with `extra` added.
    static func environment(_ extra: [String: String]) -> Environment {
        var updates: [Environment.Key: String?] = [:]
        for (key, value) in extra {
            if let key = Environment.Key(rawValue: key) { updates[key] = value }
        }
        return .inherit.updating(updates)
    }
}
