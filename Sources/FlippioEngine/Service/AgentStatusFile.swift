import Foundation

/// What the running agent tells other processes about itself: `<workspace>/.flippio/agent.json`.
///
/// `flippio status` and `flippio doctor` run in their own processes; they read this file (only
/// while ``AgentInstanceLock`` shows an agent running) to report what the sidecars cannot say:
/// folders the agent could not watch because of inotify limits, and the line that fixes it.
public struct AgentStatusFile: Sendable, Codable, Equatable {
    public var pid: Int32
    /// The agent's `STATUS=` line.
    public var status: String
    /// Workspace folders inotify refused; changes there are found by a periodic rescan.
    public var unwatchedFolders: Int
    /// What raises the limit (the `sysctl` line), when folders are unwatched.
    public var unwatchedRemedy: String?
    /// Apps followed by a fingerprint poll because their device has no usable `inotifyd`
    /// (`com.example.notes on emulator-5554`); nil or empty when every device reports its changes.
    public var pollingApps: [String]?

    public init(pid: Int32, status: String, unwatchedFolders: Int, unwatchedRemedy: String?, pollingApps: [String]? = nil) {
        self.pid = pid
        self.status = status
        self.unwatchedFolders = unwatchedFolders
        self.unwatchedRemedy = unwatchedRemedy
        self.pollingApps = pollingApps
    }

    static func url(in workspace: Workspace) -> URL {
        workspace.stateDirectory.appendingPathComponent("agent.json")
    }

    /// Writes the file atomically (temp file, rename); failures are ignored: it is informative.
    func write(in workspace: Workspace) {
        let url = Self.url(in: workspace)
        guard let data = try? JSONEncoder().encode(self) else { return }
        let temp = url.deletingLastPathComponent().appendingPathComponent(".agent.json.\(getpid())")
        guard (try? data.write(to: temp)) != nil else { return }
        if rename(temp.path, url.path) != 0 { unlink(temp.path) }
    }

    /// The running agent's report, or nil when no agent runs on `workspace`.
    public static func read(in workspace: Workspace) -> AgentStatusFile? {
        guard let pid = AgentInstanceLock.runningAgentPID(in: workspace),
              let data = try? Data(contentsOf: url(in: workspace)),
              let file = try? JSONDecoder().decode(AgentStatusFile.self, from: data), file.pid == pid else { return nil }
        return file
    }
}
