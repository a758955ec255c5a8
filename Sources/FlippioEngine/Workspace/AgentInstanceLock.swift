import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The lock that makes the agent the only one on its workspace: `<workspace>/.flippio/agent.lock`,
/// held with `flock(2)` for the agent's whole life, with the holder's PID written inside.
///
/// Two agents on one workspace would push the same databases twice and fight over sidecars; the
/// second one exits at start-up naming the first one's PID. The kernel releases the lock when
/// the holder dies, however it dies, so a SIGKILLed agent never blocks its successor.
///
/// For example:
///
/// ```swift
/// let instance = try AgentInstanceLock.acquire(in: workspace)   // throws agentAlreadyRunning
/// defer { instance.release() }
/// ```
public final class AgentInstanceLock: Sendable {
    /// The lock file.
    public let url: URL
    private let fd: Int32

    private init(url: URL, fd: Int32) {
        self.url = url
        self.fd = fd
    }

    deinit { close(fd) }

    /// Takes the workspace's agent lock and records this process's PID in it.
    ///
    /// - throws: ``FlippioError/Code/agentAlreadyRunning`` (with the running agent's PID) when
    ///   another process holds it; ``FlippioError/Code/workspaceWriteFailed`` when the file cannot
    ///   be made.
    public static func acquire(in workspace: Workspace) throws -> AgentInstanceLock {
        let url = workspace.stateDirectory.appendingPathComponent("agent.lock")
        _ = try workspace.processScratchDirectory()  // creates the state folder, safely
        // Held through a read-only descriptor (flock needs no write access): a file open for
        // writing for the agent's whole life would keep the workspace from being remounted.
        let fd = open(url.path, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw FlippioError.workspaceWriteFailed(path: url.path, errno: errno) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            let code = errno
            let holder = readPID(fd)
            close(fd)
            guard code == EWOULDBLOCK else { throw FlippioError.workspaceWriteFailed(path: url.path, errno: code) }
            throw FlippioError.agentAlreadyRunning(pid: holder, workspace: workspace.root)
        }
        // Closing this second descriptor keeps the lock: flock belongs to the first one's open file.
        let writer = open(url.path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW)
        if writer >= 0 {
            _ = "\(getpid())\n".withCString { write(writer, $0, strlen($0)) }
            close(writer)
        }
        return AgentInstanceLock(url: url, fd: fd)
    }

    /// The PID of the agent running on `workspace`, or nil when none runs.
    public static func runningAgentPID(in workspace: Workspace) -> Int32? {
        let url = workspace.stateDirectory.appendingPathComponent("agent.lock")
        let fd = open(url.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // A shared lock can be had only when no agent holds the exclusive one.
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            _ = flock(fd, LOCK_UN)
            return nil
        }
        return readPID(fd)
    }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
        guard n > 0 else { return nil }
        return Int32(String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

extension FlippioError {
    static func agentAlreadyRunning(pid: Int32?, workspace: URL) -> FlippioError {
        let who = pid.map { "PID \($0)" } ?? "another process"
        return FlippioError(.agentAlreadyRunning,
                            "A flippio agent (\(who)) is already running on the workspace \(workspace.path).",
                            remedy: "Use the running agent (`flippio status`), or stop it first (`systemctl --user stop flippio-agent`\(pid.map { " or `kill \($0)`" } ?? "")).",
                            context: ["workspace": workspace.path, "pid": pid.map(String.init) ?? ""])
    }
}
