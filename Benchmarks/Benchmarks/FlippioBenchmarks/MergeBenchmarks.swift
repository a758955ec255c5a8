import Benchmark
import FlippioEngine
import Foundation
import GRDB

// MARK: - Three-way merge

/// `ThreeWayMerge.merge` of a 100 MB database where the desktop changed 1, 1,000 or 100,000 rows
/// and the app one other row: copy of the device file, two session diffs over the whole file,
/// the apply, `quick_check` and `foreign_key_check`. Few iterations: each reads ~300 MB.
func mergeBenchmarks() {
    let fixtures = Fixtures.shared
    for changed in [1, 1_000, 100_000] {
        let configuration = Benchmark.Configuration(
            metrics: [.wallClock, .cpuTotal, .peakMemoryResident],
            timeUnits: .milliseconds,
            warmupIterations: 1,
            maxDuration: .seconds(30),
            maxIterations: 5)
        Benchmark("Merge: 100 MB, \(changed) changed rows", configuration: configuration) { benchmark in
            let trio = try fixtures.mergeTrio(megabytes: 100, changedRows: changed)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                guard case .merged(let result) = try ThreeWayMerge.merge(
                    base: trio.base, local: trio.local, device: trio.device, into: trio.output)
                else { fatalError("the benchmark's edits must merge") }
                blackHole(result)
            }
            benchmark.stopMeasurement()
        }
    }
}

extension Fixtures {
    struct MergeTrio {
        let base: URL
        let local: URL
        let device: URL
        let output: URL
    }

    /// Base, local (the first `changedRows` notes updated) and device (the last note retitled)
    /// copies of the `megabytes` database, made once per size and row count.
    func mergeTrio(megabytes: Int, changedRows: Int) throws -> MergeTrio {
        let base = try database(megabytes: megabytes)
        let name = "merge-\(megabytes)mb-\(changedRows)"
        let trio = MergeTrio(base: base,
                             local: directory.appendingPathComponent("\(name)-local.db"),
                             device: directory.appendingPathComponent("\(name)-device.db"),
                             output: directory.appendingPathComponent("\(name)-merged.db"))
        let ready = directory.appendingPathComponent("\(name).ready")
        if FileManager.default.fileExists(atPath: ready.path) { return trio }
        for (url, sql) in [
            (trio.local, "UPDATE notes SET updated = updated + 1 WHERE id <= \(changedRows)"),
            (trio.device, "UPDATE notes SET title = 'edited on the device' WHERE id = (SELECT max(id) FROM notes)"),
        ] {
            try? FileManager.default.removeItem(at: url)
            try FileManager.default.copyItem(at: base, to: url)
            let queue = try DatabaseQueue(path: url.path)
            try queue.write { try $0.execute(sql: sql) }
            try queue.close()
        }
        FileManager.default.createFile(atPath: ready.path, contents: Data())
        return trio
    }
}
