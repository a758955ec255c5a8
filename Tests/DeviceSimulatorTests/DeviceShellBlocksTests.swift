@testable import DeviceSimulator
import Foundation
import Testing
import TestSupport

/// toybox `dd`, `truncate`, `restorecon` and `chcon` on the emulated device: what a delta push
/// runs there, with toybox's texts and exit statuses.
@Suite struct DeviceShellBlocksTests {
    let temp: TemporaryDirectory
    let device: SimulatedDevice
    var sdcard: URL { device.fsRoot.appendingPathComponent("sdcard") }

    init() throws {
        temp = try TemporaryDirectory("devsim-blocks")
        let root = temp.url.appendingPathComponent("emulator-5554")
        let fs = root.appendingPathComponent("fs")
        try FileManager.default.createDirectory(at: fs.appendingPathComponent("sdcard"), withIntermediateDirectories: true)
        device = SimulatedDevice(serial: "emulator-5554", root: root, fsRoot: fs, config: DeviceConfig())
        // 4 blocks of 4 bytes: "AAAABBBBCCCCDDDD"; a patch of two blocks: "xxxxyyyy".
        try Data("AAAABBBBCCCCDDDD".utf8).write(to: sdcard.appendingPathComponent("target"))
        try Data("xxxxyyyy".utf8).write(to: sdcard.appendingPathComponent("patch"))
    }

    func run(_ script: String, user: DeviceUser = .shell) throws -> (status: Int32, out: String, err: String) {
        let out = BufferSink(), err = BufferSink()
        let status = try DeviceShell(device: device, user: user).run(script: script, io: ShellIO(stdin: EmptyInput(), stdout: out, stderr: err))
        return (status, String(decoding: out.data, as: UTF8.self), String(decoding: err.data, as: UTF8.self))
    }

    func target() throws -> String { String(decoding: try Data(contentsOf: sdcard.appendingPathComponent("target")), as: UTF8.self) }

    @Test func dd_writesBlocksInPlaceWithNotrunc_andPrintsToyboxSummary() throws {
        let result = try run("dd if=/sdcard/patch of=/sdcard/target bs=4 skip=1 seek=2 count=1 conv=notrunc")
        #expect(result.status == 0)
        #expect(try target() == "AAAABBBByyyyDDDD")
        let lines = result.err.split(separator: "\n").map(String.init)
        #expect(lines.prefix(2) == ["1+0 records in", "1+0 records out"])
        #expect(lines[2].hasPrefix("4 bytes (4 B) copied, "))
        #expect(lines[2].wholeMatch(of: /4 bytes \(4 B\) copied, [0-9]+\.[0-9]{3} s, [0-9.]+ [BKMG]\/s/) != nil)
    }

    @Test func dd_withoutNotrunc_cutsTheFileAfterWhatItWrote() throws {
        #expect(try run("dd if=/sdcard/patch of=/sdcard/target bs=4 seek=1 count=1 status=none") == (0, "", ""))
        #expect(try target() == "AAAAxxxx")
    }

    @Test func dd_shortLastRead_countsAPartialRecord() throws {
        try Data("1234567".utf8).write(to: sdcard.appendingPathComponent("seven"))
        let result = try run("dd if=/sdcard/seven of=/sdcard/copy bs=4 status=noxfer")
        #expect(result.err == "1+1 records in\n1+1 records out\n")
        #expect(try Data(contentsOf: sdcard.appendingPathComponent("copy")) == Data("1234567".utf8))
    }

    @Test func dd_errorsAsToybox() throws {
        #expect(try run("dd if=/sdcard/patch of=/sdcard/target bogus").err == "dd: bad arg bogus\n")
        #expect(try run("dd bs=x").err == "dd: not integer: x\n")
        #expect(try run("dd bs=0").err == "dd: bad 0\n")
        #expect(try run("dd conv=notrunc,wat").err == "dd: bad conv=wat\n")
        let missing = try run("dd if=/sdcard/none of=/sdcard/target status=none")
        #expect(missing.status == 1)
        #expect(missing.err == "dd: /sdcard/none: No such file or directory\n")
        #expect(try run("dd if=/sdcard/patch of=/system/x status=none").err == "dd: /system/x: Permission denied\n")
    }

    @Test func dd_unitSuffixes() throws {
        #expect(DeviceShell.toyboxNumber("4k") == 4096)
        #expect(DeviceShell.toyboxNumber("2b") == 1024)
        #expect(DeviceShell.toyboxNumber("1kd") == 1000)
        #expect(DeviceShell.toyboxNumber("0x10") == 16)
        #expect(DeviceShell.toyboxNumber("4q") == nil)
        #expect(DeviceShell.humanReadable(4096) == "4.0 K")
        #expect(DeviceShell.humanReadable(52_428_800) == "50 M")
    }

    @Test func dd_faultStopsTheChosenRunHalfWay() throws {
        try JSONSerialization.data(withJSONObject: ["failDdAfterRuns": 1]).write(to: device.root.appendingPathComponent("faults.json"))
        // The first run succeeds, the second writes one of its two blocks and fails as a full disk does.
        #expect(try run("dd if=/sdcard/patch of=/sdcard/target bs=4 count=1 conv=notrunc status=none").status == 0)
        let failed = try run("dd if=/sdcard/patch of=/sdcard/target bs=4 seek=2 count=2 conv=notrunc status=none")
        #expect(failed.status == 1)
        #expect(failed.err == "dd: /sdcard/target: write error: No space left on device\n")
        #expect(try target() == "xxxxBBBBxxxxDDDD")
        // The fault is used up.
        #expect(try run("dd if=/sdcard/patch of=/sdcard/target bs=4 seek=2 count=2 conv=notrunc status=none").status == 0)
    }

    @Test func truncate_setsAndAdjustsTheSize() throws {
        #expect(try run("truncate -s 8 /sdcard/target").status == 0)
        #expect(try target() == "AAAABBBB")
        #expect(try run("truncate -s +4 /sdcard/target").status == 0)
        #expect(try Data(contentsOf: sdcard.appendingPathComponent("target")).count == 12)
        #expect(try run("truncate -s 1k /sdcard/new").status == 0)
        #expect(try Data(contentsOf: sdcard.appendingPathComponent("new")).count == 1024)
        #expect(try run("truncate -c -s 5 /sdcard/absent").status == 0)
        #expect(!FileManager.default.fileExists(atPath: sdcard.appendingPathComponent("absent").path))
        let denied = try run("truncate -s 0 /system/x")
        #expect(denied == (1, "", "truncate: /system/x: Permission denied\n"))
    }

    @Test func missingCommandsAndLabels() throws {
        #expect(try run("restorecon /sdcard/target", user: .root).status == 0)
        #expect(try run("restorecon /sdcard/target") == (1, "", "restorecon: /sdcard/target: Permission denied\n"))
        #expect(try run("chcon u:object_r:app_data_file:s0 /sdcard/target", user: .root).status == 0)
        // toybox's chcon has no --reference: it takes "--reference=…" for an unknown option.
        #expect(try run("chcon --reference=/sdcard/target /sdcard/patch", user: .root).status == 1)
    }
}
