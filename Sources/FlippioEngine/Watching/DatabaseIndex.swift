import Foundation

/// Maps a file event `(folder, name)` to the tracked database it concerns, in O(1).
///
/// A database is a family of files: `x.db`, `x.db-wal`, `x.db-journal`, and whatever an editor
/// renames over `x.db` (that arrives as an event for `x.db` itself). All map to `x.db`.
/// Ignored, so that neither reading nor the agent's own work triggers a push:
///
/// - `x.db-shm` (SQLite writes it on every read in WAL mode),
/// - sidecars' temporary files (`.x.db.flippio.json.tmp-*`),
/// - everything under the workspace's state folder (`.flippio/`: snapshots, locks),
/// - any file that is not a tracked database's family (conflict copies `x.device-*.db`,
///   editors' temporary files before their rename).
///
/// A sidecar (`x.db.flippio.json`) appearing or changing is reported as
/// ``Classification/sidecar(_:)`` even when `x.db` is not tracked yet, so a database pulled by
/// another process while the agent runs is picked up. The agent's own sidecar writes arrive the
/// same way: treat the signal as "re-read the sidecar", which is idempotent.
///
/// For example:
///
/// ```swift
/// var index = DatabaseIndex(stateDirectory: workspace.stateDirectory)
/// index.track(db)
/// switch index.classify(directory: folder, name: "x.db-wal") {
/// case .database(let db): settler.note(db)
/// case .sidecar(let db): reload(db)
/// case .ignored: break
/// }
/// ```
public struct DatabaseIndex: Sendable {
    /// What an event is about.
    public enum Classification: Sendable, Hashable {
        /// A file of this tracked database's family changed.
        case database(URL)
        /// The sidecar of this database (tracked or not) changed, appeared or went away.
        case sidecar(URL)
        /// Not the user's edit of a tracked database.
        case ignored
    }

    /// Suffixes of a database's family that mean its content may have changed.
    public static let contentSuffixes = ["-wal", "-journal"]
    /// Suffixes of a database's family that never mean a change (reads write `-shm`).
    public static let ignoredSuffixes = ["-shm"]

    /// folder path → file name → database.
    private var byDirectory: [String: [String: URL]] = [:]
    private let stateDirectoryPath: String?

    /// - parameter stateDirectory: the workspace's state folder (``Workspace/stateDirectory``);
    ///   events in it or below are always ignored.
    public init(stateDirectory: URL? = nil) {
        stateDirectoryPath = stateDirectory.map { Self.key($0) }
    }

    /// Starts mapping events for `database`'s family to it. Tracking twice is harmless.
    public mutating func track(_ database: URL) {
        let database = database.standardizedFileURL
        byDirectory[Self.key(database.deletingLastPathComponent()), default: [:]][database.lastPathComponent] = database
    }

    /// Stops mapping events for `database`.
    public mutating func untrack(_ database: URL) {
        let database = database.standardizedFileURL
        let directory = Self.key(database.deletingLastPathComponent())
        byDirectory[directory]?[database.lastPathComponent] = nil
        if byDirectory[directory]?.isEmpty == true { byDirectory[directory] = nil }
    }

    /// Whether `database` is tracked.
    public func contains(_ database: URL) -> Bool {
        let database = database.standardizedFileURL
        return byDirectory[Self.key(database.deletingLastPathComponent())]?[database.lastPathComponent] != nil
    }

    /// Every tracked database.
    public var databases: [URL] {
        byDirectory.values.flatMap(\.values).sorted { $0.path < $1.path }
    }

    /// The folders that hold tracked databases (each must be watched), as directory URLs.
    public var directories: Set<URL> {
        Set(byDirectory.keys.map { URL(fileURLWithPath: $0, isDirectory: true) })
    }

    /// Which database (or sidecar) an event for `name` in `directory` concerns.
    public func classify(directory: URL, name: String) -> Classification {
        let directoryKey = Self.key(directory)
        if let state = stateDirectoryPath, directoryKey == state || directoryKey.hasPrefix(state + "/") {
            return .ignored
        }
        if SidecarStore.isTemporaryFileName(name) { return .ignored }
        if name.hasSuffix(Sidecar.fileSuffix), name.utf8.count > Sidecar.fileSuffix.utf8.count {
            let database = String(name.dropLast(Sidecar.fileSuffix.count))
            if let tracked = byDirectory[directoryKey]?[database] { return .sidecar(tracked) }
            return .sidecar(URL(fileURLWithPath: directoryKey, isDirectory: true).appendingPathComponent(database, isDirectory: false))
        }
        guard let family = byDirectory[directoryKey] else { return .ignored }
        if let database = family[name] { return .database(database) }
        for suffix in Self.contentSuffixes where name.hasSuffix(suffix) {
            if let database = family[String(name.dropLast(suffix.count))] { return .database(database) }
        }
        return .ignored  // -shm, editors' temp files, conflict copies, unrelated files
    }

    /// A folder's path without a trailing slash, as dictionary key.
    private static func key(_ url: URL) -> String {
        var path = url.standardizedFileURL.path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }
}
