import Foundation

/// An external program flippio drives: `adb` for Android, the libimobiledevice tools for iOS.
///
/// Each tool knows how it is configured (``environmentVariable``), which Debian package
/// provides it (``debianPackage``), and how it reports its version.
public enum Tool: String, Sendable, Codable, CaseIterable, Hashable, CustomStringConvertible {
    case adb
    case ideviceID = "idevice_id"
    case ideviceinfo
    case ideviceinstaller
    case afcclient
    /// The iOS file backend where afcclient is missing: a FUSE mount of an app's sandbox.
    case ifuse
    /// Unmounts ifuse mounts (setuid; `fusermount3` from fuse3 is taken when there is no `fusermount`).
    case fusermount

    /// The executable's file name, e.g. `idevice_id`.
    public var executableName: String { rawValue }

    public var description: String { rawValue }

    /// The variable that gives an explicit path, e.g. `FLIPPIO_ADB`, `FLIPPIO_IDEVICE_ID`.
    public var environmentVariable: String { "FLIPPIO_" + rawValue.uppercased() }

    /// The Debian package that installs the tool.
    ///
    /// `afcclient` ships in `libimobiledevice-utils` from 1.3.1 on; older releases (Debian 12's
    /// 1.3.0) lack it, and `ifuse` is the way to an app's files there.
    public var debianPackage: String {
        switch self {
        case .adb: "adb"
        case .ideviceID, .ideviceinfo, .afcclient: "libimobiledevice-utils"
        case .ideviceinstaller: "ideviceinstaller"
        case .ifuse: "ifuse"
        case .fusermount: "fuse3"
        }
    }

    /// The arguments that make the tool print its version and exit.
    public var versionArguments: [String] {
        switch self {
        case .adb: ["version"]
        case .ideviceID, .ideviceinfo, .ideviceinstaller, .afcclient, .ifuse: ["--version"]
        case .fusermount: ["-V"]
        }
    }

    /// Extracts the version from the output of ``versionArguments``, or nil.
    ///
    /// `adb version` prints the protocol version and, on packaged builds, the platform-tools
    /// version; the latter is the one that says which release is installed:
    ///
    /// ```
    /// Android Debug Bridge version 1.0.41
    /// Version 29.0.6-debian
    /// ```
    ///
    /// gives `29.0.6-debian` (and `1.0.41` when there is no `Version` line). The
    /// libimobiledevice tools print `idevice_id 1.3.0` or `afcclient 1.3.1 (readline)`: the
    /// first token that starts with a digit, else the last token. `ifuse --version` prints
    /// `ifuse 1.1.4` (on stderr) and `fusermount -V` prints `fusermount version: 2.9.9`.
    public func parseVersion(_ output: String) -> String? {
        let lines = output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        switch self {
        case .adb:
            if let line = lines.first(where: { $0.hasPrefix("Version ") }),
               let version = line.split(separator: " ").dropFirst().first {
                return String(version)
            }
            if let line = lines.first(where: { $0.hasPrefix("Android Debug Bridge version ") }),
               let version = line.split(separator: " ").last {
                return String(version)
            }
            return nil
        case .ideviceID, .ideviceinfo, .ideviceinstaller, .afcclient, .ifuse, .fusermount:
            guard let line = lines.first(where: { !$0.isEmpty }) else { return nil }
            let tokens = line.split(whereSeparator: \.isWhitespace)
            if let numeric = tokens.dropFirst().first(where: { $0.first?.isNumber == true }) {
                return String(numeric)
            }
            return tokens.count > 1 ? tokens.last.map(String.init) : nil
        }
    }
}

/// What tool discovery found for one ``Tool``.
public struct ToolInfo: Sendable, Codable, Equatable {
    public var tool: Tool
    /// The resolved path, or nil when the tool was not found.
    public var path: String?
    /// The version it reported, when it could be parsed.
    public var version: String?
    /// Why the tool cannot be used, e.g. "not found: install the Debian package `adb`" or
    /// "timed out after 3s"; nil when it can.
    public var problem: String?

    public init(tool: Tool, path: String?, version: String?, problem: String?) {
        self.tool = tool
        self.path = path
        self.version = version
        self.problem = problem
    }

    /// True when the tool was found and answered its version call.
    public var isUsable: Bool { path != nil && problem == nil }
}
