import Foundation
import Testing
@testable import FlippioEngine

@Suite("Android output parsers")
struct AndroidOutputParserTests {
    // MARK: - adb devices -l

    /// `adb devices -l` as adb 29 prints it (`%-22s %s` then the fields), one device per state.
    static let devicesLong = """
        List of devices attached
        emulator-5554          device product:sdk_gphone_x86_arm model:AOSP_on_IA_Emulator device:generic_x86_arm transport_id:1
        R58M123ABC             unauthorized usb:1-1 transport_id:2
        0123456789ABCDEF       offline usb:1-2 transport_id:3
        192.168.1.20:5555      device product:walleye model:Pixel_2 device:walleye transport_id:4
        ZX1G22ABCD             no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-3 transport_id:5
        emulator-5556          authorizing transport_id:6
        emulator-5558          connecting transport_id:7
        HT4A1JT01234           recovery usb:2-1 product:omni_x model:X device:x transport_id:8
        HT4A1JT05678           sideload usb:2-2 transport_id:9
        (no serial number)     device usb:2-3 transport_id:10


        """

    @Test func devicesLongListing_everyState() {
        let devices = AndroidOutputParser.devices(Self.devicesLong)
        #expect(devices.map(\.id) == ["emulator-5554", "R58M123ABC", "0123456789ABCDEF", "192.168.1.20:5555", "ZX1G22ABCD",
                                      "emulator-5556", "emulator-5558", "HT4A1JT01234", "HT4A1JT05678", "(no serial number)"])
        #expect(devices.map(\.state) == [.ready, .unauthorized, .offline, .ready, .unknown, .connecting, .connecting, .unknown, .unknown, .ready])

        let emulator = devices[0]
        #expect(emulator.model == "AOSP on IA Emulator")
        #expect(emulator.details["product"] == "sdk_gphone_x86_arm")
        #expect(emulator.details["transport_id"] == "1")
        #expect(emulator.remedy == nil)
        #expect(devices[3].model == "Pixel 2")

        #expect(devices[1].remedy == "Unlock the device and accept the 'Allow USB debugging' prompt; if none appears, revoke USB debugging authorizations and reconnect.")
        #expect(devices[1].details["usb"] == "1-1")
        #expect(devices[2].remedy == "Reconnect the cable or run `adb reconnect offline`.")
        #expect(devices[4].details["state"]?.hasPrefix("no permissions (user in plugdev group") == true)
        #expect(devices[4].details["usb"] == "1-3")
        #expect(devices[4].remedy?.contains("udev") == true)
        #expect(devices[5].details["state"] == "authorizing")
        #expect(devices[7].remedy?.contains("adb reboot") == true)
        #expect(devices[8].details["state"] == "sideload")
        #expect(devices.allSatisfy { $0.platform == .android })
    }

    @Test func devicesShortListing_andNoise() {
        let text = "* daemon not running; starting now at tcp:5037\n* daemon started successfully\nList of devices attached\nemulator-5554\tdevice\nabc\tunauthorized\n\ngarbage\n\u{1}evil\tdevice\n"
        let devices = AndroidOutputParser.devices(text)
        #expect(devices.map(\.id) == ["emulator-5554", "abc"])
        #expect(devices.map(\.state) == [.ready, .unauthorized])
    }

    @Test func devicesEmptyListing() {
        #expect(AndroidOutputParser.devices("List of devices attached\n\n").isEmpty)
    }

    @Test func resolve_exactPrefixAmbiguousMissing() throws {
        let devices = AndroidOutputParser.devices(Self.devicesLong)
        #expect(try AndroidBridge.resolve("emulator-5554", among: devices).id == "emulator-5554")
        #expect(try AndroidBridge.resolve("R58", among: devices).id == "R58M123ABC")
        let ambiguous = #expect(throws: FlippioError.self) { try AndroidBridge.resolve("emulator", among: devices) }
        #expect(ambiguous?.code == .deviceAmbiguous)
        #expect(ambiguous?.message.contains("emulator-5556") == true)
        let missing = #expect(throws: FlippioError.self) { try AndroidBridge.resolve("nope", among: devices) }
        #expect(missing?.code == .deviceNotFound)
        #expect(missing?.message.contains("R58M123ABC") == true)
    }

    // MARK: - pm list packages

    @Test func packages_sortedValidatedUnique() {
        let text = "package:com.example.notes\npackage:com.android.chrome\r\npackage:com.example.notes\npackage:/data/app/x/base.apk=org.fdroid.fdroid\npackage:bad name;rm -rf\npackage:1abc.x\nWARNING: linker: something\n\npackage:android\n"
        #expect(AndroidOutputParser.packages(text) == ["android", "com.android.chrome", "com.example.notes", "org.fdroid.fdroid"])
    }

    // MARK: - find

    static let root = "/data/data/com.example.notes"

    static let shared = "/sdcard/Android/data/com.example.notes"

    /// One record of the header scan: 16 bytes of the file, its path, NUL.
    static func record(_ path: String, header: [UInt8] = AndroidOutputParser.sqliteHeader) -> Data {
        Data(header.prefix(16)) + Data(path.utf8) + Data([0])
    }

    @Test func headerScan_keepsSQLiteFilesWhateverTheirName() {
        var data = Data()
        data += Self.record("/data/data/com.example.notes/databases/app_database")
        data += Self.record("/data/data/com.example.notes/databases/app_database-wal")
        data += Self.record("/data/data/com.example.notes/databases/notes.db-journal")
        data += Self.record("/data/data/com.example.notes/databases/.notes.db.flippio-tmp")
        data += Self.record("/data/data/com.example.notes/files/cache.sqlite")
        data += Self.record("/data/data/com.example.notes/files/foo.db", header: Array("not a database!!".utf8))
        // Almost the header: the 16th byte must be NUL.
        data += Self.record("/data/data/com.example.notes/files/almost", header: Array("SQLite format 3X".utf8))
        data += Self.record("/data/data/com.example.notes/files/a b 'quoted' $(id).db")
        data += Self.record("\(Self.shared)/files/ext.db")
        data += Self.record("/data/data/com.example.notes/databases/app_database")
        let listing = AndroidOutputParser.databasesByHeader(data, roots: [Self.root, Self.shared])
        #expect(listing.paths == [
            "/data/data/com.example.notes/databases/app_database",
            "/data/data/com.example.notes/files/cache.sqlite",
            "/data/data/com.example.notes/files/a b 'quoted' $(id).db",
            "\(Self.shared)/files/ext.db",
        ])
        #expect(listing.warnings.isEmpty)
    }

    @Test func headerScan_dropsHostileRecords() {
        var data = Data()
        data += Self.record("/data/data/com.example.notes/databases/ok.db")
        data += Self.record("/data/data/com.example.notes/../../system/evil.db")
        data += Self.record("/data/data/com.example.notes/./databases/dot.db")
        data += Self.record("/data/data/com.example.notes//double.db")
        data += Self.record("/data/data/com.example.other/databases/other.db")
        data += Self.record("/data/data/com.example.notesX/databases/sibling.db")
        data += Self.record("databases/relative.db")
        data += Self.record("/data/data/com.example.notes/databases/tab\there.db")
        data += Self.record("/data/data/com.example.notes/databases/esc\u{1B}[31m.db")
        // A name with a line break arrives whole (NUL ends a record) and is refused by name.
        data += Self.record("/data/data/com.example.notes/databases/split.db\n/data/data/com.example.notes/databases/x.db")
        data += Data(AndroidOutputParser.sqliteHeader) + Data(Array("/data/data/com.example.notes/databases/bad".utf8) + [0xC3, 0x28, 0])
        data += Self.record("/data/data/com.example.notes/databases/last.db")
        let listing = AndroidOutputParser.databasesByHeader(data, roots: [Self.root])
        #expect(listing.paths == [
            "/data/data/com.example.notes/databases/ok.db",
            "/data/data/com.example.notes/databases/last.db",
        ])
        #expect(listing.warnings.contains { $0.contains("line break") && $0.contains("split.db?") })
        #expect(listing.warnings.contains { $0.contains("UTF-8") })
        #expect(listing.warnings.allSatisfy { !DeviceShellQuoting.containsControlCharacter($0) })
    }

    @Test func headerScan_shortHeaderLosesOnlyItsRecord() {
        // A file that shrank between find's size test and head: 5 bytes instead of 16.
        var data = Data("SQLit".utf8) + Data("/data/data/com.example.notes/databases/shrunk.db".utf8) + Data([0])
        data += Self.record("/data/data/com.example.notes/databases/next.db")
        let listing = AndroidOutputParser.databasesByHeader(data, roots: [Self.root])
        #expect(listing.paths == ["/data/data/com.example.notes/databases/next.db"])
    }

    @Test func headerScan_boundedToLimit() {
        var data = Data()
        for i in 0..<10_050 { data += Self.record("/data/data/com.example.notes/databases/db\(i)") }
        let listing = AndroidOutputParser.databasesByHeader(data, roots: [Self.root], limit: 10_000)
        #expect(listing.paths.count == 10_000)
        #expect(listing.paths.last == "/data/data/com.example.notes/databases/db9999")
        #expect(listing.warnings.contains { $0.contains("More than 10000") })
    }

    @Test func headerScan_truncatedOutputDropsPartialRecord() {
        let data = Self.record("/data/data/com.example.notes/databases/a.db") + Self.record("/data/data/com.example.notes/databases/b.db").dropLast(3)
        let listing = AndroidOutputParser.databasesByHeader(data, roots: [Self.root], truncated: true)
        #expect(listing.paths == ["/data/data/com.example.notes/databases/a.db"])
        #expect(listing.warnings.contains { $0.contains("longer than flippio reads") })
    }

    // MARK: - dumpsys package

    @Test func packageFlags_fromDumpsysPackagesLines() {
        // What `dumpsys package packages | grep -E '^  Package \[|^    flags=\['` leaves, from
        // an Android 7 and an Android 14 dump; the hidden-system section repeats chrome.
        let text = """
              Package [com.android.hq.ganktoutiao] (be741af):
                flags=[ DEBUGGABLE HAS_CODE ALLOW_CLEAR_USER_DATA ALLOW_BACKUP ]
              Package [com.android.chrome] (1a2b3c4):
                flags=[ SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA ALLOW_BACKUP ]
              Package [com.example.release] (5d6e7f8):
                flags=[ HAS_CODE ALLOW_CLEAR_USER_DATA ]
              Package [bad name;rm] (0000000):
                flags=[ DEBUGGABLE ]
              Package [com.example.noflags] (0000001):
              Package [com.android.chrome] (9f8e7d6):
                flags=[ SYSTEM DEBUGGABLE ]

            """
        #expect(AndroidOutputParser.packageFlags(text) == [
            .init(name: "com.android.chrome", debuggable: false, system: true),
            .init(name: "com.android.hq.ganktoutiao", debuggable: true, system: false),
            .init(name: "com.example.release", debuggable: false, system: false),
        ])
    }

    // MARK: - sha256sum, stat, getprop

    @Test func sha256sumLines() {
        let text = """
            9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  /data/data/p/databases/x.db
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  /data/data/p/databases/x.db-wal
            nothex  /data/data/p/databases/y.db
            """
        let hashes = AndroidOutputParser.sha256sums(text)
        #expect(hashes.count == 2)
        #expect(hashes["/data/data/p/databases/x.db"] == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    }

    @Test func statAndGetprop() {
        #expect(AndroidOutputParser.sizes("4096 /a/x.db\n0 /a/x.db-wal\nbad line\n") == ["/a/x.db": 4096, "/a/x.db-wal": 0])
        #expect(AndroidOutputParser.property("14\n") == "14")
        #expect(AndroidOutputParser.property("\n") == nil)
        #expect(AndroidOutputParser.property("a\u{1B}b") == nil)
    }

    // MARK: - track-devices

    @Test func trackDevicesFrames_splitAnywhere() throws {
        let first = "emulator-5554\tdevice\n"
        let second = "emulator-5554\toffline\nR58M123ABC\tunauthorized\n"
        let stream = Array((String(format: "%04x", first.utf8.count) + first + "0000" + String(format: "%04x", second.utf8.count) + second).utf8)
        var decoder = AndroidOutputParser.TrackDevicesDecoder()
        var lists: [[Device]] = []
        for byte in stream { lists += try decoder.feed([byte]) }
        #expect(lists.count == 3)
        #expect(lists[0].map(\.state) == [.ready])
        #expect(lists[1].isEmpty)
        #expect(lists[2].map(\.id) == ["emulator-5554", "R58M123ABC"])
        #expect(lists[2].map(\.state) == [.offline, .unauthorized])
    }

    @Test func trackDevicesGarbage_isProtocolFault() {
        var decoder = AndroidOutputParser.TrackDevicesDecoder()
        let error = #expect(throws: FlippioError.self) { try decoder.feed(Array("zz!!hello".utf8)) }
        #expect(error?.code == .protocolFault)
        var server = AndroidOutputParser.TrackDevicesDecoder()
        let down = #expect(throws: FlippioError.self) {
            try server.feed(Array("error: cannot connect to daemon at tcp:5037: Connection refused\n".utf8))
        }
        #expect(down?.code == .adbServerUnavailable)
    }

    // MARK: - Quoting

    @Test func quoting() {
        #expect(DeviceShellQuoting.quote("/data/data/p/databases/x.db") == "/data/data/p/databases/x.db")
        #expect(DeviceShellQuoting.quote("/a/it's here.db") == "'/a/it'\\''s here.db'")
        #expect(DeviceShellQuoting.quote("$(reboot)") == "'$(reboot)'")
        #expect(DeviceShellQuoting.quote("") == "''")
        #expect(DeviceShellQuoting.isValidPackageName("com.example.notes"))
        #expect(!DeviceShellQuoting.isValidPackageName("com.example;reboot"))
        #expect(!DeviceShellQuoting.isValidPackageName("com..x"))
        #expect(!DeviceShellQuoting.isSafeDevicePath("/data/data/p/../x.db"))
        #expect(!DeviceShellQuoting.isSafeDevicePath("relative/x.db"))
    }
}
