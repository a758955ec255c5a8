import Foundation
import Testing
import TestSupport

/// The stand-ins print what the real tools print (Fixtures/ios, captured from Debian bookworm's
/// libimobiledevice-utils 1.3.0 and ideviceinstaller 1.1.1), byte for byte.
@Suite struct IOSStandInTests {
    static let udid = "00008030-001A35E22E10802E"

    static func fixture(_ name: String) throws -> String {
        try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/ios").appendingPathComponent(name), encoding: .utf8)
    }

    static func run(_ ios: IOSStandIns, _ tool: String, _ args: [String]) throws -> ShellResult {
        try Shell.run(ios.tool(tool), args, environment: ios.environment, timeout: 30)
    }

    @Test func versionsAndListingMatchTheRealTools() throws {
        let ios = try IOSStandIns()
        try ios.addDevice(udid: Self.udid)
        #expect(try Self.run(ios, "idevice_id", ["--version"]).out == Self.fixture("idevice_id-1.3.0-version.stdout"))
        #expect(try Self.run(ios, "ideviceinfo", ["--version"]).out == Self.fixture("ideviceinfo-1.3.0-version.stdout"))
        #expect(try Self.run(ios, "ideviceinstaller", ["--version"]).out == Self.fixture("ideviceinstaller-1.1.1-version.stdout"))
        let list = try Self.run(ios, "idevice_id", ["-l"])
        #expect(try list.status == 0 && list.out == Self.fixture("idevice_id-1.3.0-list.stdout"))
        #expect(try Self.run(ios, "idevice_id", ["-n"]).out == "")
    }

    @Test func usbmuxdDownMatchesTheRealTools() throws {
        let ios = try IOSStandIns()
        try ios.addDevice(udid: Self.udid)
        try ios.setUsbmuxdDown(true)
        let list = try Self.run(ios, "idevice_id", ["-l"])
        #expect(try list.status == 255 && list.out.isEmpty && list.err == Self.fixture("idevice_id-1.3.0-usbmuxd-down.stderr"))
        let info = try Self.run(ios, "ideviceinfo", ["-u", Self.udid, "-k", "DeviceName"])
        #expect(try info.status == 255 && info.err.isEmpty && info.out == Self.fixture("ideviceinfo-1.3.0-device-not-found.stdout"))
        let apps = try Self.run(ios, "ideviceinstaller", ["-u", Self.udid, "-l", "-o", "xml"])
        #expect(try apps.status == 255 && apps.out.isEmpty && apps.err == Self.fixture("ideviceinstaller-1.1.1-no-device.stderr"))
        let afc = try Self.run(ios, "afcclient", ["-u", Self.udid, "--container", "x", "--", "ls", "/"])
        #expect(afc.status == 1 && afc.err == "No device found. Plug in a device or pass UDID with -u to wait for device to be available.\n")
    }

    @Test func lockdownRefusalsMatchTheRealFormats() throws {
        let ios = try IOSStandIns()
        let device = try ios.addDevice(udid: Self.udid, state: .locked)
        let info = try Self.run(ios, "ideviceinfo", ["-u", Self.udid, "-k", "DeviceName"])
        #expect(info.status == 255 && info.err == "ERROR: Could not connect to lockdownd: Password protected (-17)\n")
        let apps = try Self.run(ios, "ideviceinstaller", ["-u", Self.udid, "-l"])
        #expect(try apps.status == 255 && apps.err == Self.fixture("ideviceinstaller-1.1.1-lockdown.stderr"))
        try device.setState(.ready)
        #expect(try Self.run(ios, "ideviceinfo", ["-u", Self.udid, "-k", "DeviceName"]).out == "Ana's iPhone\n")
    }

