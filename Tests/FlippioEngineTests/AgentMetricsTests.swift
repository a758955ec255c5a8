@testable import FlippioEngine
import Foundation
import Testing
import TestSupport

/// The agent's metrics as swift-prometheus renders them: what node_exporter's textfile collector
/// and `flippio status --metrics` read. The library's order of families and series is its
/// dictionary order (it changes between runs), so these tests look lines up rather than compare
/// whole texts.
@Suite("Agent metrics, their Prometheus exposition and the metrics file")
struct AgentMetricsTests {
    /// A fresh registry per test: swift-prometheus stops the process when a name is registered
    /// twice with different help texts, and `shared` is the agent's.
    func makeMetrics() -> AgentMetrics { AgentMetrics(registry: .init()) }

    func exposition(_ metrics: AgentMetrics) -> String {
        var bytes: [UInt8] = []
        metrics.registry.emit(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The value of the sample line for `series` (`name{labels}` as rendered), or nil if absent.
    func sample(_ text: String, _ series: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return String(line.dropFirst(series.count + 1))
        }
        return nil
    }
}

// MARK: - Exposition

extension AgentMetricsTests {
    @Test func countersAndGauges_renderHelpTypeAndTheirSeries() {
        let metrics = makeMetrics()
        metrics.pushEnded(.unchanged, after: .milliseconds(30))
        metrics.pushEnded(.unchanged, after: .milliseconds(30))
        metrics.pushEnded(.failed(FlippioError(.deviceOffline, "offline")), after: .seconds(1))
        metrics.trackedDatabases(1000)
        let text = exposition(metrics)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("# HELP flippio_pushes_total Push attempts by outcome."))
        #expect(lines.contains("# TYPE flippio_pushes_total counter"))
        #expect(sample(text, #"flippio_pushes_total{outcome="unchanged"}"#) == "2")
        #expect(sample(text, #"flippio_pushes_total{outcome="failed"}"#) == "1")
        #expect(lines.contains("# HELP flippio_tracked_databases Databases the agent tracks."))
        #expect(lines.contains("# TYPE flippio_tracked_databases gauge"))
        // swift-prometheus prints gauges as Double.
        #expect(sample(text, "flippio_tracked_databases") == "1000.0")
        #expect(text.hasSuffix("\n"))
    }

