// The hot paths of the agent, measured with ordo-one/benchmark.
//
//   cd Benchmarks && swift package benchmark            (or `make bench` from the root)
//   swift package benchmark --filter "Pool.*"           (one group)
//
// Targets (docs/PERFORMANCE.md): a warm acquire ≥ 50× faster than a cold open; concurrent tool
// discovery ≤ 1.2× the slowest single tool. They are read off the output, never asserted.
import Benchmark
import FlippioEngine
import Foundation
import GRDB

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .peakMemoryResident],
        timeUnits: .microseconds,
        warmupIterations: 3,
        maxDuration: .seconds(3),
        maxIterations: 10_000)

    poolBenchmarks()
    snapshotBenchmarks()
    indexBenchmarks()
    sidecarBenchmarks()
    toolDiscoveryBenchmarks()
    mergeBenchmarks()
}

// MARK: - Connection pool

/// A warm acquire (a `stat` and a dictionary lookup inside the pool actor, by the path the caller
/// keeps) against a cold open (a new pool, a SQLite open of the file, its schema read, and close).
/// "by URL" is the same acquire through ``ConnectionPool/connection(for:)``, which standardizes
/// the URL each time.
func poolBenchmarks() {
    let fixtures = Fixtures.shared
    Benchmark("Pool: cold open (new connection, open + close)") { benchmark in
        let database = try fixtures.database(megabytes: 1)
        for _ in benchmark.scaledIterations {
            let pool = ConnectionPool()
            blackHole(try await pool.connection(for: database))
            await pool.closeAll()
        }
    }
    for byURL in [false, true] {
        Benchmark(byURL ? "Pool: warm acquire by URL" : "Pool: warm acquire") { benchmark in
            let database = try fixtures.database(megabytes: 1)
            let path = database.standardizedFileURL.path
            let pool = ConnectionPool()
            _ = await pool.warm([database])
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(byURL ? try await pool.connection(for: database) : try await pool.connection(atPath: path))
            }
            benchmark.stopMeasurement()
            await pool.closeAll()
        }
    }
}

// MARK: - Snapshot

/// Backup API against `VACUUM INTO`, through a warm read-only connection, including what every
/// push does after the copy: `journal_mode=DELETE`, `quick_check`, fsync, rename, SHA-256.
func snapshotBenchmarks() {
    let fixtures = Fixtures.shared
    for megabytes in [1, 10, 100] {
        for method in SnapshotMethod.allCases {
            let configuration = Benchmark.Configuration(
                metrics: [.wallClock, .cpuTotal, .peakMemoryResident],
                timeUnits: .milliseconds,
                warmupIterations: 1,
                maxDuration: .seconds(megabytes >= 100 ? 20 : 5),
                maxIterations: megabytes >= 100 ? 5 : 30)
            Benchmark("Snapshot: \(megabytes) MB, \(method.rawValue)", configuration: configuration) { benchmark in
                let database = try fixtures.database(megabytes: megabytes)
                let pool = ConnectionPool()
                let connection = try await pool.connection(for: database)
                let snapshotter = Snapshotter(directory: fixtures.directory.appendingPathComponent("snapshots-\(method.rawValue)"),
                                              method: method)
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    blackHole(try snapshotter.snapshot(of: connection, named: "s\(megabytes).db"))
                }
                benchmark.stopMeasurement()
                await pool.closeAll()
            }
        }
    }
}

// MARK: - Watch event → database

/// One inotify event mapped to its database with 10,000 tracked databases (100 folders of 100),
/// for the four kinds of names an event can carry, by the folder path the watcher's events carry
/// (what the agent does per event); "by URL" standardizes a folder URL first (the older API).
func indexBenchmarks() {
    let root = URL(fileURLWithPath: "/home/dev/.local/share/flippio/emulator-5554", isDirectory: true)
    var index = DatabaseIndex(stateDirectory: root.appendingPathComponent(".flippio", isDirectory: true))
    for app in 0..<100 {
        for db in 0..<100 {
            index.track(root.appendingPathComponent("com.example.app\(app)/data/data/com.example.app\(app)/databases/db\(db).db"))
        }
    }
    let frozen = index
    let folder = root.appendingPathComponent("com.example.app57/data/data/com.example.app57/databases", isDirectory: true)
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .mallocCountTotal, .throughput],
                                                timeUnits: .nanoseconds, scalingFactor: .kilo)
    let folderPath = folder.standardizedFileURL.path
    for name in ["db42.db", "db42.db-wal", "db42.db.flippio.json", "db42.db-shm"] {
        Benchmark("Index: classify \(name) among 10,000 databases", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(frozen.classify(directory: folderPath, name: name))
            }
        }
    }
    Benchmark("Index by URL: classify db42.db-wal among 10,000 databases", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(frozen.classify(directory: folder, name: "db42.db-wal"))
        }
    }
}

