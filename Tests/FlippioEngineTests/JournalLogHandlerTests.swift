import Foundation
import Logging
import Testing
import TestSupport
@testable import FlippioEngine

/// Collects the lines a handler writes.
final class LineSink: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [String] = []
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return storage }
    var write: @Sendable (String) -> Void {
        { line in self.lock.lock(); self.storage.append(line); self.lock.unlock() }
    }
}

@Suite("JournalLogHandler")
struct JournalLogHandlerTests {
    /// 2026-11-29 17:42:03.120 in the local time zone.
    static let fixedDate: Date = {
        var parts = DateComponents()
        (parts.year, parts.month, parts.day, parts.hour, parts.minute, parts.second) = (2026, 11, 29, 17, 42, 3)
        parts.nanosecond = 120_000_000
        return Calendar.current.date(from: parts)!.addingTimeInterval(0.0000001)
    }()

    func logger(_ format: JournalLogHandler.Format, level: Logger.Level = .trace, sink: LineSink) -> Logger {
        Logger(label: "test") { label in
            JournalLogHandler(label: label, level: level, format: format, now: { Self.fixedDate }, sink: sink.write)
        }
    }

    // MARK: - journald mode

    @Test("journald lines carry the syslog priority prefix and no timestamp")
    func journalPrefixes() {
        let sink = LineSink()
        let log = logger(.journal, sink: sink)
        log.trace("t")
        log.debug("d")
        log.info("i")
        log.notice("n")
        log.warning("w")
        log.error("e")
        log.critical("c")
        #expect(sink.lines == ["<7>t\n", "<7>d\n", "<6>i\n", "<5>n\n", "<4>w\n", "<3>e\n", "<3>c\n"])
    }

    @Test("metadata follows as sorted key=value, values with spaces quoted")
    func metadata() {
        let sink = LineSink()
        var log = logger(.journal, sink: sink)
        log[metadataKey: "serial"] = "emulator-5554"
        log.info("pushed app.db", metadata: ["bytes": "40960", "path": "/home/u/my ws/app.db", "note": "say \"hi\""])
        #expect(sink.lines == [#"<6>pushed app.db bytes=40960 note="say \"hi\"" path="/home/u/my ws/app.db" serial=emulator-5554"# + "\n"])
    }

    @Test("newlines in the message or a value are escaped: one event is one line")
    func oneLinePerEvent() {
        let sink = LineSink()
        let log = logger(.journal, sink: sink)
        log.error("adb failed:\nerror: device offline\r\n", metadata: ["stderr": "line one\nline two"])
        #expect(sink.lines.count == 1)
        let line = sink.lines[0]
        #expect(line == #"<3>adb failed:\nerror: device offline\r\n stderr="line one\nline two""# + "\n")
        #expect(line.filter { $0 == "\n" }.count == 1)
    }

    @Test("the handler level filters events")
    func levelFilters() {
        let sink = LineSink()
        let log = logger(.journal, level: .warning, sink: sink)
        log.info("hidden")
        log.warning("shown")
        #expect(sink.lines == ["<4>shown\n"])
    }

    // MARK: - terminal mode

    @Test("human lines start with local time and the level")
    func humanFormat() {
        let sink = LineSink()
        let log = logger(.human, sink: sink)
        log.info("pushed app.db", metadata: ["serial": "emulator-5554"])
        log.warning("slow")
        #expect(sink.lines == [
            "2026-11-29 17:42:03.120 info  pushed app.db serial=emulator-5554\n",
            "2026-11-29 17:42:03.120 warning slow\n",
        ])
    }

    @Test("JOURNAL_STREAM selects the journald format")
    func detect() {
        #expect(JournalLogHandler.Format.detect(environment: ["JOURNAL_STREAM": "8:12345"]) == .journal)
        #expect(JournalLogHandler.Format.detect(environment: [:]) == .human)
        #expect(JournalLogHandler.Format.detect(environment: ["JOURNAL_STREAM": ""]) == .human)
    }

    // MARK: - Levels

    @Test("every level name parses, case-insensitively")
    func parseLevels() throws {
        for level in Logger.Level.allCases {
            #expect(try Logger.Level.parse(level.rawValue) == level)
            #expect(try Logger.Level.parse(level.rawValue.uppercased()) == level)
        }
    }

    @Test("a bad level name is an invalid-argument error that lists the valid names")
    func badLevel() {
        do {
            _ = try Logger.Level.parse("verbose")
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("verbose"))
            #expect(error.remedy == "Use one of: trace, debug, info, notice, warning, error, critical.")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("--log-level wins over FLIPPIO_LOG_LEVEL, which wins over the default")
    func levelPrecedence() throws {
        #expect(try FlippioLogging.level(option: "debug", environment: ["FLIPPIO_LOG_LEVEL": "error"]) == .debug)
        #expect(try FlippioLogging.level(option: nil, environment: ["FLIPPIO_LOG_LEVEL": "error"]) == .error)
        #expect(try FlippioLogging.level(option: nil, environment: [:]) == .info)
        #expect(throws: FlippioError.self) { try FlippioLogging.level(option: nil, environment: ["FLIPPIO_LOG_LEVEL": "loud"]) }
    }

    // MARK: - stderr

    @Test("writeLine writes the whole line to a file descriptor")
    func writesWholeLines() throws {
        let dir = try TemporaryDirectory("flippio-log")
        let file = dir.child("stderr.txt")
        let fd = open(file.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        let long = String(repeating: "x", count: 100_000)
        JournalLogHandler.writeLine("<6>hello\n", to: fd)
        JournalLogHandler.writeLine(long + "\n", to: fd)
        close(fd)
        #expect(try String(contentsOf: file, encoding: .utf8) == "<6>hello\n" + long + "\n")
    }
}
