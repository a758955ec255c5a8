import CSQLiteSession
import Foundation
import GRDB

/// One SQLite value, as stored in a row: what a changeset carries and a conflict shows.
///
/// A plain value type (unlike GRDB's `DatabaseValue`, it is `Codable`), so conflicts can go into
/// sidecars and `--json` output. Encoded as `null`, a number, a string or `{"blob": "<base64>"}`;
/// integers and reals keep their storage class (`{"real": 1.0}` for a whole real).
public enum SQLValue: Sendable, Hashable, Codable, CustomStringConvertible {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)

    /// How `sqlite3` prints the value in `.mode quote`: `NULL`, `42`, `1.5`, `'text'`, `X'00ff'`.
    public var description: String {
        switch self {
        case .null: "NULL"
        case .integer(let value): String(value)
        case .real(let value): String(value)
        case .text(let value): "'\(value.replacingOccurrences(of: "'", with: "''"))'"
        case .blob(let data): "X'\(data.map { String(format: "%02x", $0) }.joined())'"
        }
    }

    init(_ value: DatabaseValue) {
        switch value.storage {
        case .null: self = .null
        case .int64(let v): self = .integer(v)
        case .double(let v): self = .real(v)
        case .string(let v): self = .text(v)
        case .blob(let v): self = .blob(v)
        }
    }

    /// Decodes an `sqlite3_value` (from a changeset iterator).
    init(_ value: OpaquePointer) {
        switch fl_value_type(value) {
        case Int32(FL_INTEGER): self = .integer(fl_value_int64(value))
        case Int32(FL_FLOAT): self = .real(fl_value_double(value))
        case Int32(FL_TEXT):
            let count = Int(fl_value_bytes(value))
            if let text = fl_value_text(value) {
                self = .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
            } else {
                self = .text("")
            }
        case Int32(FL_BLOB):
            let count = Int(fl_value_bytes(value))
            if let bytes = fl_value_blob(value), count > 0 {
                self = .blob(Data(bytes: bytes, count: count))
            } else {
                self = .blob(Data())
            }
        default: self = .null
        }
    }

    /// The value as a GRDB statement argument.
    var databaseValue: DatabaseValue {
        switch self {
        case .null: .null
        case .integer(let v): v.databaseValue
        case .real(let v): v.databaseValue
        case .text(let v): v.databaseValue
        case .blob(let v): v.databaseValue
        }
    }

    // MARK: - Codable

    private enum Keys: String, CodingKey { case blob, real }

    public init(from decoder: Decoder) throws {
        if let keyed = try? decoder.container(keyedBy: Keys.self) {
            if let base64 = try keyed.decodeIfPresent(String.self, forKey: .blob) {
                guard let data = Data(base64Encoded: base64) else {
                    throw DecodingError.dataCorruptedError(forKey: .blob, in: keyed, debugDescription: "not base64")
                }
                self = .blob(data)
                return
            }
            self = .real(try keyed.decode(Double.self, forKey: .real))
            return
        }
        let single = try decoder.singleValueContainer()
        if single.decodeNil() { self = .null }
        else if let v = try? single.decode(Int64.self) { self = .integer(v) }
        else if let v = try? single.decode(Double.self) { self = .real(v) }
        else { self = .text(try single.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        switch self {
        case .null:
            var c = encoder.singleValueContainer(); try c.encodeNil()
        case .integer(let v):
            var c = encoder.singleValueContainer(); try c.encode(v)
        case .real(let v) where v.rounded() == v:
            // A whole real would read back as an integer: keep its storage class.
            var c = encoder.container(keyedBy: Keys.self); try c.encode(v, forKey: .real)
        case .real(let v):
            var c = encoder.singleValueContainer(); try c.encode(v)
        case .text(let v):
            var c = encoder.singleValueContainer(); try c.encode(v)
        case .blob(let v):
            var c = encoder.container(keyedBy: Keys.self); try c.encode(v.base64EncodedString(), forKey: .blob)
        }
    }
}

/// A column's name and its value in one row.
public struct ColumnValue: Sendable, Hashable, Codable {
    public let column: String
    public let value: SQLValue

    public init(column: String, value: SQLValue) {
        self.column = column
        self.value = value
    }
}
