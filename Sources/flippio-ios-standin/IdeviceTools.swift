import Foundation

/// `idevice_id` as in libimobiledevice 1.3.0 (Debian bookworm's libimobiledevice-utils 1.3.0-6).
struct IdeviceID {
    let sim: Simulator

    static let usage = """
        Usage: idevice_id [OPTIONS] [UDID]

        List attached devices or print device name of given device.

          If UDID is given, the name of the connected device with that UDID  will be retrieved.

        OPTIONS:
          -l, --list      list UDIDs of all devices attached via USB
          -n, --network   list UDIDs of all devices available via network
          -d, --debug     enable communication debugging
          -h, --help      prints usage information
          -v, --version   prints version information

        Homepage:    <https://libimobiledevice.org>
        Bug Reports: <https://github.com/libimobiledevice/libimobiledevice/issues>

        """

    func run(_ args: [String]) -> Never {
        var includeUSB = false, includeNetwork = false
        var udid: String?
        var scanner = ArgumentScanner(args)
        while let arg = scanner.next() {
            switch arg {
            case "-l", "--list": includeUSB = true
            case "-n", "--network": includeNetwork = true
            case "-d", "--debug": break
            case "-h", "--help": Output.out(Self.usage); Output.finish(0)
            case "-v", "--version": Output.out("idevice_id 1.3.0\n"); Output.finish(0)
            default:
                if arg.hasPrefix("-") { Output.err(Self.usage); Output.finish(2) }
                udid = arg
            }
        }
        if let udid, !includeUSB, !includeNetwork {
            let device = sim.usbmuxdDown ? nil : sim.device(udid: udid)
            sim.applyFaults(tool: "idevice_id", device: device)
            guard let device else {
                Output.err("ERROR: No device with UDID \(udid) attached.\n")
                Output.finish(254)
            }
            Output.out("\(device.name)\n")
            Output.finish(0)
        }
        guard includeUSB || includeNetwork else { Output.err(Self.usage); Output.finish(2) }
        sim.applyFaults(tool: "idevice_id", device: nil)
        if sim.usbmuxdDown {
            Output.err("ERROR: Unable to retrieve device list!\n")
            Output.finish(255)
        }
        for device in sim.devices() {
            if device.isNetwork ? !includeNetwork : !includeUSB { continue }
            var line = device.udid
            if includeUSB && includeNetwork { line += device.isNetwork ? " (Network)" : " (USB)" }
            Output.out(line + "\n")
        }
        Output.finish(0)
    }
}

/// lockdownd's refusal as libimobiledevice 1.3.0 names it (`lockdownd_strerror`, error code).
func lockdownRefusal(_ device: SimDevice) -> (text: String, code: Int)? {
    switch device.state {
    case "locked": ("Password protected", -17)
    case "unpaired": ("Pairing dialog response pending", -19)
    default: nil
    }
}

/// `ideviceinfo` as in libimobiledevice 1.3.0.
struct IdeviceInfo {
    let sim: Simulator

