import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `ifuse` as Debian 12 ships it (1.1.4~git20181007, whose configure still says 1.1.3): mounts an
/// app's container (`--container APPID`) or its Documents (`--documents APPID`) at MOUNTPOINT.
///
/// The texts and exit codes are ifuse's (`src/ifuse.c` at that snapshot): usage and `--version`
/// on stderr with status 0, every failure on stderr with status 1 (EXIT_FAILURE), nothing printed
/// on success (the real one daemonises after mounting).
///
/// Instead of a FUSE daemon speaking AFC, the stand-in bind-mounts the emulated container (the
/// tests run as root), and records the mount in `DIR/UDID/mounts` so that unplugging the device
/// (`IOSStandInDevice.unplug()` in TestSupport) can turn it into what a dead ifuse mount is: a
/// FUSE mount with no daemon, answering ENOTCONN. See docs/DEVSIM.md.
struct IFuse {
    let sim: Simulator

    static let usage = """
        Usage: ifuse MOUNTPOINT [OPTIONS]
        Mount directories of an iOS device locally using fuse.

          -o opt,[opt...]\tmount options
          -u, --udid UDID\tmount specific device by UDID
          -h, --help\t\tprint usage information
          -V, --version\t\tprint version
          -d, --debug\t\tenable libimobiledevice communication debugging
          --documents APPID\tmount 'Documents' folder of app identified by APPID
          --container APPID\tmount sandbox root of an app identified by APPID
          --list-apps\t\tlist installed apps that have file sharing enabled
          --root\t\tmount root file system (jailbroken device required)

        Example:

          $ ifuse /media/iPhone --root

          This mounts the root filesystem of the first attached device on
          this computer in the directory /media/iPhone.


        """

    func run(_ args: [String]) -> Never {
        var udid: String?
        var appID: String?
        var container = false
        var root = false
        var mountPoint: String?
        var scanner = ArgumentScanner(args)
        while let arg = scanner.next() {
            switch arg {
            case "-h", "--help": Output.err(Self.usage); Output.finish(0)
            case "-V", "--version": Output.err("ifuse 1.1.3\n"); Output.finish(0)
            case "-u", "--udid": udid = scanner.next() ?? ""
            case "-d", "--debug": break
            case "--root": root = true
            case "--list-apps": Output.finish(0)
            case "--container", "--documents":
                appID = scanner.next()
                container = arg == "--container"
            case "-o": _ = scanner.next()
            default:
                if arg.hasPrefix("-u") && arg.count > 2 { udid = String(arg.dropFirst(2)); continue }
                if arg.hasPrefix("-o") { continue }
                if arg.hasPrefix("-") {
                    // ifuse hands options it does not know to fuse_main, which refuses them.
                    Output.err("fuse: unknown option `\(arg)'\n")
                    Output.finish(1)
                }
                mountPoint = arg  // as in ifuse, a second operand replaces the first
            }
        }
        if let udid, udid.isEmpty {
            Output.err("ERROR: UDID must not be empty\n")
            Output.finish(1)
        }
        guard let mountPoint else {
            Output.err("ERROR: No mount point specified\n")
            Output.finish(1)
        }
        var info = stat()
        if stat(mountPoint, &info) != 0 {
            if errno == ENOENT {
                Output.err("ERROR: the mount point specified does not exist\n")
            } else {
                Output.err("There was an error accessing the mount point: \(String(cString: strerror(errno)))\n")
            }
            Output.finish(1)
        }

        let visible = sim.usbmuxdDown ? [] : sim.devices().filter { !$0.isNetwork }
        guard let device = udid.map({ id in visible.first { $0.udid == id } }) ?? visible.first else {
            Output.err("No device found, is it connected?\n")
            Output.err("If it is make sure that your user has permissions to access the raw usb device.\n")
            Output.err("If you're still having issues try unplugging the device and reconnecting it.\n")
            Output.finish(1)
        }
        sim.applyFaults(tool: "ifuse", device: device)
        switch device.state {
        case "locked":
            Output.err("Please disable the password protection on your device and try again.\n")
            Output.err("The device does not allow pairing as long as a password has been set.\n")
            Output.err("You can enable it again after the connection succeeded.\n")
            Output.finish(1)
        case "unpaired":
            Output.err("Please dismiss the trust dialog on your device and try again.\n")
            Output.err("The device does not allow pairing as long as the dialog has not been accepted.\n")
            Output.finish(1)
        default:
            break
        }
        if root {
            Output.err("Failed to start AFC service 'com.apple.afc2' on the device.\n")
            Output.err("This service enables access to the root filesystem of your device.\n")
            Output.err("Your device needs to be jailbroken and have the AFC2 service installed.\n")
            Output.finish(1)
        }
        var source = device.folder.appendingPathComponent("media", isDirectory: true)
        if let appID {
            let app = device.config.apps?[appID]
            guard let app, container ? (app.container ?? false) : (app.documents ?? false) else {
                Output.err("ERROR: InstallationLookupFailed\n")
                Output.err("The App '\(appID)' is either not present on the device, or the 'UIFileSharingEnabled' key is not set in its Info.plist. Starting with iOS 8.3 this key is mandatory to allow access to an app's Documents folder.\n")
                Output.finish(1)
            }
            source = device.folder.appendingPathComponent("containers/\(appID)", isDirectory: true)
            // ifuse mounts Documents through fuse's subdir module: the mount's root is Documents.
            if !container { source.appendPathComponent("Documents", isDirectory: true) }
        }
        try? FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
        // fuse 2 refuses a mount point that is not empty (without -o nonempty).
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: mountPoint), !entries.isEmpty {
            Output.err("fuse: mountpoint is not empty\n")
            Output.err("fuse: if you are sure this is safe, use the 'nonempty' mount option\n")
            Output.finish(1)
        }
        guard mount(source.path, mountPoint, nil, UInt(MS_BIND), nil) == 0 else {
            Output.err("fuse: mount failed: \(String(cString: strerror(errno)))\n")
            Output.finish(1)
        }
        let absolute = URL(fileURLWithPath: mountPoint).standardizedFileURL.path
        let line = Data((absolute + "\n").utf8)
        let record = device.folder.appendingPathComponent("mounts")
        if let handle = try? FileHandle(forWritingTo: record) {
            handle.seekToEndOfFile()
            handle.write(line)
            try? handle.close()
        } else {
            try? line.write(to: record)
        }
        Output.finish(0)
    }
}

