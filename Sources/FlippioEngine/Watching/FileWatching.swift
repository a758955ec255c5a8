import Foundation

/// Something that happened in a watched folder.
///
/// Folder URLs in events are directory URLs (`hasDirectoryPath`, standardized); compare
/// folders by `path`, not by URL equality.
public enum WatchEvent: Sendable, Hashable {
    /// A file in the folder at `directory` was created, written, renamed to or from `name`,
    /// removed, or had its attributes changed. Which of these is not told: callers look at the file.
    ///
    /// `directory` is the folder's standardized path without a trailing slash, kept by the watcher
    /// per watch: the event of every write carries it, so it is not built per event (and
    /// ``DatabaseIndex/classify(directory:name:)`` looks it up as it is).
    case changed(directory: String, name: String)
    /// A folder appeared in a watched folder (created or moved in): watch it too.
    case directoryCreated(URL)
    /// A watched folder was removed or moved away; its watch is gone. Reported once per folder.
    case directoryRemoved(URL)
    /// The kernel dropped events (`IN_Q_OVERFLOW`): rescan everything that is watched.
    case overflow
}

/// Watches folders (never single files) and reports changes in them.
///
/// The seam between the sync engine and inotify; ``InotifyWatcher`` is the real one.
///
/// - Important: watch folders, not files: editors that save by writing a temporary file and
///   renaming it over the original replace the inode, and a watch on the old file goes quiet.
public protocol FileWatching: Sendable {
    /// Every event, in kernel order, in batches: one element per read of the kernel queue, never
    /// empty. Ends after ``close()``.
    ///
    /// Batches, not single events: a burst of commits is tens of thousands of events, and every
    /// element of the stream resumes its consumer (a thread wake-up, a context switch), which
    /// costs more than handling the event. The consumer handles a whole read per wake-up.
    var eventBatches: AsyncStream<[WatchEvent]> { get }
    /// Starts watching one folder (not its subfolders). Watching a folder twice is harmless.
    ///
    /// - throws: ``FlippioError/Code/watchLimitReached`` when the kernel limit on watches is hit,
    ///   ``FlippioError/Code/noSuchFile`` when the folder does not exist.
    func watch(directory: URL) throws
    /// Stops watching a folder. Unknown folders are ignored.
    func unwatch(directory: URL)
    /// The folders watched now.
    var watchedDirectories: [URL] { get }
    /// Stops watching everything and ends ``eventBatches``.
    func close()
}