    @Test func everySampleFollowsTheTypeLineOfItsOwnFamily() {
        // The text format wants each family's lines together, after its HELP and TYPE; a parser
        // (node_exporter's) rejects the whole file otherwise.
        let metrics = makeMetrics()
        metrics.pushEnded(.conflict(copy: URL(fileURLWithPath: "/tmp/x.device.db")), after: .milliseconds(80))
        metrics.commandEnded(executable: "adb", duration: .milliseconds(20), timedOut: true)
        metrics.retried(attempt: 1, error: FlippioError(.timedOut, "slow"), delay: .milliseconds(100))
        metrics.trackedDatabases(2)
        var family: String?
        var families: [String] = []
        var previous = ""
        for line in exposition(metrics).split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") {
                family = nil
            } else if line.hasPrefix("# TYPE ") {
                let name = String(line.split(separator: " ")[2])
                #expect(previous.hasPrefix("# HELP \(name) "), "TYPE \(name) is not right after its HELP")
                family = name
                families.append(name)
            } else {
                let name = family ?? "?"
                #expect(line.hasPrefix(name + " ") || line.hasPrefix(name + "{") || line.hasPrefix(name + "_"),
                        "\(line) is not under its family \(name)")
            }
            previous = line
        }
        #expect(Set(families).count == families.count, "a family appears twice")
        #expect(Set(families).isSuperset(of: [
            "flippio_pushes_total", "flippio_push_duration_seconds", "flippio_conflicts_total",
            "flippio_command_duration_seconds", "flippio_command_timeouts_total", "flippio_retries_total",
            "flippio_tracked_databases",
        ]))
    }

    @Test func unlabeledFamiliesShowZero_labeledOnesAppearAtTheirFirstEvent() {
        let text = exposition(makeMetrics())
        #expect(sample(text, "flippio_conflicts_total") == "0")
        #expect(sample(text, "flippio_merges_total") == "0")
        #expect(sample(text, "flippio_row_conflicts_total") == "0")
        #expect(sample(text, "flippio_tracked_databases") == "0.0")
        // A labeled family has no series, hence no lines at all, before its first event.
        #expect(!text.contains("flippio_pushes_total"))
        #expect(!text.contains("flippio_errors_total"))
    }

    @Test func histogram_bucketsAreOursInOrder_cumulativeAndInclusive_withSumAndCount() {
        let metrics = makeMetrics()
        metrics.commandEnded(executable: "/usr/bin/adb", duration: .milliseconds(250), timedOut: false)  // le=0.25 is inclusive
        metrics.commandEnded(executable: "/usr/bin/adb", duration: .milliseconds(375), timedOut: false)
        metrics.commandEnded(executable: "/usr/bin/adb", duration: .seconds(61), timedOut: false)          // only +Inf
        let lines = exposition(metrics).split(separator: "\n").map(String.init)
            .filter { $0.hasPrefix("flippio_command_duration_seconds") }
        #expect(lines == [
            #"flippio_command_duration_seconds_bucket{tool="adb",le="0.005"} 0"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="0.01"} 0"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="0.025"} 0"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="0.05"} 0"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="0.1"} 0"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="0.25"} 1"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="0.5"} 2"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="1.0"} 2"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="2.5"} 2"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="5.0"} 2"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="10.0"} 2"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="30.0"} 2"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="60.0"} 2"#,
            #"flippio_command_duration_seconds_bucket{tool="adb",le="+Inf"} 3"#,
            #"flippio_command_duration_seconds_sum{tool="adb"} 61.625"#,
            #"flippio_command_duration_seconds_count{tool="adb"} 3"#,
        ])
    }

    @Test func pushHistogram_usesThePushBuckets() {
        let metrics = makeMetrics()
        metrics.pushEnded(.unchanged, after: .milliseconds(12))
        let bounds = exposition(metrics).split(separator: "\n")
            .filter { $0.hasPrefix(#"flippio_push_duration_seconds_bucket{outcome="unchanged",le=""#) }
            .map { $0.split(separator: "\"")[3] }
        #expect(bounds.dropLast().compactMap { Double($0) } == AgentMetrics.pushBuckets)
        #expect(bounds.last == "+Inf")
    }

    @Test func labelValuesAreEscaped_helpKeepsBackslashesButDropsNewlines() {
        // Our label values are bounded names, but the escaping is what keeps the file parseable
        // if one ever carries a quote; checked on the registry the agent uses.
        let metrics = makeMetrics()
        let family = AgentMetrics.Family("e_total", "Line one\nback\\slash")
        metrics.registry.makeCounter(descriptor: family.descriptor, labels: [("kind", "say \"hi\"\\\n")]).increment()
        let text = exposition(metrics)
        #expect(text.contains("# HELP e_total Line oneback\\\\slash\n"))
        #expect(text.contains("e_total{kind=\"say \\\"hi\\\"\\\\\\n\"} 1\n"))
    }

    @Test func agentMetrics_recordOutcomesErrorsRetriesAndTools() {
        let metrics = makeMetrics()
        metrics.pushEnded(.unchanged, after: .milliseconds(12))
        metrics.pushEnded(.conflict(copy: URL(fileURLWithPath: "/tmp/x.device.db")), after: .milliseconds(80))
        metrics.pushEnded(.failed(FlippioError(.deviceOffline, "offline")), after: .seconds(1))
        metrics.retried(attempt: 1, error: FlippioError(.timedOut, "slow"), delay: .milliseconds(100))
        metrics.commandEnded(executable: "/usr/bin/adb", duration: .milliseconds(20), timedOut: false)
        metrics.commandEnded(executable: "/opt/weird/tool", duration: .milliseconds(20), timedOut: true)
        metrics.merged()
        metrics.rowConflicts(4)
        metrics.trackedDatabases(3)
        let text = exposition(metrics)
        #expect(sample(text, #"flippio_pushes_total{outcome="unchanged"}"#) == "1")
        #expect(sample(text, "flippio_conflicts_total") == "1")
        #expect(sample(text, #"flippio_errors_total{kind="device-offline"}"#) == "1")
        #expect(sample(text, #"flippio_retries_total{kind="timed-out"}"#) == "1")
        #expect(sample(text, #"flippio_command_duration_seconds_count{tool="adb"}"#) == "1")
        #expect(sample(text, #"flippio_command_timeouts_total{tool="other"}"#) == "1")
        #expect(sample(text, #"flippio_command_timeouts_total{tool="adb"}"#) == nil)
        #expect(sample(text, "flippio_merges_total") == "1")
        #expect(sample(text, "flippio_row_conflicts_total") == "4")
        #expect(sample(text, "flippio_tracked_databases") == "3.0")
        #expect(sample(text, #"flippio_push_duration_seconds_count{outcome="failed"}"#) == "1")
    }
}

// MARK: - Changes

extension AgentMetricsTests {
    @Test func changes_countOnlyRealChanges_andSampledGaugesDoNotCount() {
        let metrics = makeMetrics()
        let start = metrics.changes.generation
        metrics.trackedDatabases(3)
        metrics.trackedDatabases(3)  // unchanged: no new generation
        #expect(metrics.changes.generation == start + 1)
        metrics.sampleProcess()      // read at write time: counting it would ask for another write
        #expect(metrics.changes.generation == start + 1)
        metrics.rowConflicts(0)
        #expect(metrics.changes.generation == start + 1)
        metrics.commandEnded(executable: "adb", duration: .milliseconds(5), timedOut: false)
        #expect(metrics.changes.generation == start + 2)
    }

    @Test func waitForChange_returnsAfterAHook() async {
        let metrics = makeMetrics()
        let seen = metrics.changes.generation
        async let woke = metrics.changes.waitForChange(after: seen)
        metrics.merged()
        #expect(await woke > seen)
    }

    @Test func waitForChange_returnsWhenCancelled() async {
        let changes = MetricsChanges()
        let seen = changes.generation
        let task = Task { await changes.waitForChange(after: seen) }
        task.cancel()
        #expect(await task.value == seen)
    }
}

// MARK: - The file

extension AgentMetricsTests {
    @Test func metricsFile_isWrittenAtomically_andSamplesResidentMemory() throws {
        let dir = try TemporaryDirectory("metrics")
        let url = dir.url.appendingPathComponent("state/flippio/metrics.prom")
        let metrics = makeMetrics()
        metrics.trackedDatabases(7)
        try MetricsFile(url: url).write(metrics)
        let text = try MetricsFile.read(at: url)
        #expect(sample(text, "flippio_tracked_databases") == "7.0")
        #expect((sample(text, "flippio_resident_memory_bytes").flatMap(Double.init) ?? 0) > 0)
        // Only the file itself is left: no temporary beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path) == ["metrics.prom"])
    }

    @Test func metricsFile_run_writesAtStartAndAfterAChange() async throws {
        let dir = try TemporaryDirectory("metrics-run")
        let url = dir.url.appendingPathComponent("metrics.prom")
        let metrics = makeMetrics()
        let writer = Task { await MetricsFile(url: url, interval: .milliseconds(10)).run(metrics) }
        defer { writer.cancel() }
        try await waitUntil("the first write") { FileManager.default.fileExists(atPath: url.path) }
        #expect(sample(try MetricsFile.read(at: url), "flippio_tracked_databases") == "0.0")
        metrics.trackedDatabases(5)
        try await waitUntil("the write after the change") {
            (try? MetricsFile.read(at: url)).flatMap { sample($0, "flippio_tracked_databases") } == "5.0"
        }
    }

    @Test func metricsFile_defaultLocationFollowsXDGStateHome() {
        #expect(MetricsFile.defaultURL(environment: ["XDG_STATE_HOME": "/s", "HOME": "/h"])?.path == "/s/flippio/metrics.prom")
        #expect(MetricsFile.defaultURL(environment: ["HOME": "/h"])?.path == "/h/.local/state/flippio/metrics.prom")
        #expect(MetricsFile.defaultURL(environment: ["FLIPPIO_METRICS_FILE": "/m.prom"])?.path == "/m.prom")
        #expect(MetricsFile.defaultURL(environment: ["FLIPPIO_METRICS_FILE": ""]) == nil)
    }
}
