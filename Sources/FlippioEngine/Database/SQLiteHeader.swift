import Foundation

/// The first 100 bytes of an SQLite database file, checked and decoded.
///
/// A pulled file is checked before SQLite ever opens it: a stream from `adb exec-out run-as …
/// cat` that failed carries the tool's error text instead of a database, and that text is the
/// most useful thing to show the user. For example:
///
/// ```swift
/// let header = try SQLiteHeader.read(fileAt: pulledFile)   // throws .notSQLite
/// if header.isWAL { … }
/// ```
///
/// See <https://www.sqlite.org/fileformat2.html#the_database_header>.
///
/// - Important: read only files nobody else has open (freshly pulled files, snapshots). Reading
///   a live database the agent keeps open in its pool through another file descriptor, then
///   closing it, drops SQLite's POSIX locks for the whole process.
public struct SQLiteHeader: Sendable, Equatable {
    /// The 16 bytes every SQLite 3 database starts with: "SQLite format 3\0".
    public static let magic: [UInt8] = Array("SQLite format 3".utf8) + [0]
    /// The size of the header in bytes.
    public static let length = 100

    /// The page size in bytes (512…65536, a power of two).
    public let pageSize: Int
    /// File format write version (offset 18): 1 for rollback journal, 2 for WAL.
    public let writeVersion: UInt8
    /// File format read version (offset 19): 1 for rollback journal, 2 for WAL.
    public let readVersion: UInt8
    /// File change counter (offset 24).
    public let fileChangeCounter: UInt32
    /// Database size in pages (offset 28), valid when ``versionValidFor`` equals ``fileChangeCounter``.
    public let pageCount: UInt32
    /// Schema cookie (offset 40).
    public let schemaCookie: UInt32
    /// `PRAGMA user_version` (offset 60).
    public let userVersion: UInt32
    /// The change counter value for which ``sqliteVersion`` is valid (offset 92).
    public let versionValidFor: UInt32
    /// `SQLITE_VERSION_NUMBER` of the library that last wrote the file (offset 96).
    public let sqliteVersion: UInt32

    /// Whether the file is in WAL mode (bytes 18 and 19 are 2).
    public var isWAL: Bool { writeVersion == 2 || readVersion == 2 }

    /// Decodes a header from the first bytes of `file`.
    ///
    /// - parameters:
    ///     - bytes: the file's first bytes (at least 100 for a database).
    ///     - file: the file's name or path, for the error message.
    /// - throws: ``FlippioError/Code/notSQLite`` naming `file` when the bytes are not an SQLite 3
    ///   header; when they look like text, the message quotes its first line.
    public init(bytes: Data, file: String) throws {
        let b = [UInt8](bytes.prefix(Self.length))
        guard b.count == Self.length, Array(b[0..<16]) == Self.magic else {
            throw Self.notSQLite(file: file, bytes: [UInt8](bytes.prefix(512)))
        }
        func u16(_ o: Int) -> UInt32 { UInt32(b[o]) << 8 | UInt32(b[o + 1]) }
        func u32(_ o: Int) -> UInt32 { u16(o) << 16 | u16(o + 2) }
        let rawPageSize = Int(u16(16))
        let pageSize = rawPageSize == 1 ? 65536 : rawPageSize
        guard pageSize >= 512, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else {
            throw FlippioError(
                .notSQLite, "\(file) starts like an SQLite database but its page size (\(rawPageSize)) is invalid.",
                remedy: "The file is damaged or truncated; pull it again from the device.",
                context: ["path": file, "pageSize": String(rawPageSize)])
        }
        // Offsets 21–23 are fixed by the file format (payload fractions 64, 32, 32).
        guard (1...2).contains(b[18]), (1...2).contains(b[19]), b[21] == 64, b[22] == 32, b[23] == 32 else {
            throw FlippioError(
                .notSQLite, "\(file) starts like an SQLite database but its header is damaged.",
                remedy: "The file is damaged or truncated; pull it again from the device.",
                context: ["path": file])
        }
        self.pageSize = pageSize
        writeVersion = b[18]
        readVersion = b[19]
        fileChangeCounter = u32(24)
        pageCount = u32(28)
        schemaCookie = u32(40)
        userVersion = u32(60)
        versionValidFor = u32(92)
        sqliteVersion = u32(96)
    }

    /// Reads and checks the header of the file at `url`.
    ///
    /// - throws: ``FlippioError/Code/notSQLite`` (not a database, with the first line of text
    ///   when the file holds text), ``FlippioError/Code/databaseMissing`` when the file does not
    ///   exist.
    public static func read(fileAt url: URL) throws -> SQLiteHeader {
        let bytes: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            bytes = try handle.read(upToCount: 512) ?? Data()
        } catch {
            if !FileManager.default.fileExists(atPath: url.path) {
                throw FlippioError(.databaseMissing, "\(url.path) does not exist.",
                                   remedy: "Pull the database again.", context: ["path": url.path])
            }
            throw FlippioError(.notSQLite, "Could not read \(url.path): \(error.localizedDescription).",
                               remedy: "Check the file's permissions.", context: ["path": url.path])
        }
        return try SQLiteHeader(bytes: bytes, file: url.path)
    }

    /// Whether `bytes` look like a file SQLite would open (magic string only; no error).
    public static func hasMagic(_ bytes: Data) -> Bool {
        bytes.count >= 16 && Array(bytes.prefix(16)) == magic
    }

    // MARK: - Errors

    static func notSQLite(file: String, bytes: [UInt8]) -> FlippioError {
        if bytes.isEmpty {
            return FlippioError(.notSQLite, "\(file) is empty, not an SQLite database.",
                                remedy: "Pull the database again; if it stays empty, the app has not created it yet.",
                                context: ["path": file])
        }
        if let line = firstTextLine(bytes) {
            return FlippioError(
                .notSQLite, "\(file) is not an SQLite database; it holds text: \"\(line)\".",
                remedy: "The device sent an error message instead of the file; fix what it says and pull again.",
                context: ["path": file, "text": line])
        }
        if bytes.count < length, Array(bytes.prefix(min(bytes.count, 16))) == Array(magic.prefix(min(bytes.count, 16))) {
            return FlippioError(.notSQLite, "\(file) is truncated (\(bytes.count) bytes): not a whole SQLite database.",
                                remedy: "Pull the database again.", context: ["path": file])
        }
        return FlippioError(.notSQLite, "\(file) is not an SQLite database (it does not start with \"SQLite format 3\").",
                            remedy: "Choose an SQLite database file, or pull it again if it should be one.",
                            context: ["path": file])
    }

    /// The first non-empty line when `bytes` are (mostly) printable UTF-8 text, at most 200 characters.
    static func firstTextLine(_ bytes: [UInt8]) -> String? {
        // The 512 bytes read may end inside a multi-byte character: try dropping up to 3 bytes.
        guard let text = (0...3).lazy.compactMap({ String(validating: bytes.dropLast($0), as: UTF8.self) }).first
        else { return nil }
        let printable = text.unicodeScalars.filter { $0.value >= 0x20 || $0 == "\n" || $0 == "\r" || $0 == "\t" }.count
        guard printable * 10 >= text.unicodeScalars.count * 9 else { return nil }
        guard let line = text.split(whereSeparator: \.isNewline)
            .map({ $0.trimmingCharacters(in: .whitespaces) })
            .first(where: { !$0.isEmpty })
        else { return nil }
        return line.count > 200 ? String(line.prefix(200)) + "…" : line
    }
}
