import Foundation

/// What `stat` says of a database and its `-wal`/`-journal`: size, modification and change
/// times, inode. Two equal signatures mean nobody wrote the files in between.
///
/// Taken without opening the files: opening the live database through another descriptor and
/// closing it would drop SQLite's POSIX locks for the whole process. Two uses:
///
/// - an unwatched folder's rescan compares signatures to find saves inotify could not report;
/// - ``Snapshotter`` compares the signature before and after copying, because a program that
///   rewrites the file without SQLite's locks (a script's `open(O_TRUNC)` + `write`, `cp` over
///   it) is invisible to SQLite: a copy taken in between can be a valid-looking *empty*
///   database, and pushing that would wipe the app's data.
///
/// The change time (`st_ctim`) is kept besides the modification time: `touch -d` and
/// `cp --preserve` can set the modification time back, nothing but the kernel sets the change time.
struct FileSignature: Equatable, Sendable {
    private var parts: [[Int]]

    /// Reads the signature of `database` (following a symbolic link) and of its side files.
    init(_ database: URL) {
        parts = ["", "-wal", "-journal"].map { suffix in
            var info = stat()
            guard stat(database.path + suffix, &info) == 0 else { return [] }
            return [Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec),
                    Int(info.st_ctim.tv_sec), Int(info.st_ctim.tv_nsec), Int(info.st_ino)]
        }
    }

    /// The database file's size in bytes, or nil when it does not exist.
    var size: Int? { parts[0].first }
}