    func run(_ args: [String]) -> Never {
        var udid: String?, key: String?, domain: String?
        var xml = false
        var scanner = ArgumentScanner(args)
        while let arg = scanner.next() {
            switch arg {
            case "-u", "--udid":
                guard let value = scanner.next(), !value.isEmpty else {
                    Output.err("ERROR: UDID must not be empty!\n"); Output.finish(2)
                }
                udid = value
            case "-k", "--key": key = scanner.next()
            case "-q", "--domain": domain = scanner.next()
            case "-x", "--xml": xml = true
            case "-n", "--network", "-s", "--simple", "-d", "--debug": break
            case "-v", "--version": Output.out("ideviceinfo 1.3.0\n"); Output.finish(0)
            case "-h", "--help": Output.out("Usage: ideviceinfo [OPTIONS]\n"); Output.finish(0)
            default: Output.err("Usage: ideviceinfo [OPTIONS]\n"); Output.finish(2)
            }
        }
        let device: SimDevice? = sim.usbmuxdDown ? nil : (udid.map { sim.device(udid: $0) } ?? sim.devices().first)
        sim.applyFaults(tool: "ideviceinfo", device: device)
        guard let device else {
            // 1.3.0 prints these two on stdout.
            Output.out(udid.map { "ERROR: Device \($0) not found!\n" } ?? "ERROR: No device found!\n")
            Output.finish(255)
        }
        if let refusal = lockdownRefusal(device) {
            Output.err("ERROR: Could not connect to lockdownd: \(refusal.text) (\(refusal.code))\n")
            Output.finish(255)
        }
        let values: [(String, String)] = [
            ("ActivationState", "Activated"),
            ("DeviceClass", "iPhone"),
            ("DeviceName", device.name),
            ("PasswordProtected", "false"),
            ("ProductName", "iPhone OS"),
            ("ProductType", device.config.productType ?? "iPhone14,5"),
            ("ProductVersion", device.config.productVersion ?? "17.5"),
            ("UniqueDeviceID", device.udid),
        ]
        guard domain == nil else { Output.finish(0) }  // no domain values in the stand-in
        if let key {
            // lockdownd_get_value fails for unknown keys: nothing printed, status 0.
            guard let value = values.first(where: { $0.0 == key })?.1 else { Output.finish(0) }
            if xml {
                let node: PlistNode = key == "PasswordProtected" ? .bool(value == "true") : .string(value)
                Output.out(PlistXML.document(node))
            } else {
                Output.out(value + "\n")
            }
            Output.finish(0)
        }
        if xml {
            Output.out(PlistXML.document(.dict(values.map { ($0.0, $0.0 == "PasswordProtected" ? .bool(false) : .string($0.1)) })))
        } else {
            for (name, value) in values { Output.out("\(name): \(value)\n") }
        }
        Output.finish(0)
    }
}

/// `ideviceinstaller` 1.1.1 (Debian bookworm), or the later `list` command syntax when
/// `DIR/tools.json` says `"ideviceinstaller": "1.2.0"`.
struct IdeviceInstaller {
    let sim: Simulator

    func run(_ args: [String]) -> Never {
        let modern = sim.installerVersion() != "1.1.1"
        var udid: String?
        var list = false
        var options: [String] = []
        var positional: [String] = []
        var scanner = ArgumentScanner(args)
        while let arg = scanner.next() {
            switch arg {
            case "-u", "--udid":
                guard let value = scanner.next(), !value.isEmpty else {
                    Output.out("ERROR: UDID must not be empty!\n"); Output.finish(2)
                }
                udid = value
            case "-l" where !modern, "--list-apps" where !modern: list = true
            case "-o" where !modern, "--options" where !modern:
                options += (scanner.next() ?? "").split(separator: ",").map(String.init)
            case "--xml" where modern: options.append("xml")
            case "--all" where modern: options.append("list_all")
            case "--system" where modern: options.append("list_system")
            case "--user" where modern: options.append("list_user")
            case "-n", "--network", "-d", "--debug", "-w", "--notify-wait": break
            case "-v", "--version":
                Output.out("ideviceinstaller \(sim.installerVersion())\n"); Output.finish(0)
            case "-h", "--help": Output.out("Usage: ideviceinstaller OPTIONS\n"); Output.finish(0)
            default:
                if arg.hasPrefix("-") {
                    Output.err("ideviceinstaller: invalid option -- '\(arg.drop(while: { $0 == "-" }))'\n")
                    Output.err("Usage: ideviceinstaller OPTIONS\n")
                    Output.finish(2)
                }
                positional.append(arg)
            }
        }
        if modern {
            guard positional.first == "list" else {
                Output.err("ERROR: Missing command.\n\nUsage: ideviceinstaller OPTIONS\n"); Output.finish(2)
            }
            list = true
        } else if !list || !positional.isEmpty {
            if !list { Output.out("ERROR: No mode/command was supplied.\n") }
            Output.out("Usage: ideviceinstaller OPTIONS\n")
            Output.finish(2)
        }
        let device: SimDevice? = sim.usbmuxdDown ? nil : (udid.map { sim.device(udid: $0) } ?? sim.devices().first)
        sim.applyFaults(tool: "ideviceinstaller", device: device)
        guard let device else {
            Output.err(udid.map { "No device found with udid \($0).\n" } ?? "No device found.\n")
            Output.finish(modern ? 1 : 255)
        }
        if let refusal = lockdownRefusal(device) {
            if modern {
                Output.err("Could not connect to lockdownd: \(refusal.text). Exiting.\n")
                Output.finish(1)
            }
            Output.err("Could not connect to lockdownd. Exiting.\n")
            Output.finish(255)
        }
        let showSystem = options.contains("list_system") || options.contains("list_all")
        let showUser = !options.contains("list_system") || options.contains("list_all") || options.contains("list_user")
        let apps = (device.config.apps ?? [:]).sorted { $0.key < $1.key }.filter { _, app in
            (app.system ?? false) ? showSystem : showUser
        }
        if options.contains("xml") {
            let nodes: [PlistNode] = apps.map { id, app in
                var entries: [(String, PlistNode)] = [("ApplicationType", .string((app.system ?? false) ? "System" : "User"))]
                if let name = app.name { entries.append(("CFBundleDisplayName", .string(name))) }
                entries.append(("CFBundleExecutable", .string(app.name ?? "App")))
                entries.append(("CFBundleIdentifier", .string(id)))
                if let name = app.name { entries.append(("CFBundleName", .string(name))) }
                if let version = app.version { entries.append(("CFBundleShortVersionString", .string(version))) }
                if let build = app.build ?? app.version { entries.append(("CFBundleVersion", .string(build))) }
                entries.append(("Path", .string("/private/var/containers/Bundle/Application/\(fakeUUID(id))/\(app.name ?? "App").app")))
                if app.documents ?? false { entries.append(("UIFileSharingEnabled", .bool(true))) }
                return .dict(entries)
            }
            // `puts(xml)`: the document plus one more newline.
            Output.out(PlistXML.document(.array(nodes)) + "\n")
            Output.finish(0)
        }
        if modern {
            Output.out("CFBundleIdentifier, CFBundleShortVersionString, CFBundleDisplayName\n")
            for (id, app) in apps {
                let version = app.version.map { "\"\($0)\"" } ?? ""
                let name = app.name.map { "\"\($0)\"" } ?? ""
                Output.out("\(id), \(version), \(name)\n")
            }
        } else {
            Output.out("CFBundleIdentifier, CFBundleVersion, CFBundleDisplayName\n")
            for (id, app) in apps {
                var line = id
                if let build = app.build ?? app.version { line += ", \"\(build)\"" }
                line += ", \"\(app.name ?? id)\""
                Output.out(line + "\n")
            }
        }
        Output.finish(0)
    }

