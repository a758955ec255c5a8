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

    @Test func find_keepsDatabasesUnderRoot() {
        let text = """
            /data/data/com.example.notes/databases/notes.db
            /data/data/com.example.notes/databases/notes.db-wal
            /data/data/com.example.notes/databases/notes.db-journal
            /data/data/com.example.notes/files/cache.sqlite
            /data/data/com.example.notes/files/a b 'quoted'.sqlite3
            /data/data/com.example.notes/no_backup/x.db3
            /data/data/com.example.notes/no_backup/y.sqlitedb
            /data/data/com.example.notes/databases/notes.db

            """
        let listing = AndroidOutputParser.databasePaths(Data(text.utf8), root: Self.root)
        #expect(listing.paths == [
            "/data/data/com.example.notes/databases/notes.db",
            "/data/data/com.example.notes/files/cache.sqlite",
            "/data/data/com.example.notes/files/a b 'quoted'.sqlite3",
            "/data/data/com.example.notes/no_backup/x.db3",
            "/data/data/com.example.notes/no_backup/y.sqlitedb",
        ])
        #expect(listing.warnings.isEmpty)
    }

    @Test func find_dropsHostileLines() {
        var data = Data()
        func line(_ s: String) { data.append(contentsOf: s.utf8); data.append(0x0A) }
        line("/data/data/com.example.notes/databases/ok.db")
        line("/data/data/com.example.notes/../../system/evil.db")
        line("/data/data/com.example.notes/./databases/dot.db")
        line("/data/data/com.example.notes//double.db")
        line("/data/data/com.example.other/databases/other.db")
        line("/data/data/com.example.notesX/databases/sibling.db")
        line("databases/relative.db")
        line("/data/data/com.example.notes/databases/tab\there.db")
        line("/data/data/com.example.notes/databases/esc\u{1B}[31m.db")
        line("/data/data/com.example.notes/databases/del\u{7F}.db")
        // A name with a newline: "split.db\nrest.db" arrives as two lines.
        line("/data/data/com.example.notes/databases/split.db")
        line("rest.db")
        // Binary garbage and invalid UTF-8.
        data.append(contentsOf: [0xFF, 0xFE, 0x00, 0x2F, 0x80, 0x0A])
        data.append(contentsOf: Array("/data/data/com.example.notes/databases/bad".utf8) + [0xC3, 0x28] + Array(".db\n".utf8))
        line("/data/data/com.example.notes/databases/last.db")

        let listing = AndroidOutputParser.databasePaths(data, root: Self.root)
        #expect(listing.paths == [
            "/data/data/com.example.notes/databases/ok.db",
            "/data/data/com.example.notes/databases/last.db",
        ])
        #expect(listing.warnings.contains { $0.contains("line break") && $0.contains("split.db") })
        #expect(listing.warnings.contains { $0.contains("control characters") })
        #expect(listing.warnings.contains { $0.contains("UTF-8") })
    }

    @Test func find_boundedToLimit() {
        var text = ""
        for i in 0..<10_050 { text += "/data/data/com.example.notes/databases/db\(i).db\n" }
        let listing = AndroidOutputParser.databasePaths(Data(text.utf8), root: Self.root, limit: 10_000)
        #expect(listing.paths.count == 10_000)
        #expect(listing.paths.last == "/data/data/com.example.notes/databases/db9999.db")
        #expect(listing.warnings.contains { $0.contains("More than 10000") })
    }

    @Test func find_truncatedOutputDropsPartialLine() {
        let text = "/data/data/com.example.notes/databases/a.db\n/data/data/com.example.notes/databases/b.d"
        let listing = AndroidOutputParser.databasePaths(Data(text.utf8), root: Self.root, truncated: true)
        #expect(listing.paths == ["/data/data/com.example.notes/databases/a.db"])
        #expect(!listing.warnings.isEmpty)
    }

    @Test func find_ptyLineEndings() {
        let text = "/data/data/com.example.notes/databases/a.db\r\n/data/data/com.example.notes/databases/b.db\r\n"
        #expect(AndroidOutputParser.databasePaths(Data(text.utf8), root: Self.root).paths.count == 2)
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
