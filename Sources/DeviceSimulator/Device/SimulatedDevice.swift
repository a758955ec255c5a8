import Foundation

/// One device as read from its folder for one request: `DIR/SERIAL/device.json` and `DIR/SERIAL/fs/`.
///
/// The folder is re-read on every request, so a test edits a file to change the device.
struct SimulatedDevice: Sendable {
    let serial: String
    /// `DIR/SERIAL/`.
    let root: URL
    /// `DIR/SERIAL/fs/`: the device's `/`.
    let fsRoot: URL
    let config: DeviceConfig

    /// The app's Linux uid (10000 + a stable hash of the name unless `device.json` gives one).
    func uid(of package: String) -> Int {
        if let uid = config.packages[package]?.uid { return uid }
        var hash: UInt32 = 2_166_136_261
        for byte in package.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return 10_000 + Int(hash % 9_000) + 100
    }

    /// `u0_a123` for uid 10123, as `ls -l` and `id` show app users.
    func userName(uid: Int) -> String {
        switch uid {
        case 0: return "root"
        case 1000: return "system"
        case 2000: return "shell"
        case 1023: return "media_rw"
        default: return uid >= 10_000 ? "u0_a\(uid - 10_000)" : String(uid)
        }
    }

    /// The system properties `getprop` knows.
    var properties: [String: String] {
        var p: [String: String] = [
            "ro.product.model": config.model,
            "ro.product.name": config.productName,
            "ro.product.device": config.deviceName,
            "ro.product.manufacturer": "Google",
            "ro.product.brand": "google",
            "ro.build.version.release": config.release,
            "ro.build.version.sdk": String(config.sdk),
            "ro.build.type": config.su ? "userdebug" : "user",
            "ro.debuggable": config.su ? "1" : "0",
            "ro.secure": "1",
            "ro.serialno": serial,
            "ro.product.cpu.abi": "arm64-v8a",
            "sys.boot_completed": "1",
            "persist.sys.timezone": "UTC",
        ]
        for (k, v) in config.props ?? [:] { p[k] = v }
        return p
    }
}