    private func fakeUUID(_ id: String) -> String {
        var hash: UInt64 = 1469598103934665603
        for byte in id.utf8 { hash = (hash ^ UInt64(byte)) &* 1099511628211 }
        let hex = String(format: "%016llX%016llX", hash, hash &* 31)
        let chars = Array(hex)
        return "\(String(chars[0..<8]))-\(String(chars[8..<12]))-\(String(chars[12..<16]))-\(String(chars[16..<20]))-\(String(chars[20..<32]))"
    }
}

/// A property list value, written the way libplist 2.2.0's `plist_to_xml` writes it.
indirect enum PlistNode {
    case string(String)
    case bool(Bool)
    case integer(Int64)
    case array([PlistNode])
    case dict([(String, PlistNode)])
}

enum PlistXML {
    static func document(_ node: PlistNode) -> String {
        var text = """
            <?xml version="1.0" encoding="UTF-8"?>
            <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
            <plist version="1.0">

            """
        write(node, depth: 0, into: &text)
        text += "</plist>\n"
        return text
    }

    private static func write(_ node: PlistNode, depth: Int, into text: inout String) {
        let indent = String(repeating: "\t", count: depth)
        switch node {
        case .string(let value): text += "\(indent)<string>\(escape(value))</string>\n"
        case .bool(let value): text += "\(indent)<\(value ? "true" : "false")/>\n"
        case .integer(let value): text += "\(indent)<integer>\(value)</integer>\n"
        case .array(let items):
            if items.isEmpty { text += "\(indent)<array/>\n"; return }
            text += "\(indent)<array>\n"
            for item in items { write(item, depth: depth + 1, into: &text) }
            text += "\(indent)</array>\n"
        case .dict(let entries):
            if entries.isEmpty { text += "\(indent)<dict/>\n"; return }
            text += "\(indent)<dict>\n"
            for (key, value) in entries {
                text += "\(indent)\t<key>\(escape(key))</key>\n"
                write(value, depth: depth + 1, into: &text)
            }
            text += "\(indent)</dict>\n"
        }
    }

    private static func escape(_ text: String) -> String {
        var out = ""
        for ch in text {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            default: out.append(ch)
            }
        }
        return out
    }
}