    @Test func xmlListingIsLibplistsFormat() throws {
        let ios = try IOSStandIns()
        try ios.addDevice(udid: Self.udid, apps: ["org.sample.cards": IOSStandInApp(name: "Ana & Bob's \"Cards\"", version: "3.0.1", build: "7")])
        let out = try Self.run(ios, "ideviceinstaller", ["-u", Self.udid, "-l", "-o", "xml"]).out
        let real = try Self.fixture("ideviceinstaller-1.1.1-list-xml.stdout")
        // Same prologue, indentation, escaping and trailing newlines as libplist 2.2.0 + puts.
        #expect(out.hasPrefix(String(real.prefix(upTo: real.range(of: "<dict>")!.lowerBound))))
        #expect(out.contains("\t\t<string>Ana &amp; Bob's \"Cards\"</string>\n"))
        #expect(out.hasSuffix("\t</dict>\n</array>\n</plist>\n\n") && real.hasSuffix("\t</dict>\n</array>\n</plist>\n\n"))
    }

    @Test func afcclientCommandsAndPathsStayInTheContainer() throws {
        let ios = try IOSStandIns()
        let device = try ios.addDevice(udid: Self.udid, apps: ["com.example.Notes": IOSStandInApp(name: "Notes")])
        let base = ["-u", Self.udid, "--container", "com.example.Notes", "--"]
        try Data("secret".utf8).write(to: device.folder.appendingPathComponent("outside.txt"))
        let escape = try Self.run(ios, "afcclient", base + ["get", "/../../outside.txt", "/dev/null/x"])
        #expect(escape.status == 0 && escape.out.hasPrefix("Error: "))
        let up = try Self.run(ios, "afcclient", base + ["ls", "../.."])
        #expect(up.out == "Documents\nLibrary\n")  // ".." stops at the container's root
        try FileManager.default.createSymbolicLink(at: device.container("com.example.Notes").appendingPathComponent("Documents/link"),
                                                   withDestinationURL: device.folder)
        let viaLink = try Self.run(ios, "afcclient", base + ["ls", "/Documents/link"])
        #expect(viaLink.out == "Error: Failed to list '/Documents/link': Permission denied (10)\n")
        let missing = try Self.run(ios, "afcclient", base + ["get", "/Documents/none.db", "/tmp/none.db"])
        #expect(missing.status == 0 && missing.out == "Error: Failed to read from file '/Documents/none.db': Not found (8)\n")
        // getopt_long permutes: a command flag without "--" is the tool's own invalid option.
        let noDashes = try Self.run(ios, "afcclient", ["-u", Self.udid, "--container", "com.example.Notes", "ls", "-l", "/"])
        #expect(noDashes.status == 2 && noDashes.err.contains("invalid option -- 'l'"))
        let requests = try ios.requests()
        #expect(requests.count == 5 && requests.allSatisfy { $0.tool == "afcclient" })
    }
}

// MARK: - ifuse and fusermount

/// The ifuse stand-in answers as Debian 12's ifuse (1.1.4~git20181007, `src/ifuse.c` of that
/// snapshot; its configure still says 1.1.3) and the fusermount one as fuse 2.9.9's run by root.
@Suite(.serialized) struct IFuseStandInTests {
    static let udid = IOSStandInTests.udid
    static let bundle = "com.example.Notes"

    func standIns() throws -> IOSStandIns {
        if let reason = IOSStandInBackend.ifuse.unavailableReason { try Test.cancel(Comment(rawValue: reason)) }
        return try IOSStandIns(backend: .ifuse)
    }

    @Test func helpAndVersionGoToStderrWithStatusZero() throws {
        let ios = try standIns()
        let version = try IOSStandInTests.run(ios, "ifuse", ["--version"])
        #expect(version.status == 0 && version.out.isEmpty && version.err == "ifuse 1.1.3\n")
        let help = try IOSStandInTests.run(ios, "ifuse", ["--help"])
        #expect(help.status == 0 && help.out.isEmpty)
        #expect(help.err.hasPrefix("Usage: ifuse MOUNTPOINT [OPTIONS]\nMount directories of an iOS device locally using fuse.\n"))
        #expect(help.err.contains("  --container APPID\tmount sandbox root of an app identified by APPID\n"))
        let fusermount = try IOSStandInTests.run(ios, "fusermount", ["-V"])
        #expect(fusermount.status == 0 && fusermount.out == "fusermount version: 2.9.9\n")
    }

