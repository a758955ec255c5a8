@testable import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("Metrics registry and Prometheus exposition")
struct MetricsRegistryTests {
    @Test func countersAndGauges_renderHelpTypeAndSortedSeries() {
        let registry = MetricsRegistry()
        let pushes = registry.counter("flippio_pushes_total", help: "Push attempts by outcome.")
        let tracked = registry.gauge("flippio_tracked_databases", help: "Databases the agent tracks.")
        pushes.increment(labels: ["outcome": "pushed"])
        pushes.increment(labels: ["outcome": "pushed"])
        pushes.increment(labels: ["outcome": "failed"])
        tracked.set(1000)
        #expect(registry.exposition() == """
            # HELP flippio_pushes_total Push attempts by outcome.
            # TYPE flippio_pushes_total counter
            flippio_pushes_total{outcome="failed"} 1
            flippio_pushes_total{outcome="pushed"} 2
            # HELP flippio_tracked_databases Databases the agent tracks.
            # TYPE flippio_tracked_databases gauge
            flippio_tracked_databases 1000

            """)
    }

    @Test func histogram_bucketsAreCumulativeAndInclusive_withSumAndCount() {
        let registry = MetricsRegistry()
        let durations = registry.histogram("d_seconds", help: "Durations.", buckets: [0.5, 0.25, 1])
        durations.observe(0.25, labels: ["tool": "adb"])  // le=0.25 is inclusive
        durations.observe(0.375, labels: ["tool": "adb"])
        durations.observe(7, labels: ["tool": "adb"])     // only +Inf
        #expect(registry.exposition() == """
            # HELP d_seconds Durations.
            # TYPE d_seconds histogram
            d_seconds_bucket{tool="adb",le="0.25"} 1
            d_seconds_bucket{tool="adb",le="0.5"} 2
            d_seconds_bucket{tool="adb",le="1"} 2
            d_seconds_bucket{tool="adb",le="+Inf"} 3
            d_seconds_sum{tool="adb"} 7.625
            d_seconds_count{tool="adb"} 3

            """)
    }

    @Test func labelValuesAndHelp_areEscaped() {
        let registry = MetricsRegistry()
        let errors = registry.counter("e_total", help: "Line one\nback\\slash")
        errors.increment(labels: ["kind": "say \"hi\"\\\n"])
        let text = registry.exposition()
        #expect(text.contains("# HELP e_total Line one\\nback\\\\slash\n"))
        #expect(text.contains("e_total{kind=\"say \\\"hi\\\"\\\\\\n\"} 1\n"))
    }

    @Test func generation_countsOnlyRealChanges_andSampledGaugesDoNotCount() {
        let registry = MetricsRegistry()
        let gauge = registry.gauge("g", help: "g")
        let start = registry.generation
        gauge.set(3)
        gauge.set(3)  // unchanged: no new generation
        #expect(registry.generation == start + 1)
        gauge.set(4, notify: false)
        #expect(registry.generation == start + 1)
        #expect(registry.value("g") == 4)
    }

    @Test func waitForChange_returnsAfterAnUpdate() async {
        let registry = MetricsRegistry()
        let counter = registry.counter("c_total", help: "c")
        let seen = registry.generation
        async let woke = registry.waitForChange(after: seen)
        counter.increment()
        #expect(await woke > seen)
    }

    @Test func waitForChange_returnsWhenCancelled() async {
        let registry = MetricsRegistry()
        let seen = registry.generation
        let task = Task { await registry.waitForChange(after: seen) }
        task.cancel()
        #expect(await task.value == seen)
    }

    @Test func agentMetrics_recordOutcomesErrorsRetriesAndTools() {
        let metrics = AgentMetrics(registry: MetricsRegistry())
        metrics.pushEnded(.unchanged, after: .milliseconds(12))
        metrics.pushEnded(.conflict(copy: URL(fileURLWithPath: "/tmp/x.device.db")), after: .milliseconds(80))
        metrics.pushEnded(.failed(FlippioError(.deviceOffline, "offline")), after: .seconds(1))
        metrics.retried(attempt: 1, error: FlippioError(.timedOut, "slow"), delay: .milliseconds(100))
        metrics.commandEnded(executable: "/usr/bin/adb", duration: .milliseconds(20), timedOut: false)
        metrics.commandEnded(executable: "/opt/weird/tool", duration: .milliseconds(20), timedOut: true)
        metrics.trackedDatabases(3)
        let registry = metrics.registry
        #expect(registry.value("flippio_pushes_total", labels: ["outcome": "unchanged"]) == 1)
        #expect(registry.value("flippio_conflicts_total") == 1)
        #expect(registry.value("flippio_errors_total", labels: ["kind": "device-offline"]) == 1)
        #expect(registry.value("flippio_retries_total", labels: ["kind": "timed-out"]) == 1)
        #expect(registry.observationCount("flippio_command_duration_seconds", labels: ["tool": "adb"]) == 1)
        #expect(registry.value("flippio_command_timeouts_total", labels: ["tool": "other"]) == 1)
        #expect(registry.value("flippio_tracked_databases") == 3)
        #expect(registry.observationCount("flippio_push_duration_seconds", labels: ["outcome": "failed"]) == 1)
    }

    @Test func metricsFile_isWrittenAtomically_andSamplesResidentMemory() throws {
        let dir = try TemporaryDirectory("metrics")
        let url = dir.url.appendingPathComponent("state/flippio/metrics.prom")
        let metrics = AgentMetrics(registry: MetricsRegistry())
        metrics.trackedDatabases(7)
        try MetricsFile(url: url).write(metrics)
        let text = try MetricsFile.read(at: url)
        #expect(text.contains("flippio_tracked_databases 7\n"))
        #expect(metrics.registry.value("flippio_resident_memory_bytes") > 0)
        // Only the file itself is left: no temporary beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path) == ["metrics.prom"])
    }

    @Test func metricsFile_defaultLocationFollowsXDGStateHome() {
        #expect(MetricsFile.defaultURL(environment: ["XDG_STATE_HOME": "/s", "HOME": "/h"])?.path == "/s/flippio/metrics.prom")
        #expect(MetricsFile.defaultURL(environment: ["HOME": "/h"])?.path == "/h/.local/state/flippio/metrics.prom")
        #expect(MetricsFile.defaultURL(environment: ["FLIPPIO_METRICS_FILE": "/m.prom"])?.path == "/m.prom")
        #expect(MetricsFile.defaultURL(environment: ["FLIPPIO_METRICS_FILE": ""]) == nil)
    }
}
