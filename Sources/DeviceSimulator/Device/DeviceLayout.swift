import Foundation

/// The folders every simulated phone has under its `fs/`.
public enum DeviceLayout {
    /// Creates `data/data`, `data/local/tmp`, `sdcard`, `system/bin`, and the aliases a phone has:
    /// `data/user/0 -> /data/data` and `storage/emulated/0 -> /sdcard` (device-absolute symlinks,
    /// resolved inside the device). Existing files are left alone.
    public static func create(fs: URL) throws {
        let fm = FileManager.default
        for dir in ["data/data", "data/local/tmp", "data/user", "sdcard", "storage/emulated", "system/bin"] {
            try fm.createDirectory(at: fs.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
        for (link, target) in [("data/user/0", "/data/data"), ("storage/emulated/0", "/sdcard"), ("storage/self", "/storage/emulated/0")] {
            let path = fs.appendingPathComponent(link).path
            if (try? fm.destinationOfSymbolicLink(atPath: path)) == nil && !fm.fileExists(atPath: path) {
                try fm.createSymbolicLink(atPath: path, withDestinationPath: target)
            }
        }
    }
}