    @Test func failuresPrintIfusesTextsAndExitWithStatusOne() throws {
        let ios = try standIns()
        let point = ios.runtimeDirectory.appendingPathComponent("m")
        let noPoint = try IOSStandInTests.run(ios, "ifuse", ["-u", Self.udid, "--container", Self.bundle])
        #expect(noPoint.status == 1 && noPoint.err == "ERROR: No mount point specified\n")
        let missing = try IOSStandInTests.run(ios, "ifuse", [point.path, "-u", Self.udid, "--container", Self.bundle])
        #expect(missing.status == 1 && missing.err == "ERROR: the mount point specified does not exist\n")

        try FileManager.default.createDirectory(at: point, withIntermediateDirectories: true)
        let noDevice = try IOSStandInTests.run(ios, "ifuse", [point.path, "-u", Self.udid, "--container", Self.bundle])
        #expect(noDevice.status == 1 && noDevice.err.hasPrefix("No device found, is it connected?\n"))

        try ios.addDevice(udid: Self.udid, apps: [Self.bundle: IOSStandInApp(name: "Notes", container: false)])
        let refused = try IOSStandInTests.run(ios, "ifuse", [point.path, "-u", Self.udid, "--container", Self.bundle])
        #expect(refused.status == 1 && refused.err.hasPrefix("ERROR: InstallationLookupFailed\nThe App 'com.example.Notes' is either not present"))
        #expect(ios.activeMounts().isEmpty && MountPoints.under(point.path).isEmpty)
    }

    @Test func mountShowsTheContainerAndFusermountUnmountsIt() throws {
        let ios = try standIns()
        let device = try ios.addDevice(udid: Self.udid, apps: [Self.bundle: IOSStandInApp(name: "Notes", documents: true)])
        try Data("x".utf8).write(to: device.container(Self.bundle).appendingPathComponent("Documents/a.txt"))
        let point = ios.runtimeDirectory.appendingPathComponent("m")
        try FileManager.default.createDirectory(at: point, withIntermediateDirectories: true)

        let mounted = try IOSStandInTests.run(ios, "ifuse", [point.path, "-u", Self.udid, "--container", Self.bundle])
        #expect(mounted.status == 0 && mounted.out.isEmpty && mounted.err.isEmpty)
        #expect(FileManager.default.fileExists(atPath: point.appendingPathComponent("Documents/a.txt").path))
        #expect(try IOSStandInTests.run(ios, "fusermount", ["-u", point.path]).status == 0)
        #expect(MountPoints.under(point.path).isEmpty)

        // --documents shows Documents itself as the mount's root (fuse's subdir module).
        #expect(try IOSStandInTests.run(ios, "ifuse", [point.path, "-u", Self.udid, "--documents", Self.bundle]).status == 0)
        #expect(FileManager.default.fileExists(atPath: point.appendingPathComponent("a.txt").path))
        #expect(try IOSStandInTests.run(ios, "fusermount", ["-uz", point.path]).status == 0)

        let again = try IOSStandInTests.run(ios, "fusermount", ["-u", point.path])
        #expect(again.status == 1 && again.err == "fusermount: failed to unmount \(point.path): Invalid argument\n")
    }

    @Test func anUnpluggedDevicesMountAnswersTransportEndpointIsNotConnected() throws {
        let ios = try standIns()
        let device = try ios.addDevice(udid: Self.udid, apps: [Self.bundle: IOSStandInApp(name: "Notes")])
        let point = ios.runtimeDirectory.appendingPathComponent("m")
        try FileManager.default.createDirectory(at: point, withIntermediateDirectories: true)
        #expect(try IOSStandInTests.run(ios, "ifuse", [point.path, "-u", Self.udid, "--container", Self.bundle]).status == 0)

        try device.unplug()
        var info = stat()
        #expect(lstat(point.path + "/Documents", &info) == -1 && errno == ENOTCONN)
        #expect(try IOSStandInTests.run(ios, "fusermount", ["-u", point.path]).status == 0)
        #expect(MountPoints.under(point.path).isEmpty)
    }
}
