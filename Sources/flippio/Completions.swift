import ArgumentParser
import Dispatch
import FlippioEngine
import Foundation

/// Shell completions that know the user's devices, apps and tracked databases.
///
/// The completion scripts that `make install` writes (from `flippio --generate-completion-script`)
/// call back into flippio (`flippio ---completion pull -- positional@0 …`) whenever the user presses
/// Tab on an argument declared with one of these kinds. The answer must come fast, so each one:
///
/// - asks the devices with a short command timeout (``commandTimeout``) and no retries, inside an
///   overall deadline (``deadline``); a slow or absent adb gives no suggestions, never a hung shell;
/// - reads tracked databases from the sidecars only (no device is touched);
/// - prints nothing on failure: a completion is a hint, and an error message in the middle of the
///   user's command line would be worse than no hint.
///
/// For example:
///
/// ```swift
/// @Argument(completion: Completions.deviceSerials) var device: String
/// ```
enum Completions {
    /// The longest a single tool call made for a completion may take.
    static let commandTimeout: Duration = .seconds(2)
    /// The longest a whole completion may take before the shell gets an empty answer.
    static let deadline: Duration = .seconds(3)

    /// Serials/UDIDs of the devices that are connected and usable now.
    static let deviceSerials = CompletionKind.custom { _, _, prefix in
        let ids = blocking { await engine()?.devices().devices.filter { $0.state == .ready }.map(\.id) } ?? []
        return ids.filter { $0.hasPrefix(prefix) }
    }

    /// App ids on the device named by the word before the one being completed (`pull DEVICE APP`).
    static let appIDs = CompletionKind.custom { words, index, prefix in
        guard index > 0, index - 1 < words.count else { return [] }
        let device = words[index - 1]
        guard !device.isEmpty, !device.hasPrefix("-") else { return [] }
        let ids = blocking { try? await engine()?.apps(device: device, includeSystem: false).map(\.id) } ?? nil
        return (ids ?? []).filter { $0.hasPrefix(prefix) }
    }

    /// The local copies the workspace tracks (read from their sidecars), plus ordinary files so a
    /// path typed by hand still completes.
    static let trackedFiles = CompletionKind.custom { _, _, prefix in
        let paths = blocking { try? await engine()?.status().map(\.path) } ?? nil
        return (paths ?? []).filter { $0.hasPrefix(prefix) }
    }

    /// An engine for completions: the user's configuration with the short timeout and one attempt.
    static func engine() -> Engine? {
        guard var config = try? FlippioConfiguration.load() else { return nil }
        config.commandTimeout = commandTimeout
        config.retry.maxAttempts = 1
        return Engine(configuration: config)
    }

    /// Runs `body` and waits for it at most ``deadline``.
    ///
    /// ArgumentParser calls a completion closure synchronously while it parses, so the async engine
    /// is bridged here: the work runs on the global executor and this thread waits on a semaphore.
    /// On timeout the task is cancelled (the process runner then kills the tool's process group) and
    /// nil is returned.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T?) -> T? {
        let box = Box<T>()
        let done = DispatchSemaphore(value: 0)
        let task = Task.detached {
            box.value = await body()
            done.signal()
        }
        let (seconds, attoseconds) = deadline.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        if done.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .timedOut {
            task.cancel()
            return nil
        }
        return box.value
    }
}

/// The result slot of ``Completions/blocking(_:)``: written by the task before it signals, read
/// by the waiting thread only after the signal.
private final class Box<T>: @unchecked Sendable {
    var value: T?
}