// MARK: - Sidecar

/// Encoding a sidecar with a full push history, and the durable write (temp file, fsync, rename,
/// fsync folder) through ``SidecarStore``.
func sidecarBenchmarks() {
    let fixtures = Fixtures.shared
    let sidecar = Fixtures.sampleSidecar()
    Benchmark("Sidecar: encode (20-entry push history)", configuration: .init(metrics: [.wallClock, .mallocCountTotal])) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try SidecarStore.encode(sidecar))
        }
    }
    Benchmark("Sidecar: encode + atomic write (fsync, rename)", configuration: .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal])) { benchmark in
        let store = SidecarStore()
        let database = fixtures.directory.appendingPathComponent("sidecar-bench/x.db")
        try FileManager.default.createDirectory(at: database.deletingLastPathComponent(), withIntermediateDirectories: true)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try await store.write(sidecar, forDatabase: database)
        }
        benchmark.stopMeasurement()
    }
}

// MARK: - Tool discovery

/// Five fake tools (shell scripts that sleep 100 ms, then print a version), found and versioned
/// by ``ToolDiscovery`` all at once and one after another, and the process runner's own floor:
/// the five scripts run concurrently and one after another.
func toolDiscoveryBenchmarks() {
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .cpuTotal], timeUnits: .milliseconds,
                                                warmupIterations: 1, maxDuration: .seconds(5), maxIterations: 20)
    let fixtures = Fixtures.shared
    Benchmark("Tools: discovery, all concurrently (locateAll)", configuration: configuration) { benchmark in
        let directory = try fixtures.fakeTools()
        for _ in benchmark.scaledIterations {
            // A new instance each time: discovery caches its result.
            let discovery = ToolDiscovery(environment: ["PATH": directory.path], explicitPaths: [:],
                                          runner: ProcessRunner(), timeout: .seconds(3))
            blackHole(await discovery.locateAll())
        }
    }
    Benchmark("Tools: discovery, one after another", configuration: configuration) { benchmark in
        let directory = try fixtures.fakeTools()
        for _ in benchmark.scaledIterations {
            let discovery = ToolDiscovery(environment: ["PATH": directory.path], explicitPaths: [:],
                                          runner: ProcessRunner(), timeout: .seconds(3))
            for tool in Tool.allCases { blackHole(await discovery.locate(tool)) }
        }
    }
    Benchmark("Tools: slowest single tool (one 100 ms script)", configuration: configuration) { benchmark in
        let directory = try fixtures.fakeTools()
        let runner = ProcessRunner()
        for _ in benchmark.scaledIterations {
            blackHole(try await runner.run(Fixtures.versionCommand(directory, .adb)))
        }
    }
    Benchmark("Tools: process runner, 5 scripts concurrently", configuration: configuration) { benchmark in
        let directory = try fixtures.fakeTools()
        let runner = ProcessRunner()
        for _ in benchmark.scaledIterations {
            await withTaskGroup(of: Void.self) { group in
                for tool in Tool.allCases {
                    group.addTask { blackHole(try? await runner.run(Fixtures.versionCommand(directory, tool))) }
                }
            }
        }
    }
    Benchmark("Tools: process runner, 5 scripts one after another", configuration: configuration) { benchmark in
        let directory = try fixtures.fakeTools()
        let runner = ProcessRunner()
        for _ in benchmark.scaledIterations {
            for tool in Tool.allCases { blackHole(try await runner.run(Fixtures.versionCommand(directory, tool))) }
        }
    }
}
