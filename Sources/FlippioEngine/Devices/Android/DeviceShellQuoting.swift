import Foundation

/// Quoting and validation for words that travel to a device shell.
///
/// `adb shell` and `adb exec-out` join their arguments with spaces and hand the result to the
/// device's `/system/bin/sh -c`, so every word that could contain a special character must be
/// quoted for that shell. Package names never need quoting: they are validated instead, and
/// anything else is rejected before it reaches a device.
///
/// For example:
///
/// ```swift
/// DeviceShellQuoting.quote("/data/data/p/databases/it's.db")
/// // '/data/data/p/databases/it'\''s.db'
/// ```
public enum DeviceShellQuoting {
    /// Characters that never need quoting in a POSIX or mksh shell word.
    private static let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-+=:,@%")

    /// `word` as one shell word: unchanged when it holds only safe characters, else single-quoted
    /// with each `'` written as `'\''`.
    public static func quote(_ word: String) -> String {
        if !word.isEmpty, word.allSatisfy({ safe.contains($0) }) { return word }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The words quoted and joined with spaces.
    public static func join(_ words: [String]) -> String {
        words.map(quote).joined(separator: " ")
    }

    /// Whether `name` is a well-formed Android package name (`com.example.notes`): segments of
    /// letters, digits and `_`, each starting with a letter, separated by dots; at most 255 bytes.
    public static func isValidPackageName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 255 else { return false }
        let segments = name.split(separator: ".", omittingEmptySubsequences: false)
        return segments.allSatisfy { segment in
            guard let first = segment.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic else { return false }
            return segment.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }
        }
    }

    /// Whether `path` is safe to name on a device: absolute, no `.`/`..`/empty components, no
    /// control characters, at most 4,096 bytes.
    public static func isSafeDevicePath(_ path: String) -> Bool {
        guard path.hasPrefix("/"), path.utf8.count <= 4096, !containsControlCharacter(path) else { return false }
        let components = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        return !components.isEmpty && components.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// True when `text` holds a C0 or C1 control character or DEL (a newline included).
    public static func containsControlCharacter(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
    }
}
