import Foundation

/// The sample app database of the end-to-end tests: `notes(id, title)` with three rows, made by
/// the real sqlite3 CLI in the given journal mode.
public enum NotesDatabase {
    public static let titles = ["one", "two", "three"]

    public static func create(at url: URL, journalMode: String = "delete") throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Shell.sqlite(url, """
            PRAGMA journal_mode=\(journalMode);
            CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
            INSERT INTO notes(title) VALUES ('one'), ('two'), ('three');
            """)
    }
}
