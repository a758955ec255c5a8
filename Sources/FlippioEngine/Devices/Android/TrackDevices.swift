import Foundation
import Logging

/// Follows `adb track-devices`: the device list, each time it changes.
///
/// `adb track-devices` keeps running and prints the whole list (`serial<TAB>state` lines) as a
/// message prefixed by its length in four hex digits, once at start and again on every change.
/// The tracker runs it as a ``StreamingProcess`` (its own process group, no cost while silent), yields each list that
/// differs from the previous one, and starts it again (after ``restartDelay``, doubling up to
/// ``maximumRestartDelay``) when it exits, yielding an empty list meanwhile because the devices
/// are then unknown. Cancelling the consuming task, or dropping the stream, kills the child with
/// its process group.
///
/// For example:
///
/// ```swift
/// let tracker = DeviceTracker(adbPath: "/usr/bin/adb")
/// for await devices in tracker.updates() {
///     if devices.contains(where: { $0.id == serial && $0.state == .ready }) { resume(serial) }
/// }
/// ```
public struct DeviceTracker: Sendable {
    public let adbPath: String
    /// Variables added to the inherited environment (`ANDROID_ADB_SERVER_PORT` works either way).
    public let environment: [String: String]
    /// The first wait before running `adb track-devices` again after it exited. The default is 250 ms.
    public let restartDelay: Duration
    /// The longest wait between restarts. The default is 5 s.
    public let maximumRestartDelay: Duration
    let logger: Logger

    public init(adbPath: String, environment: [String: String] = [:], restartDelay: Duration = .milliseconds(250),
                maximumRestartDelay: Duration = .seconds(5), logger: Logger = Logger(label: "flippio.android.track")) {
        self.adbPath = adbPath
        self.environment = environment
        self.restartDelay = restartDelay
        self.maximumRestartDelay = maximumRestartDelay
        self.logger = logger
    }

    /// Device lists, the first as soon as adb answers, then one per change.
    public func updates() -> AsyncStream<[Device]> {
        let (stream, continuation) = AsyncStream.makeStream(of: [Device].self, bufferingPolicy: .bufferingNewest(16))
        let task = Task { [self] in
            await self.run(continuation)
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func run(_ continuation: AsyncStream<[Device]>.Continuation) async {
        var last: [Device]? = nil
        var delay = restartDelay
        func publish(_ devices: [Device]) {
            guard devices != last else { return }
            last = devices
            continuation.yield(devices)
        }
        while !Task.isCancelled {
            var sawList = false
            do {
                sawList = try await track { devices in publish(devices) }
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                logger.debug("adb track-devices ended: \(error)")
            }
            if Task.isCancelled { return }
            logger.debug("adb track-devices ended; the devices are unknown until it runs again in \(delay)")
            publish([])
            if sawList { delay = restartDelay }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, maximumRestartDelay)
        }
    }

    /// Runs one `adb track-devices` until it exits; returns whether it printed any list.
    private func track(_ publish: ([Device]) -> Void) async throws -> Bool {
        let child = StreamingProcess(executable: adbPath, arguments: ["track-devices"], environment: environment)
        return try await child.run { output in
            var decoder = AndroidOutputParser.TrackDevicesDecoder()
            var sawList = false
            for try await bytes in output {
                for list in try decoder.feed(bytes) {
                    sawList = true
                    publish(list)
                }
            }
            return sawList
        }.value
    }
}
