import FlippioEngine
import Foundation
import Testing
import TestSupport

/// The figure in docs/PERFORMANCE.md ("Following: an idle agent"): 20 followed databases on two
/// emulated devices, the agent idle for 60 s, its threads' context switches from `/proc/PID/task/*/status`,
/// per thread and in total. A measurement, not a check: run it by hand with
/// `FLIPPIO_MEASURE_FOLLOW_IDLE=1 swift test --filter FollowIdleMeasurement`.
@Suite("Following: idle cost (measurement)", .serialized)
struct FollowIdleMeasurement {
    static let enabled = ProcessInfo.processInfo.environment["FLIPPIO_MEASURE_FOLLOW_IDLE"] == "1"

    /// Voluntary and involuntary context switches of each thread of `pid`, by thread id, with
    /// the thread's name (`/proc/PID/task/TID/comm`).
    static func contextSwitches(_ pid: Int32) -> [String: (name: String, voluntary: Int, involuntary: Int)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var threads: [String: (name: String, voluntary: Int, involuntary: Int)] = [:]
        for task in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            let name = ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8)) ?? "?")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            var voluntary = 0, involuntary = 0
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, let value = Int(parts[1]) else { continue }
                if parts[0] == "voluntary_ctxt_switches" { voluntary = value }
                if parts[0] == "nonvoluntary_ctxt_switches" { involuntary = value }
            }
            threads[task] = (name, voluntary, involuntary)
        }
        return threads
    }

    @Test(.enabled(if: enabled)) func twentyFollowedDatabasesOnTwoDevicesIdleForAMinute() async throws {
        let harness = try FlippioHarness()
        let apps = ["com.example.notes", "com.example.shop"]
        for serial in ["emulator-5554", "emulator-5556"] {
            let device = try harness.sim.addDevice(serial, packages: Dictionary(uniqueKeysWithValues: apps.map { ($0, true) }))
            for app in apps {
                for index in 1...5 {
                    try NotesDatabase.create(at: device.appData(app).appendingPathComponent("databases/db\(index).db"),
                                             journalMode: index % 2 == 0 ? "wal" : "delete")
                }
                let pulled = try harness.flippio(["pull", serial, app])
                #expect(pulled.status == 0, "\(pulled.err)")
            }
        }
        let agent = try harness.startAgent(["--no-stop-app"], environment: ["FLIPPIO_FOLLOW": "1"])
        try await agent.waitForLog("ready")
        try await waitUntil("start-up checks of 20 databases", timeout: .seconds(60)) { agent.occurrences(of: "nothing pushed") >= 20 }
        try await waitUntil("one watcher per app (4)\n\(agent.log)") {
            (try harness.sim.requests().filter { ($0.command ?? "").contains("inotifyd") }.count) >= 4
        }
        try await Task.sleep(for: .seconds(2))  // let start-up work drain before the window
        try harness.sim.clearRequests()
        let before = Self.contextSwitches(agent.pid)
        try await Task.sleep(for: .seconds(60))  // the measured idle minute
        let after = Self.contextSwitches(agent.pid)
        let requests = try harness.sim.requests()
        var lines: [String] = []
        var voluntary = 0, involuntary = 0
        for (tid, thread) in after.sorted(by: { $0.key < $1.key }) {
            let earlier = before[tid] ?? (thread.name, 0, 0)
            let v = thread.voluntary - earlier.voluntary, i = thread.involuntary - earlier.involuntary
            voluntary += v
            involuntary += i
            lines.append("  \(tid) \(thread.name): \(v) voluntary, \(i) involuntary")
        }
        print("FOLLOW-IDLE: agent threads \(after.count); context switches over 60 s: \(voluntary) voluntary, \(involuntary) involuntary; adb server requests: \(requests.count)")
        print("FOLLOW-IDLE: per thread:\n" + lines.joined(separator: "\n"))
        #expect(requests.isEmpty, "no polling of Android devices while idle: \(requests.map { $0.command ?? $0.service })")
    }
}
