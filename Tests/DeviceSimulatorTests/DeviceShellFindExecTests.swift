@testable import DeviceSimulator
import Foundation
import Testing
import TestSupport

/// toybox `find -exec`/`-size`/`-print0`, `head -c` and `printf` as the bridge's header scan uses
/// them, and the folders every simulated phone gets (toybox behaviour read from its find.c,
/// head.c and printf.c).
@Suite struct DeviceShellFindExecTests {
    let temp: TemporaryDirectory
    let device: SimulatedDevice

    init() throws {
        temp = try TemporaryDirectory("devsim-find")
        let root = temp.url.appendingPathComponent("emulator-5554")
        let fs = root.appendingPathComponent("fs")
        try FileManager.default.createDirectory(at: fs.appendingPathComponent("sdcard/d"), withIntermediateDirectories: true)
        try Data("0123456789abcdefXYZ".utf8).write(to: fs.appendingPathComponent("sdcard/d/long"))
        try Data("short".utf8).write(to: fs.appendingPathComponent("sdcard/d/short"))
        try Data("a b".utf8).write(to: fs.appendingPathComponent("sdcard/d/it's $(x)"))
        device = SimulatedDevice(serial: "emulator-5554", root: root, fsRoot: fs, config: DeviceConfig())
    }

    func run(_ script: String) throws -> (status: Int32, out: Data, err: String) {
        let out = BufferSink(), err = BufferSink()
        let status = try DeviceShell(device: device).run(script: script, io: ShellIO(stdin: EmptyInput(), stdout: out, stderr: err))
        return (status, out.data, String(decoding: err.data, as: UTF8.self))
    }

    @Test func headBytes_readsOnlyWhatItNeeds_andNamesMissingFiles() throws {
        #expect(try run("head -c 4 /sdcard/d/long").out == Data("0123".utf8))
        #expect(try run("head -c4 /sdcard/d/short").out == Data("shor".utf8))
        #expect(try run("head -c 100 /sdcard/d/short").out == Data("short".utf8))
        let missing = try run("head -c 16 /sdcard/d/nope")
        #expect(missing.status == 1)
        #expect(missing.err == "head: /sdcard/d/nope: No such file or directory\n")
        // Two files: toybox prints headers between them.
        #expect(String(decoding: try run("head -c 2 /sdcard/d/long /sdcard/d/short").out, as: UTF8.self)
                == "==> /sdcard/d/long <==\n01\n==> /sdcard/d/short <==\nsh")
    }

    @Test func printf_formatsEscapesAndRepeats() throws {
        #expect(try run("printf '%s\\0' a 'b c'").out == Data("a\0b c\0".utf8))
        #expect(String(decoding: try run("printf '%d-%x|%5s|%-3s|\\n' 42 255 ab c").out, as: UTF8.self) == "42-ff|   ab|c  |\n")
        #expect(String(decoding: try run("printf '%%s\\101\\x42'").out, as: UTF8.self) == "%sAB")
        // Arguments are data: no escapes or conversions in them.
        #expect(String(decoding: try run("printf '%s' '\\n%d'").out, as: UTF8.self) == "\\n%d")
    }

    @Test func findExec_perFile_gatesTheNextAction() throws {
        let result = try run("find /sdcard/d -type f -size +15c -exec head -c 16 {} ';' -exec printf '%s\\0' {} ';'")
        #expect(result.status == 0)
        #expect(result.out == Data("0123456789abcdef/sdcard/d/long\0".utf8))
        // A failing -exec is a false test: -print after it never runs.
        #expect(try run("find /sdcard/d -type f -exec false ';' -print").out.isEmpty)
        // Names reach the command as one argument each, never through a shell.
        let names = String(decoding: try run("find /sdcard/d -type f -exec printf '[%s]' {} ';'").out, as: UTF8.self)
        #expect(names.contains("[/sdcard/d/it's $(x)]"))
    }

    @Test func findExec_plusBatches_andSize() throws {
        let batch = String(decoding: try run("find /sdcard/d -type f -size -6c -exec echo {} +").out, as: UTF8.self)
        #expect(batch == "/sdcard/d/it's $(x) /sdcard/d/short\n")
        // A bare number is 512-byte blocks, not rounded (toybox 0.8.9): `-size 1` is exactly 512 bytes.
        #expect(String(decoding: try run("find /sdcard/d -type f -size -1").out, as: UTF8.self).split(separator: "\n").count == 3)
        #expect(try run("find /sdcard/d -type f -size 1").out.isEmpty)
        #expect(String(decoding: try run("find /sdcard/d -size 19c").out, as: UTF8.self) == "/sdcard/d/long\n")
        #expect(try run("find /sdcard/d -print0 -name long").out.split(separator: 0).count == 4)
    }

    @Test func findPrune_skipsTheFolderButKeepsTheRest() throws {
        let fs = device.fsRoot
        try FileManager.default.createDirectory(at: fs.appendingPathComponent("sdcard/d/cache/deep"), withIntermediateDirectories: true)
        try Data("hidden".utf8).write(to: fs.appendingPathComponent("sdcard/d/cache/deep/x"))
        let listed = String(decoding: try run("find /sdcard/d '(' -path /sdcard/d/cache -o -path /sdcard/d/nothing ')' -prune -o -type f -print").out,
                            as: UTF8.self)
        #expect(listed == "/sdcard/d/it's $(x)\n/sdcard/d/long\n/sdcard/d/short\n")
    }

    @Test func findExec_errorsAsToybox() throws {
        #expect(try run("find /sdcard -exec").err == "find: 'exec' needs 1 arg\n")
        #expect(try run("find /sdcard -exec ';'").err == "find: 'exec' needs 1 arg\n")
        #expect(try run("find /sdcard -exec echo {}").err == "find: -exec without \\;\n")
        #expect(try run("find /sdcard -exec echo").err == "find: -exec without {}\n")
        #expect(try run("find /sdcard -size x").err == "find: x not [+-]N\n")
        #expect(try run("find /sdcard -size 5q").err == "find: not integer: 5q\n")
    }

    @Test func handMadeFolder_getsEveryPhoneFolder() throws {
        // README's example: `fs/data/data/PKG/databases` made by hand, nothing else.
        let devices = try TemporaryDirectory("devsim-layout")
        let root = devices.url.appendingPathComponent("emulator-5554")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("fs/data/data/com.example.notes/databases"),
                                                withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: root.appendingPathComponent("device.json"))
        let found = try #require(DeviceRegistry(directory: devices.url).device(serial: "emulator-5554"))
        for folder in ["data/local/tmp", "sdcard", "system/bin", "data/data/com.example.notes/databases"] {
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: found.fsRoot.appendingPathComponent(folder).path, isDirectory: &isDirectory)
                    && isDirectory.boolValue, "\(folder)")
        }
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: found.fsRoot.appendingPathComponent("data/user/0").path) == "/data/data")
        // A device unplugged (its folder renamed) while a request runs is not re-created.
        try FileManager.default.moveItem(at: root, to: devices.url.appendingPathComponent(".unplugged"))
        try DeviceLayout.create(fs: root.appendingPathComponent("fs"))
        #expect(!FileManager.default.fileExists(atPath: root.path))
    }
}
