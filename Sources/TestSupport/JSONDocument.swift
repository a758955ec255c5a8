import Foundation

/// Reading flippio's `--json` documents in tests: each is an object with `"schemaVersion"` and
/// the data under a key (`{"schemaVersion": 1, "devices": [...]}`, see docs/CLI.md).
public enum JSONDocument {
    /// The value under `key`, decoded as `T`; throws unless the document is an object with
    /// schema version 1.
    public static func decode<T: Decodable>(_ type: T.Type, _ key: String, from data: Data,
                                            decoder: JSONDecoder = JSONDecoder()) throws -> T {
        decoder.userInfo[Field<T>.keyInfo] = key
        let field = try decoder.decode(Field<T>.self, from: data)
        guard field.schemaVersion == 1 else { throw ShellError("schemaVersion is \(field.schemaVersion), not 1") }
        return field.value
    }

    private struct Field<T: Decodable>: Decodable {
        static var keyInfo: CodingUserInfoKey { CodingUserInfoKey(rawValue: "flippio.jsonDocument.key")! }
        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
        let schemaVersion: Int
        let value: T

        init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            schemaVersion = try container.decode(Int.self, forKey: Key(stringValue: "schemaVersion"))
            value = try container.decode(T.self, forKey: Key(stringValue: decoder.userInfo[Self.keyInfo] as? String ?? ""))
        }
    }
}
