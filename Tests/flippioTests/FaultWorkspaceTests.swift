import DeviceSimulator
import FlippioEngine
import Foundation
import Testing
import TestSupport

/// Issue #7, the machine's side: a flooded inotify queue, a full or read-only workspace, broken
/// sidecars and local copies.
@Suite("Fault: workspace", .serialized)
struct FaultWorkspaceTests {
    @Test("inotify queue overflow: a rescan finds every changed database, each is pushed once", .tags(.editLost))
    func inotifyOverflowRescansAndPushesEachChangedDatabaseOnce() async throws {
        let scenario = try Scenario.make()
        let a = try scenario.addDatabase("a.db")
        let b = try scenario.addDatabase("b.db")
        let agent = try await scenario.startAgent(checks: 3)

        // Stop the agent (a real SIGSTOP), flood one workspace folder with more events than the
        // kernel queues, edit two databases (their events are dropped), then let the agent go on.
        agent.signal(SIGSTOP)
        var resumed = false
        defer { if !resumed { agent.signal(SIGCONT) } }
        let folder = scenario.localCopy.deletingLastPathComponent()
        let limit = Int((try? String(contentsOfFile: "/proc/sys/fs/inotify/max_queued_events", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 16384
        // Each file costs three events: IN_CREATE, IN_CLOSE_WRITE, IN_DELETE.
        for i in 0..<(limit / 3 + 200) {
            let path = folder.appendingPathComponent("flood-\(i).tmp").path
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            if fd >= 0 { close(fd) }
            unlink(path)
        }
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('edited in the flood')")
        try Shell.sqlite(a.local, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('a edited in the flood')")
        agent.signal(SIGCONT)
        resumed = true

        try await agent.waitForLog("overflowed")
        try await scenario.expectPushed(titles: ["one", "two", "three", "edited in the flood"], agent: agent)
        try await waitUntil("a.db pushed\n\(agent.log)", timeout: .seconds(45)) {
            (try? Shell.sqlite(a.device, "SELECT title FROM notes ORDER BY id")) == "a.db one\na edited in the flood\n"
        }
        try await waitUntil("a.db clean") { (try? scenario.sidecar(of: a.local).state) == .clean }
        #expect(try scenario.sidecar().pushHistory.count == 1, "notes.db pushed once")
        #expect(try scenario.sidecar(of: a.local).pushHistory.count == 1, "a.db pushed once")
        #expect(try scenario.sidecar(of: b.local).pushHistory.isEmpty, "b.db, unchanged, not pushed")
        #expect(try scenario.uploadCount() == 2)
    }

    enum FileSystemFault: String, CaseIterable, Sendable { case full = "disk full", readOnly = "read-only" }

    @Test("workspace disk full or read-only: a clear error, the device untouched, the edit pushed once it is writable",
          .tags(.editLost, .corruption), .enabled(if: canMount, "needs root to mount a small tmpfs"),
          arguments: FileSystemFault.allCases)
    func fullOrReadOnlyWorkspace(fault: FileSystemFault) async throws {
        let harness = try FlippioHarness()
        try FileManager.default.createDirectory(at: harness.workspace, withIntermediateDirectories: true)
        try mountCommand("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", harness.workspace.path])
        defer { _ = try? mountCommand("umount", ["-l", harness.workspace.path]) }
        let scenario = try Scenario.make(on: harness)
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        let agent = try await scenario.startAgent()
        let filler = harness.workspace.appendingPathComponent("filler")

        agent.signal(SIGSTOP)
        var resumed = false
        defer { if !resumed { agent.signal(SIGCONT) } }
        let logBefore = agent.log.count
        try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('edited on a full disk')")
        try harness.sim.clearRequests()
        switch fault {
        case .full:
            // Fill every last block.
            let fd = open(filler.path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            let block = [UInt8](repeating: 0x55, count: 4096)
            while block.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
            close(fd)
        case .readOnly:
            try mountCommand("mount", ["-o", "remount,ro", harness.workspace.path])
        }
        agent.signal(SIGCONT)
        resumed = true

        // A clear error in the log, and a retry (the sidecar itself may not be writable).
        let expected = fault == .full ? ["disk is full", "No space left"] : ["read-only"]
        func reported() -> [Substring] {
            String(agent.log.dropFirst(logBefore)).split(separator: "\n").filter { line in
                line.contains("retrying") && expected.contains { line.localizedCaseInsensitiveContains($0) }
            }
        }
        do {
            try await waitUntil("the agent reports \(expected) and retries", timeout: .seconds(30)) { !reported().isEmpty }
        } catch {
            Issue.record("--- agent log ---\n\(agent.log)")
            throw error
        }
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "nothing on the device touched")
        #expect(try scenario.uploadCount() == 0)
        #expect(agent.process.isRunning)

        switch fault {
        case .full: try FileManager.default.removeItem(at: filler)
        case .readOnly: try mountCommand("mount", ["-o", "remount,rw", harness.workspace.path])
        }
        try await scenario.expectPushed(titles: ["one", "two", "three", "edited on a full disk"], agent: agent, timeout: .seconds(60))
    }

    enum LocalDamage: String, CaseIterable, Sendable {
        case corruptSidecar = "corrupt sidecar"
        case newerSidecar = "sidecar from a newer version"
        case databaseDeleted = "database deleted"
        case databaseIsADirectory = "database replaced by a directory"
    }

    @Test("corrupt or newer sidecar, database deleted or replaced by a directory: reported, never overwritten, the others still served",
          .tags(.editLost, .silentOverwrite), arguments: LocalDamage.allCases)
    func damagedLocalStateIsReportedAndTheOthersAreServed(damage: LocalDamage) async throws {
        let scenario = try Scenario.make()
        let other = try scenario.addDatabase("other.db")
        let sidecarURL = Sidecar.url(forDatabase: scenario.localCopy)
        let deviceBytes = try Data(contentsOf: scenario.deviceDatabase)
        switch damage {
        case .corruptSidecar:
            try Data("{\"schemaVersion\": 1, \"origin\": {\"platform\": \"android\", ".utf8).write(to: sidecarURL)
        case .newerSidecar:
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: sidecarURL)) as! [String: Any]
            json["schemaVersion"] = 99
            json["somethingNew"] = ["from": "the future"]
            try JSONSerialization.data(withJSONObject: json).write(to: sidecarURL)
        case .databaseDeleted:
            try FileManager.default.removeItem(at: scenario.localCopy)
        case .databaseIsADirectory:
            try FileManager.default.removeItem(at: scenario.localCopy)
            try FileManager.default.createDirectory(at: scenario.localCopy, withIntermediateDirectories: false)
        }
        let sidecarBytes = try Data(contentsOf: sidecarURL)

        let agent = try scenario.harness.startAgent(["--no-stop-app"])
        try await agent.waitForLog("ready")
        // The other database is still served.
        try Shell.sqlite(other.local, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('other edited')")
        try await waitUntil("other.db pushed\n\(agent.log)", timeout: .seconds(45)) {
            (try? Shell.sqlite(other.device, "SELECT title FROM notes ORDER BY id")) == "other.db one\nother edited\n"
        }
        try await waitUntil("other.db clean") { (try? scenario.sidecar(of: other.local).state) == .clean }

        // The damaged one is reported.
        let status = try scenario.statusText()
        switch damage {
        case .corruptSidecar, .newerSidecar:
            #expect(status.contains("unreadable"), "\(status)")
            #expect(status.contains(damage == .newerSidecar ? "newer flippio" : "Cannot read the sidecar"), "\(status)")
            if damage == .corruptSidecar {
                // Editing the copy changes nothing on the device: the agent does not track it.
                try Shell.sqlite(scenario.localCopy, "PRAGMA busy_timeout=10000; INSERT INTO notes(title) VALUES ('edited, untracked')")
                try await agent.waitForLog("not tracking")
            }
            #expect(try Data(contentsOf: sidecarURL) == sidecarBytes, "the sidecar is never overwritten")
        case .databaseDeleted, .databaseIsADirectory:
            try await waitUntil("the damaged copy is reported\n\(agent.log)", timeout: .seconds(30)) {
                guard let sidecar = try? scenario.sidecar() else { return false }
                return sidecar.lastError != nil && sidecar.state != .clean
            }
            let sidecar = try scenario.sidecar()
            #expect(sidecar.deviceContentHash == (try Scenario.sidecar(from: sidecarBytes)).deviceContentHash,
                    "what the device holds is still known")
            #expect(try scenario.statusText().contains(scenario.localCopy.path))
        }
        #expect(try Data(contentsOf: scenario.deviceDatabase) == deviceBytes, "the damaged database's device copy is untouched")
        #expect(agent.process.isRunning, "the agent keeps running")
    }
}

extension Scenario {
    static func sidecar(from data: Data) throws -> Sidecar {
        try SidecarStore.decode(data, from: URL(fileURLWithPath: "/sidecar.flippio.json"))
    }
}
