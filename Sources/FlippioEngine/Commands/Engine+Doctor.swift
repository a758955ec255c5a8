import Foundation

extension Engine {
    /// What `flippio doctor` found.
    public struct DoctorReport: Sendable, Codable, Equatable {
        public struct Check: Sendable, Codable, Equatable {
            public var name: String
            public var ok: Bool
            public var detail: String
            public var fix: String?
        }
        public var tools: [ToolInfo]
        /// `fs.inotify.max_user_watches` and `max_queued_events`, when readable.
        public var maxUserWatches: Int?
        public var maxQueuedEvents: Int?
        public var devices: [Device]
        public var checks: [Check]
        public var workspace: String
        /// True when nothing needs fixing for at least one platform.
        public var healthy: Bool { checks.allSatisfy { $0.ok } }
    }

    /// Tools and versions (found concurrently), inotify limits, the adb server, devices and what is
    /// wrong with each, and the workspace.
    public func doctor() async -> DoctorReport {
        async let toolsLookup = bridges.tools.locateAll()
        async let deviceLookup = devices()
        let tools = await toolsLookup
        let (devices, problems) = await deviceLookup
        var checks: [DoctorReport.Check] = []

        let adb = tools.first { $0.tool == .adb }
        let iosTools = tools.filter { $0.tool != .adb }
        checks.append(.init(name: "adb", ok: adb?.path != nil,
                            detail: adb?.path.map { "\($0) (\(adb?.version ?? "unknown version"))" } ?? (adb?.problem ?? "not found"),
                            fix: adb?.path == nil ? "sudo apt-get install adb, or set FLIPPIO_ADB" : nil))
        checks += IOSFileBackendKind.doctorChecks(iosTools, environment: configuration.environment)

        let limits = InotifyLimits.current()
        if let watches = limits.maxUserWatches {
            // One watch per workspace folder; a low limit is shared with every other watcher (IDEs...).
            let low = watches < 65536
            checks.append(.init(name: "inotify", ok: !low,
                                detail: "max_user_watches=\(watches), max_queued_events=\(limits.maxQueuedEvents.map(String.init) ?? "?")",
                                fix: low ? "sudo sysctl fs.inotify.max_user_watches=524288 (persist it in /etc/sysctl.d/)" : nil))
        }
        if let agent = agentStatus(), agent.unwatchedFolders > 0 {
            checks.append(.init(name: "agent watches", ok: false,
                                detail: "the running agent (PID \(agent.pid)) cannot watch \(agent.unwatchedFolders) workspace folder\(agent.unwatchedFolders == 1 ? "" : "s"); it rescans them instead",
                                fix: agent.unwatchedRemedy))
        }
        if adb?.path != nil {
            let env = configuration.environment
            let server = env["ADB_SERVER_SOCKET"] ?? "tcp:localhost:\(env["ANDROID_ADB_SERVER_PORT"] ?? "5037")"
            let serverProblem = problems.first { $0.code == .adbServerUnavailable }
            checks.append(.init(name: "adb server", ok: serverProblem == nil,
                                detail: serverProblem?.message ?? "answering at \(server)", fix: serverProblem?.remedy))
        }
        for problem in problems where problem.code != .adbServerUnavailable {
            checks.append(.init(name: "devices", ok: false, detail: problem.message, fix: problem.remedy))
        }
        let ready = devices.filter { $0.state == .ready }.count
        checks.append(.init(name: "devices", ok: ready > 0, detail: "\(devices.count) connected, \(ready) ready",
                            fix: ready > 0 ? nil : "Connect a device with USB debugging on (Android) or trusted and unlocked (iOS)."))
        for device in devices where device.state != .ready {
            checks.append(.init(name: "device \(device.id)", ok: false, detail: device.state.rawValue, fix: device.remedy))
        }
        let writable = FileManager.default.isWritableFile(atPath: workspace.root.path)
            || !FileManager.default.fileExists(atPath: workspace.root.path)
        checks.append(.init(name: "workspace", ok: writable, detail: workspace.root.path,
                            fix: writable ? nil : "Make it writable or choose another with --workspace / FLIPPIO_WORKSPACE."))
        return DoctorReport(tools: tools, maxUserWatches: limits.maxUserWatches, maxQueuedEvents: limits.maxQueuedEvents,
                            devices: devices, checks: checks, workspace: workspace.root.path)
    }
}
