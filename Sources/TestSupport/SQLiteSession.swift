import Foundation

/// A real `sqlite3` process kept open on a database, like an app (or DB Browser) holding a
/// connection: its locks, its `-wal` and its open transactions are real.
///
/// Statements are sent on stdin; ``execute(_:)`` waits until sqlite3 has run them by asking it to
/// print a unique marker afterwards.
public final class SQLiteSession: @unchecked Sendable {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var buffer = Data()
    private let lock = NSLock()

    public init(_ database: URL) throws {
        guard let sqlite3 = Products.systemTool("sqlite3") else { throw ShellError("sqlite3 is not installed") }
        process.executableURL = sqlite3
        process.arguments = ["-batch", database.path]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        let handle = output.fileHandleForReading
        handle.readabilityHandler = { [weak self] h in
            let data = h.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.buffer.append(data) }
        }
        try process.run()
    }

    /// Runs `sql` and returns what sqlite3 printed for it (results and errors).
    @discardableResult
    public func execute(_ sql: String, timeout: Duration = .seconds(30)) async throws -> String {
        let marker = "--done-\(UUID().uuidString)--"
        input.fileHandleForWriting.write(Data("\(sql)\n.print \(marker)\n".utf8))
        var text = ""
        try await waitUntil("sqlite3 ran \(sql.prefix(60))", timeout: timeout, poll: .milliseconds(10)) {
            text = self.lock.withLock { String(decoding: self.buffer, as: UTF8.self) }
            return text.contains(marker)
        }
        lock.withLock { buffer.removeAll() }
        return text.components(separatedBy: marker)[0]
    }

    /// Ends the session the way an app that exits does (sqlite3 closes its connection).
    public func close() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
    }

    /// Kills the process without letting SQLite close cleanly (a crashed app).
    public func kill() {
        process.terminate()
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
    }

    deinit {
        if process.isRunning { kill() }
    }
}