/// `fusermount` from fuse 2.9.9 (`util/fusermount.c`), as root runs it: `-u` unmounts, `-z`
/// detaches lazily, `-q` keeps quiet; `-V` prints the version. Failures print
/// `fusermount: ...` on stderr and exit 1.
struct FuserMount {
    static let usage = """
        fusermount: [options] mountpoint
        Options:
         -h\t\t    print help
         -V\t\t    print version
         -o opt[,opt...]   mount options
         -u\t\t    unmount
         -q\t\t    quiet
         -z\t\t    lazy unmount

        """

    func run(_ args: [String]) -> Never {
        var unmount = false, lazy = false, quiet = false
        var operands: [String] = []
        for arg in args {
            if arg.hasPrefix("-"), arg.count > 1 {
                for flag in arg.dropFirst() {
                    switch flag {
                    case "u": unmount = true
                    case "z": lazy = true
                    case "q": quiet = true
                    case "V": Output.out("fusermount version: 2.9.9\n"); Output.finish(0)
                    case "h": Output.out(Self.usage); Output.finish(0)
                    default:
                        Output.err("fusermount: invalid option -- '\(flag)'\n")
                        Output.err(Self.usage)
                        Output.finish(1)
                    }
                }
            } else {
                operands.append(arg)
            }
        }
        guard let target = operands.first else {
            Output.err("fusermount: missing mountpoint argument\n")
            Output.finish(1)
        }
        guard unmount else {
            Output.err("fusermount: old style mounting not supported\n")
            Output.finish(1)
        }
        // fusermount resolves only the folder the mount point is in: the mount point itself may be
        // dead or hung, and any look at it (a stat, even Foundation's URL(fileURLWithPath:)) would block.
        let trimmed = target.count > 1 && target.hasSuffix("/") ? String(target.dropLast()) : target
        let slash = trimmed.lastIndex(of: "/")
        let parentPath = slash.map { $0 == trimmed.startIndex ? "/" : String(trimmed[..<$0]) } ?? "."
        let last = slash.map { String(trimmed[trimmed.index(after: $0)...]) } ?? trimmed
        var parent = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath(parentPath, &parent) != nil else {
            Output.err("fusermount: bad mount point \(target): \(String(cString: strerror(errno)))\n")
            Output.finish(1)
        }
        let base = String(cString: parent)
        let resolved = (base == "/" ? "" : base) + "/" + last
        let flags = (lazy ? MNT_DETACH : 0) | 8  // UMOUNT_NOFOLLOW
        if umount2(resolved, Int32(flags)) != 0 {
            if !quiet { Output.err("fusermount: failed to unmount \(resolved): \(String(cString: strerror(errno)))\n") }
            Output.finish(1)
        }
        Output.finish(0)
    }
}
