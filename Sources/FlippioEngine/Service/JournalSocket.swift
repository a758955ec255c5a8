import Foundation
import Glibc

/// journald's native protocol: one datagram per entry on `/run/systemd/journal/socket`, made of
/// `FIELD=value` lines, so an entry carries structured fields (`FLIPPIO_DEVICE=emulator-5554`)
/// that `journalctl FLIPPIO_DEVICE=emulator-5554` and `-o json` can select on. A line on the
/// stderr stream cannot: journald stores it as MESSAGE only.
///
/// For example, an info line about one database becomes:
///
/// ```
/// MESSAGE=pushed 40960 bytes app=com.example.notes db=notes.db device=emulator-5554
/// PRIORITY=6
/// SYSLOG_IDENTIFIER=flippio
/// FLIPPIO_APP=com.example.notes
/// FLIPPIO_DB=notes.db
/// FLIPPIO_DEVICE=emulator-5554
/// ```
///
/// - Important: sending never blocks the caller for long and never throws: when the socket is
///   gone or refuses the datagram, ``send(_:)`` returns false and the caller writes the line to
///   stderr instead, so no log line is lost.
public final class JournalSocket: Sendable {
    /// Where journald listens.
    public static let defaultPath = "/run/systemd/journal/socket"

    public let path: String
    private let fd: Int32

    /// A socket for sending to `path`, or nil when no socket can be made.
    public init?(path: String = JournalSocket.defaultPath) {
        guard path.utf8.count < 108 else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// The journal socket when this process runs under systemd with its output in the journal
    /// (`$JOURNAL_STREAM` set) and the socket exists; else nil.
    public static func detect(environment: [String: String]) -> JournalSocket? {
        guard !(environment["JOURNAL_STREAM"] ?? "").isEmpty, FileManager.default.fileExists(atPath: defaultPath) else { return nil }
        return JournalSocket()
    }

    /// Sends one entry; false when journald did not take it. Never waits: when journald's queue
    /// is full (`EAGAIN`), the caller writes the line to stderr, which also reaches the journal.
    public func send(_ fields: [(name: String, value: String)]) -> Bool {
        let datagram = Self.encode(fields)
        var address = Self.unixAddress(path)
        let sent = datagram.withUnsafeBytes { buffer in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT), $0,
                           socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return sent == datagram.count
    }

    /// The `sockaddr_un` of a socket file (`path` is shorter than 108 bytes, checked by `init`).
    static func unixAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// The datagram for `fields`: `NAME=value\n`, or for a value holding a newline the binary
    /// form `NAME\n`, its length as 64-bit little-endian, the value, `\n` (journald's protocol).
    public static func encode(_ fields: [(name: String, value: String)]) -> [UInt8] {
        var out: [UInt8] = []
        for (name, value) in fields {
            let bytes = Array(value.utf8)
            if bytes.contains(0x0A) {
                out += Array(name.utf8) + [0x0A]
                withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out += $0 }
                out += bytes + [0x0A]
            } else {
                out += Array(name.utf8) + [UInt8(ascii: "=")] + bytes + [0x0A]
            }
        }
        return out
    }

    /// A metadata key as a journal field name: `FLIPPIO_` and the key in upper case, every
    /// character other than A-Z, 0-9 and `_` as `_` (journald drops fields with other names).
    public static func fieldName(forMetadataKey key: String) -> String {
        "FLIPPIO_" + String(key.uppercased().unicodeScalars.map { scalar -> Character in
            ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "_" ? Character(scalar) : "_"
        })
    }
}
