import Foundation

/// The result of ``Shell/run(_:_:input:environment:timeout:)``.
public struct ShellResult: Sendable {
    public let status: Int32
    public let stdout: Data
    public let stderr: Data
    public var out: String { String(decoding: stdout, as: UTF8.self) }
    public var err: String { String(decoding: stderr, as: UTF8.self) }
}

/// Runs real programs from tests (the real `adb`, `sqlite3`, the built `flippio`) and waits for them.
public enum Shell {
    /// Runs `executable` with `arguments`; kills it after `timeout` (the test then fails on its status).
    @discardableResult
    public static func run(
        _ executable: URL,
        _ arguments: [String],
        input: Data? = nil,
        environment: [String: String] = [:],
        timeout: TimeInterval = 120
    ) throws -> ShellResult {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let outPipe = Pipe(), errPipe = Pipe(), inPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = inPipe
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(input) }
        try? inPipe.fileHandleForWriting.close()
        let group = DispatchGroup()
        nonisolated(unsafe) var out = Data(), err = Data()
        group.enter()
        DispatchQueue.global().async { out = outPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { err = errPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        if group.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            kill(process.processIdentifier, SIGKILL)
            group.wait()
        }
        process.waitUntilExit()
        return ShellResult(status: process.terminationStatus, stdout: out, stderr: err)
    }

    /// Runs `sqlite3 DB SQL` (the real CLI), throwing with its stderr when it fails.
    @discardableResult
    public static func sqlite(_ database: URL, _ sql: String) throws -> String {
        guard let sqlite3 = Products.systemTool("sqlite3") else { throw ShellError("sqlite3 is not installed") }
        // Like the GUI tools users edit with, wait a moment when the agent holds a read lock.
        let result = try run(sqlite3, ["-cmd", ".timeout 5000", database.path, sql])
        guard result.status == 0 else { throw ShellError("sqlite3 failed (\(result.status)): \(result.err)") }
        return result.out
    }
}

public struct ShellError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
