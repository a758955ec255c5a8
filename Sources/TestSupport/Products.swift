import Foundation

/// Where the package's built executables (`flippio`, `flippio-devsim`) are.
///
/// `swift test` runs the test bundle from the products folder, so the executables sit beside it.
/// `FLIPPIO_BIN_DIR` overrides that.
public enum Products {
    public static var directory: URL {
        if let dir = ProcessInfo.processInfo.environment["FLIPPIO_BIN_DIR"] {
            return URL(fileURLWithPath: dir, isDirectory: true)
        }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // On Linux the test runner is `<products>/flippioPackageTests.xctest`.
        if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
        return dir
    }

    public static func executable(_ name: String) -> URL {
        directory.appendingPathComponent(name)
    }

    /// Finds a system tool on PATH (e.g. `adb`, `sqlite3`), or nil.
    public static func systemTool(_ name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(dir)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }
}
