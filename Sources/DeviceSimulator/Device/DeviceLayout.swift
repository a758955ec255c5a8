import Foundation
import Glibc

/// The folders every simulated phone has under its `fs/`.
public enum DeviceLayout {
    /// Creates `data/data`, `data/local/tmp`, `sdcard`, `system/bin`, and the aliases a phone has:
    /// `data/user/0 -> /data/data` and `storage/emulated/0 -> /sdcard` (device-absolute symlinks,
    /// resolved inside the device). Existing files are left alone, so it can run on every request.
    ///
    /// Each folder is made with a plain `mkdir`, one component at a time, never with "create
    /// intermediate folders": when the device's folder is renamed away (unplugged) while a request
    /// runs, the `mkdir`s fail instead of re-creating a stray `SERIAL/fs` that would keep the
    /// device from being plugged back in.
    public static func create(fs: URL) throws {
        let fm = FileManager.default
        guard mkdirIfMissing(fs.path) else { return }
        for dir in ["data", "data/data", "data/local", "data/local/tmp", "data/user", "sdcard", "storage", "storage/emulated",
                    "system", "system/bin"] {
            guard mkdirIfMissing(fs.appendingPathComponent(dir).path) else { return }
        }
        for (link, target) in [("data/user/0", "/data/data"), ("storage/emulated/0", "/sdcard"), ("storage/self", "/storage/emulated/0")] {
            let path = fs.appendingPathComponent(link).path
            if (try? fm.destinationOfSymbolicLink(atPath: path)) == nil && !fm.fileExists(atPath: path) {
                try fm.createSymbolicLink(atPath: path, withDestinationPath: target)
            }
        }
    }

    /// `mkdir PATH` unless something is there already (a folder, or a symlink the user made);
    /// false when it could not be made (its parent is gone).
    private static func mkdirIfMissing(_ path: String) -> Bool {
        if Glibc.mkdir(path, 0o771) == 0 || errno == EEXIST { return true }
        return false
    }
}
