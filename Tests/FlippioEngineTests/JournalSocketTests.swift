import Foundation
import Glibc
import Logging
import Testing
import TestSupport
@testable import FlippioEngine

/// Structured journal entries: a database's lines carry device and app as fields of their own,
/// sent over a real Unix datagram socket that stands where journald listens.
@Suite("JournalSocket")
struct JournalSocketTests {
    /// A bound datagram socket in a temp folder: what journald is to the handler.
    final class FakeJournal {
        let directory: TemporaryDirectory
        let path: String
        let fd: Int32

        init() throws {
            directory = try TemporaryDirectory("journal")
            path = directory.child("socket").path
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = JournalSocket.unixAddress(path)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(bound == 0)
            // A missing datagram fails the receive after 5 s instead of hanging the suite.
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(fd) }

        /// The next entry, decoded (text and binary fields).
        func receive() throws -> [String: String] {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            try #require(n > 0, "no datagram arrived")
            return Self.decode(Array(buffer[0..<n]))
        }

        static func decode(_ bytes: [UInt8]) -> [String: String] {
            var fields: [String: String] = [:]
            var i = 0
            while i < bytes.count {
                let end = bytes[i...].firstIndex(of: 0x0A) ?? bytes.count
                let line = bytes[i..<end]
                if let eq = line.firstIndex(of: UInt8(ascii: "=")) {
                    fields[String(decoding: line[..<eq], as: UTF8.self)] = String(decoding: line[(eq + 1)...], as: UTF8.self)
                    i = end + 1
                } else {
                    // NAME\n, 64-bit little-endian length, value, \n
                    let name = String(decoding: line, as: UTF8.self)
                    var length: UInt64 = 0
                    for k in 0..<8 { length |= UInt64(bytes[end + 1 + k]) << (8 * UInt64(k)) }
                    let start = end + 9
                    fields[name] = String(decoding: bytes[start..<(start + Int(length))], as: UTF8.self)
                    i = start + Int(length) + 1
                }
            }
            return fields
        }
    }

    static let origin = Sidecar.Origin(platform: .android, deviceID: "emulator-5554", deviceModel: "Pixel 7",
                                       appID: "com.example.notes", remotePath: "/data/data/com.example.notes/databases/notes.db",
                                       access: .runAs)

    @Test func databaseLines_carryDeviceAndAppAsJournalFields() throws {
        let journal = try FakeJournal()
        let socket = try #require(JournalSocket(path: journal.path))
        let sink = LineSink()
        let base = Logger(label: "flippio.sync") { label in
            JournalLogHandler(label: label, level: .info, format: .journal, journal: socket, sink: sink.write)
        }
        let logger = Logger.forDatabase(Self.origin, file: URL(fileURLWithPath: "/w/notes.db"), base: base)
        logger.warning("push failed:\ndevice offline", metadata: ["fix": "reconnect the cable"])

        let entry = try journal.receive()
        #expect(entry["FLIPPIO_DEVICE"] == "emulator-5554")
        #expect(entry["FLIPPIO_APP"] == "com.example.notes")
        #expect(entry["FLIPPIO_DB"] == "notes.db")
        #expect(entry["FLIPPIO_FIX"] == "reconnect the cable")
        #expect(entry["PRIORITY"] == "4")
        #expect(entry["SYSLOG_IDENTIFIER"] == "flippio")
        // The message keeps the key=value suffix, so plain `journalctl` tells devices apart too.
        #expect(entry["MESSAGE"] == "push failed:\\ndevice offline app=com.example.notes db=notes.db device=emulator-5554 fix=\"reconnect the cable\"")
        #expect(sink.lines.isEmpty, "sent to the journal, not to stderr")
    }

    @Test func multilineValues_useTheBinaryForm() throws {
        let journal = try FakeJournal()
        let socket = try #require(JournalSocket(path: journal.path))
        #expect(socket.send([("MESSAGE", "one"), ("FLIPPIO_ERROR", "line 1\nline 2")]))
        let entry = try journal.receive()
        #expect(entry["MESSAGE"] == "one")
        #expect(entry["FLIPPIO_ERROR"] == "line 1\nline 2")
        #expect(JournalSocket.fieldName(forMetadataKey: "retry-at.ms") == "FLIPPIO_RETRY_AT_MS")
    }

    @Test func withoutJournald_theLineGoesToStderrAsBefore() throws {
        let gone = try TemporaryDirectory("no-journal")
        let socket = try #require(JournalSocket(path: gone.child("socket").path))
        let sink = LineSink()
        let logger = Logger.forDatabase(Self.origin, file: URL(fileURLWithPath: "/w/notes.db"), base: Logger(label: "t") { label in
            JournalLogHandler(label: label, level: .info, format: .journal, journal: socket, sink: sink.write)
        })
        logger.info("pushed")
        #expect(sink.lines == ["<6>pushed app=com.example.notes db=notes.db device=emulator-5554\n"])
    }
}
