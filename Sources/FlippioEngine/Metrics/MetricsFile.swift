import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes the agent's metrics, in the Prometheus text format that swift-prometheus renders, to a
/// file for node_exporter's textfile collector, and reads it back for `flippio status --metrics`.
///
/// The file is `$XDG_STATE_HOME/flippio/metrics.prom` (`~/.local/state/flippio/metrics.prom`), or
/// `FLIPPIO_METRICS_FILE` when set (empty: no file). It is written atomically (temp file in the same
/// folder, fsync, rename), once at start, then at most once per ``interval`` and only after a
/// metric changed (``AgentMetrics/changes``): an idle agent does not wake up for it. The rename
/// matters because node_exporter reads the folder on its own schedule and must never see a
/// half-written file (it would drop the whole file for that scrape). To collect it, point
/// node_exporter's `--collector.textfile.directory` at the folder (or symlink the file into it).
///
/// For example:
///
/// ```swift
/// let file = MetricsFile(url: MetricsFile.defaultURL(environment: env)!)
/// group.addTask { await file.run(AgentMetrics.shared) }
/// ```
public struct MetricsFile: Sendable {
    public let url: URL
    /// Changes within this time are written together. The default is 5 s.
    public let interval: Duration

    public init(url: URL, interval: Duration = .seconds(5)) {
        self.url = url
        self.interval = interval
    }

    /// Where the agent writes its metrics, or nil when `FLIPPIO_METRICS_FILE` is set and empty.
    public static func defaultURL(environment: [String: String]) -> URL? {
        if let explicit = environment["FLIPPIO_METRICS_FILE"] {
            return explicit.isEmpty ? nil : URL(fileURLWithPath: explicit)
        }
        let state = environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0, isDirectory: true) }
            ?? URL(fileURLWithPath: environment["HOME"] ?? NSHomeDirectory(), isDirectory: true)
                .appendingPathComponent(".local/state", isDirectory: true)
        return state.appendingPathComponent("flippio/metrics.prom")
    }

    /// Writes now, then after each change (coalesced over ``interval``) until cancelled; then once more.
    public func run(_ metrics: AgentMetrics, onError: @Sendable (FlippioError) -> Void = { _ in }) async {
        var written = metrics.changes.generation
        writeReportingOnce(metrics, onError: onError)
        while !Task.isCancelled {
            let now = await metrics.changes.waitForChange(after: written)
            if Task.isCancelled { break }
            guard now != written else { continue }
            // Gather the changes of the next few seconds into one write.
            try? await Task.sleep(for: interval)
            written = metrics.changes.generation
            writeReportingOnce(metrics, onError: onError)
        }
        if metrics.changes.generation != written { writeReportingOnce(metrics, onError: onError) }
    }

    private func writeReportingOnce(_ metrics: AgentMetrics, onError: (FlippioError) -> Void) {
        do { try write(metrics) } catch let error as FlippioError { onError(error) } catch {}
    }

    /// Samples the process, renders and writes the file atomically.
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed``.
    public func write(_ metrics: AgentMetrics) throws {
        metrics.sampleProcess()
        var text: [UInt8] = []
        text.reserveCapacity(8 * 1024)
        metrics.registry.emit(into: &text)
        try Self.writeAtomically(Data(text), to: url)
    }

    /// The file's text, for `flippio status --metrics`.
    ///
    /// - throws: ``FlippioError/Code/invalidArgument`` when there is no file (no agent ran with
    ///   this environment yet).
    public static func read(at url: URL) throws -> String {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FlippioError(.invalidArgument, "No metrics at \(url.path): the agent has not written any yet.",
                               remedy: "Start the agent (`flippio agent`, or `systemctl --user start flippio`) with the same XDG_STATE_HOME.")
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func writeAtomically(_ data: Data, to url: URL) throws {
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw FlippioError.workspaceWriteFailed(path: directory.path, errno: EACCES)
        }
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: temporary.path, errno: errno) }
        var failure: Int32 = 0
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                offset += n
            }
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        if failure == 0 && rename(temporary.path, url.path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary.path)
            throw FlippioError.workspaceWriteFailed(path: url.path, errno: failure)
        }
    }
}
