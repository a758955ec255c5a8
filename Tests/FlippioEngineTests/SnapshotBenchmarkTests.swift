import FlippioEngine
import Foundation
import GRDB
import Testing
import TestSupport

/// Timings printed for the report, never asserted (the machine is shared and noisy).
///
/// Run with `FLIPPIO_DB_BENCH=1 swift test --skip-build --filter SnapshotBenchmarkTests`.
@Suite("Snapshot and pool timings", .enabled(if: ProcessInfo.processInfo.environment["FLIPPIO_DB_BENCH"] != nil))
struct SnapshotBenchmarkTests {
    static func measure(_ runs: Int, _ body: () async throws -> Void) async rethrows -> [Duration] {
        var durations: [Duration] = []
        for _ in 0..<runs {
            let start = ContinuousClock.now
            try await body()
            durations.append(ContinuousClock.now - start)
        }
        return durations.sorted()
    }

    static func ms(_ d: Duration) -> String {
        let c = d.components
        return String(format: "%.1f ms", Double(c.seconds) * 1000 + Double(c.attoseconds) / 1e15)
    }

    static func us(_ d: Duration) -> String {
        let c = d.components
        return String(format: "%.1f µs", Double(c.seconds) * 1e6 + Double(c.attoseconds) / 1e12)
    }

    @Test func snapshotTimes() async throws {
        let dir = try TemporaryDirectory("flippio-bench")
        for megabytes in [1, 10, 100] {
            let db = dir.child("db\(megabytes).db")
            try DBFixtures.makeLargeDatabase(db, megabytes: megabytes)
            let pool = ConnectionPool()
            let queue = try await pool.connection(for: db)
            for method in SnapshotMethod.allCases {
                let snapshotter = Snapshotter(directory: dir.child("snap-\(method)"), method: method)
                var snapshot: Snapshot?
                let times = try await Self.measure(3) { snapshot = try snapshotter.snapshot(of: queue, named: "s.db") }
                print("[bench] snapshot \(megabytes) MB (file \(DBFixtures.size(db) / 1_000_000) MB) \(method): "
                      + "min \(Self.ms(times[0])), median \(Self.ms(times[1])), max \(Self.ms(times[2])); "
                      + "snapshot \(snapshot.map { $0.size / 1_000_000 } ?? 0) MB")
            }
            // Where the time goes, on the last snapshot file: hashing and quick_check alone.
            let snapshotFile = dir.child("snap-backup").appendingPathComponent("s.db")
            let hash = try await Self.measure(3) { _ = try ContentHash.sha256(fileAt: snapshotFile) }
            let check = try await Self.measure(3) {
                var configuration = Configuration()
                configuration.readonly = true
                let q = try DatabaseQueue(path: snapshotFile.path, configuration: configuration)
                _ = try await q.read { try String.fetchAll($0, sql: "PRAGMA quick_check") }
                try q.close()
            }
            print("[bench]   of which SHA-256 \(Self.ms(hash[1])), quick_check \(Self.ms(check[1])) (medians)")
            await pool.closeAll()
            try FileManager.default.removeItem(at: db)
        }
    }

    @Test func warmAcquireVersusColdOpen() async throws {
        let dir = try TemporaryDirectory("flippio-bench")
        let db = try DBFixtures.makeDatabase(dir.child("x.db"), rows: 1000)
        let cold = try await Self.measure(50) {
            let pool = ConnectionPool()
            _ = try await pool.connection(for: db)
            await pool.closeAll()
        }
        let pool = ConnectionPool()
        await pool.warm([db])
        let warm = try await Self.measure(2000) { _ = try await pool.connection(for: db) }
        let probe = try await Self.measure(500) { _ = try await pool.isWriterActive(db) }
        print("[bench] cold open (new pool, open + close): median \(Self.us(cold[cold.count / 2])), min \(Self.us(cold[0]))")
        print("[bench] warm acquire (stat + lookup): median \(Self.us(warm[warm.count / 2])), min \(Self.us(warm[0]))")
        print("[bench] isWriterActive (/proc/locks): median \(Self.us(probe[probe.count / 2])), min \(Self.us(probe[0]))")
    }
}
