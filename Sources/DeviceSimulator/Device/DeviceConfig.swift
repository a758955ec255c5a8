import Foundation

/// The contents of a simulated device's `device.json`.
///
/// Every field is optional in the file; missing fields take the defaults documented here.
/// For example:
///
/// ```json
/// {"state": "device", "model": "Pixel 7", "release": "14", "sdk": 34, "su": false,
///  "packages": {"com.example.notes": {"debuggable": true}, "com.android.chrome": {"debuggable": false, "system": true}}}
/// ```
public struct DeviceConfig: Codable, Sendable, Equatable {
    /// `device`, `offline` or `unauthorized` (any other text is shown as is). The default is `device`.
    public var state: String
    /// `ro.product.model`. The default is `Pixel 7`.
    public var model: String
    /// `ro.build.version.release`. The default is `14`.
    public var release: String
    /// `ro.build.version.sdk`. The default is 34.
    public var sdk: Int
    /// Whether `su` exists (a rooted device or an emulator image). The default is false.
    public var su: Bool
    /// Installed packages by name.
    public var packages: [String: PackageConfig]
    /// `ro.product.name` (`product:` in `adb devices -l`); derived from the model when absent.
    public var product: String?
    /// `ro.product.device` (`device:` in `adb devices -l`); derived from the model when absent.
    public var device: String?
    /// Extra or overriding system properties for `getprop`.
    public var props: [String: String]?
    /// Toybox applets switched off, by name: `{"inotifyd": false}` makes `inotifyd` missing, as on
    /// devices whose toybox was built without it. Absent: every applet the simulator knows exists.
    public var applets: [String: Bool]?

    public init(
        state: String = "device", model: String = "Pixel 7", release: String = "14", sdk: Int = 34,
        su: Bool = false, packages: [String: PackageConfig] = [:], product: String? = nil,
        device: String? = nil, props: [String: String]? = nil, applets: [String: Bool]? = nil
    ) {
        self.state = state
        self.model = model
        self.release = release
        self.sdk = sdk
        self.su = su
        self.packages = packages
        self.product = product
        self.device = device
        self.props = props
        self.applets = applets
    }

    enum CodingKeys: String, CodingKey { case state, model, release, sdk, su, packages, product, device, props, applets }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        state = try c.decodeIfPresent(String.self, forKey: .state) ?? "device"
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? "Pixel 7"
        if let s = try? c.decodeIfPresent(String.self, forKey: .release) {
            release = s
        } else if let n = try? c.decodeIfPresent(Int.self, forKey: .release) {
            release = String(n)
        } else {
            release = "14"
        }
        if let n = try? c.decodeIfPresent(Int.self, forKey: .sdk) {
            sdk = n
        } else if let s = try? c.decodeIfPresent(String.self, forKey: .sdk), let n = Int(s) {
            sdk = n
        } else {
            sdk = 34
        }
        su = try c.decodeIfPresent(Bool.self, forKey: .su) ?? false
        packages = try c.decodeIfPresent([String: PackageConfig].self, forKey: .packages) ?? [:]
        product = try c.decodeIfPresent(String.self, forKey: .product)
        device = try c.decodeIfPresent(String.self, forKey: .device)
        props = try c.decodeIfPresent([String: String].self, forKey: .props)
        applets = try c.decodeIfPresent([String: Bool].self, forKey: .applets)
    }

    /// Whether the toybox applet `name` exists on this device (see ``applets``).
    func hasApplet(_ name: String) -> Bool { applets?[name] ?? true }

    /// `product:` and `device:` when the file does not name them: the model in lower case, `_` for spaces.
    var productName: String { product ?? model.lowercased().replacingOccurrences(of: " ", with: "_") }
    var deviceName: String { device ?? model.lowercased().replacingOccurrences(of: " ", with: "_") }
}

/// One installed package in ``DeviceConfig/packages``.
public struct PackageConfig: Codable, Sendable, Equatable {
    /// Whether `run-as` works for it (`android:debuggable`). The default is false.
    public var debuggable: Bool
    /// A system package: left out of `pm list packages -3`. The default is false.
    public var system: Bool
    /// The app's Linux uid; derived from the package name when absent (10000 + a stable hash).
    public var uid: Int?
    /// The activity the home screen starts (`MAIN`/`LAUNCHER`): a class name, `.Name` for one in the
    /// package. The default is `.MainActivity`; an empty string means none (a service-only app).
    public var launcher: String?

    public init(debuggable: Bool = false, system: Bool = false, uid: Int? = nil, launcher: String? = nil) {
        self.debuggable = debuggable
        self.system = system
        self.uid = uid
        self.launcher = launcher
    }

    /// The launcher activity's full class name, or nil when the app has none.
    public func launcherClass(package: String) -> String? {
        let name = launcher ?? ".MainActivity"
        if name.isEmpty { return nil }
        return name.hasPrefix(".") ? package + name : name
    }

    enum CodingKeys: String, CodingKey { case debuggable, system, uid, launcher }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        debuggable = try c.decodeIfPresent(Bool.self, forKey: .debuggable) ?? false
        system = try c.decodeIfPresent(Bool.self, forKey: .system) ?? false
        uid = try c.decodeIfPresent(Int.self, forKey: .uid)
        launcher = try c.decodeIfPresent(String.self, forKey: .launcher)
    }
}
