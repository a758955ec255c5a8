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

    /// The tracked databases of one folder, and what an event for each name that concerns them means.
    private struct Folder: Sendable {
        /// file name → tracked database.
        var databases: [String: URL] = [:]
        /// Every name whose event concerns a tracked database here (`x.db`, `x.db-wal`,
        /// `x.db-journal`, `x.db.flippio.json`) → its classification, computed when tracking, so that
        /// `classify(directory: String, name:)` is two lookups: no string is
        /// built, nothing is allocated.
        var names: [String: Classification] = [:]
    }

    /// folder path → its tracked databases.
    private var folders: [String: Folder] = [:]
    private let stateDirectoryPath: String?
    /// `stateDirectoryPath + "/"`, built once.
    private let stateDirectoryPrefix: String?

    /// - parameter stateDirectory: the workspace's state folder (``Workspace/stateDirectory``);
    ///   events in it or below are always ignored.
    public init(stateDirectory: URL? = nil) {
        stateDirectoryPath = stateDirectory.map { Self.key($0) }
        stateDirectoryPrefix = stateDirectoryPath.map { $0 + "/" }
    }

    /// Starts mapping events for `database`'s family to it. Tracking twice is harmless.
    public mutating func track(_ database: URL) {
        let database = database.standardizedFileURL
        let directory = Self.key(database.deletingLastPathComponent()), name = database.lastPathComponent
        folders[directory, default: Folder()].databases[name] = database
        refreshNames(around: name, in: directory)
    }

    /// Stops mapping events for `database`.
    public mutating func untrack(_ database: URL) {
        let database = database.standardizedFileURL
        let directory = Self.key(database.deletingLastPathComponent()), name = database.lastPathComponent
        guard folders[directory]?.databases.removeValue(forKey: name) != nil else { return }
        if folders[directory]?.databases.isEmpty == true {
            folders[directory] = nil
        } else {
            refreshNames(around: name, in: directory)
        }
    }

    /// Whether `database` is tracked.
    public func contains(_ database: URL) -> Bool {
        let database = database.standardizedFileURL
        return folders[Self.key(database.deletingLastPathComponent())]?.databases[database.lastPathComponent] != nil
    }

    /// Every tracked database.
    public var databases: [URL] {
        folders.values.flatMap(\.databases.values).sorted { $0.path < $1.path }
    }

    /// The folders that hold tracked databases (each must be watched), as directory URLs.
    public var directories: Set<URL> {
        Set(folders.keys.map { URL(fileURLWithPath: $0, isDirectory: true) })
    }

    /// Which database (or sidecar) an event for `name` in `directory` concerns.
    ///
    /// Standardizes `directory` first (5 to 10 µs): the watcher's events carry the folder's path
    /// already, for `classify(directory: String, name:)`.
    public func classify(directory: URL, name: String) -> Classification {
        classify(directory: Self.key(directory), name: name)
    }

    /// Which database (or sidecar) an event for `name` in the folder at `directory` concerns.
    ///
    /// The hot path of every inotify event: two dictionary lookups, no allocation, except for
    /// the sidecar of a database that is not tracked yet (its URL is built).
    ///
    /// - parameter directory: the folder's standardized path without a trailing slash, as
    ///   ``WatchEvent/changed(directory:name:)`` carries it.
    public func classify(directory: String, name: String) -> Classification {
        if let state = stateDirectoryPath, let prefix = stateDirectoryPrefix,
           directory == state || directory.hasPrefix(prefix) {
            return .ignored
        }
        if SidecarStore.isTemporaryFileName(name) { return .ignored }
        if let known = folders[directory]?.names[name] { return known }
        // Not about a tracked database: only the sidecar of one not tracked yet still counts.
        if let database = Self.sidecarDatabaseName(name) {
            return .sidecar(URL(fileURLWithPath: directory, isDirectory: true).appendingPathComponent(database, isDirectory: false))
        }
        return .ignored  // -shm, editors' temp files, conflict copies, unrelated files
    }

    // MARK: - Private

    /// Recomputes the names whose meaning depends on whether `name` is tracked in `directory`:
    /// itself, its `-wal`/`-journal` and its sidecar.
    private mutating func refreshNames(around name: String, in directory: String) {
        guard var folder = folders.removeValue(forKey: directory) else { return }
        for candidate in [name, name + Sidecar.fileSuffix] + Self.contentSuffixes.map({ name + $0 }) {
            folder.names[candidate] = Self.resolve(candidate, among: folder.databases)
        }
        folders[directory] = folder
    }

    /// What an event for `name` means among the tracked `databases` of its folder; nil when it
    /// concerns none of them. The order matters: a sidecar name is a sidecar, an exact name is
    /// that database, and only then a `-wal`/`-journal` belongs to the database it extends.
    private static func resolve(_ name: String, among databases: [String: URL]) -> Classification? {
        if let database = sidecarDatabaseName(name) {
            return databases[database].map { .sidecar($0) }
        }
        if let database = databases[name] { return .database(database) }
        for suffix in contentSuffixes where name.hasSuffix(suffix) {
            if let database = databases[String(name.dropLast(suffix.count))] { return .database(database) }
        }
        return nil
    }

    /// `x.db.flippio.json` → `x.db`; nil for any other name (and for `.flippio.json` alone).
    private static func sidecarDatabaseName(_ name: String) -> String? {
        guard name.hasSuffix(Sidecar.fileSuffix), name.utf8.count > Sidecar.fileSuffix.utf8.count else { return nil }
        return String(name.dropLast(Sidecar.fileSuffix.count))
    }

    /// A folder's path without a trailing slash, as dictionary key.
    private static func key(_ url: URL) -> String {
        var path = url.standardizedFileURL.path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }
}
