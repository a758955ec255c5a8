@testable import DeviceSimulator
import Foundation
import Testing
import TestSupport

/// The device shell without adb: parse and run command lines against a device folder.
@Suite struct DeviceShellTests {
    let temp: TemporaryDirectory
    let device: SimulatedDevice

    init() throws {
        temp = try TemporaryDirectory("devsim-shell")
        let root = temp.url.appendingPathComponent("emulator-5554")
        let fs = root.appendingPathComponent("fs")
        try FileManager.default.createDirectory(at: fs.appendingPathComponent("sdcard"), withIntermediateDirectories: true)
        try Data("a\nb\nc\n".utf8).write(to: fs.appendingPathComponent("sdcard/abc.txt"))
        device = SimulatedDevice(serial: "emulator-5554", root: root, fsRoot: fs, config: DeviceConfig())
    }

    /// Runs a command line as the shell user; returns (status, stdout, stderr).
    func run(_ script: String) throws -> (Int32, String, String) {
        let out = BufferSink(), err = BufferSink()
        let shell = DeviceShell(device: device)
        let status = try shell.run(script: script, io: ShellIO(stdin: EmptyInput(), stdout: out, stderr: err))
        return (status, String(decoding: out.data, as: UTF8.self), String(decoding: err.data, as: UTF8.self))
    }

    @Test func parse_splitsOperatorsAndKeepsQuotedText() throws {
        let steps = try ShellSyntax.parse("a 'b c' && d || e; f | g 2>/dev/null")
        #expect(steps.map(\.connector) == [.sequence, .and, .or, .sequence])
        #expect(steps[0].pipeline[0].words.count == 2)
        #expect(steps[0].pipeline[0].words[1].parts == [.text("b c", quoted: true)])
        #expect(steps[3].pipeline.count == 2)
        #expect(steps[3].pipeline[1].redirections == [.init(fd: 2, kind: .write, target: .init(parts: [.text("/dev/null", quoted: false)]))])
    }

    @Test func parse_rejectsBrokenLines() throws {
        #expect(throws: ShellSyntax.SyntaxError.self) { try ShellSyntax.parse("echo 'open") }
        #expect(throws: ShellSyntax.SyntaxError.self) { try ShellSyntax.parse("&& echo") }
        #expect(throws: ShellSyntax.SyntaxError.self) { try ShellSyntax.parse("echo |") }
        // Unquoted parens are shell syntax: the bridge must quote find's '(' and ')'.
        #expect(throws: ShellSyntax.SyntaxError.self) { try ShellSyntax.parse("find . ( -name x )") }
        #expect(try run("find /sdcard \\( -name abc.txt \\)").1 == "/sdcard/abc.txt\n")
        let (status, _, err) = try run("echo \"open")
        #expect(status == 1)
        #expect(err.hasPrefix("/system/bin/sh: syntax error"))
    }

    @Test func parse_anAmpersandSendsTheWholeAndOrListToTheBackground() throws {
        let steps = try ShellSyntax.parse("a; b || c & d && e")
        #expect(steps.map(\.background) == [false, true, true, false, false])
        #expect(steps.map(\.connector) == [.sequence, .sequence, .or, .sequence, .and])
        #expect(throws: ShellSyntax.SyntaxError.self) { try ShellSyntax.parse("& echo") }
        // `a &; b` is a syntax error in mksh (and every sh); `a &` then a new line is not.
        #expect(throws: ShellSyntax.SyntaxError.self) { try ShellSyntax.parse("a &; b") }
        #expect(try ShellSyntax.parse("a &\nb").map(\.background) == [true, false])
    }

    @Test func backgroundListsRunAndWaitWaitsForThem() throws {
        // `list &` runs the whole list (the `||` too) in a copy of the shell; `$?` after it is 0;
        // `wait` returns once it ended; output of both reaches the client.
        let (status, out, _) = try run("X=1; test -e /sdcard/none || echo \"job $X\" > /sdcard/job.txt & echo $?; wait; cat /sdcard/job.txt")
        #expect(status == 0)
        #expect(out == "0\njob 1\n")
        // A job's variables stay in its copy of the shell.
        #expect(try run("Y=1; Y=2 & wait; echo $Y").1 == "1\n")
        // The script ends (here by `exit`) only after its jobs: their output and files are there.
        let ended = try run("echo out > /sdcard/late.txt & exit 3")
        #expect(ended.0 == 3)
        #expect(try run("cat /sdcard/late.txt").1 == "out\n")
        #expect(try run("echo a & echo b & wait").1.split(separator: "\n").sorted() == ["a", "b"])
        // What a push's swap does: a file made by a redirection, removed by a job, seen after `wait`.
        #expect(try run(": > /sdcard/permit || exit 1; test -e /sdcard/none || rm -f /sdcard/permit & wait; test -e /sdcard/permit || exit 3").0 == 3)
    }

    @Test func hashesOfAFileAndOfTheSameBytesFromAPipeAgree() throws {
        // sha256sum of "a\nb\nc\n", as coreutils prints it; read from the file and from stdin.
        let expected = "880553fca8fcea94e325ee2cfb48e5a985cc797f39a14cc6d3cedecfeb2ae4d2"
        #expect(try run("sha256sum /sdcard/abc.txt").1 == "\(expected)  /sdcard/abc.txt\n")
        #expect(try run("cat /sdcard/abc.txt | sha256sum").1 == "\(expected)  -\n")
    }

    @Test func variablesAndExitStatus() throws {
        #expect(try run("false; echo $?").1 == "1\n")
        #expect(try run("X=5; echo \"x=$X\" '$X'").1 == "x=5 $X\n")
        #expect(try run("exit 4; echo never").0 == 4)
        #expect(try run("sh -c 'exit 9'; echo $?").1 == "9\n")
        #expect(try run("# comment only").0 == 0)
    }

    @Test func pipelinesAndFilters() throws {
        #expect(try run("cat /sdcard/abc.txt | wc -l").1 == "3\n")
        #expect(try run("cat /sdcard/abc.txt | head -n 1").1 == "a\n")
        #expect(try run("tail -n 2 /sdcard/abc.txt").1 == "b\nc\n")
        #expect(try run("grep -c '[ab]' /sdcard/abc.txt").1 == "2\n")
        #expect(try run("grep -q z /sdcard/abc.txt").0 == 1)
        #expect(try run("echo -n x; echo 'y\\tz'").1 == "xy\tz\n")
    }

    @Test func redirectionOrderMatters() throws {
        let (_, out, err) = try run("cat /none 2>&1 >/sdcard/o.txt")
        #expect(out == "cat: /none: No such file or directory\n")
        #expect(err == "")
        let (_, out2, _) = try run("cat /none >/sdcard/o.txt 2>&1; cat /sdcard/o.txt")
        #expect(out2 == "cat: /none: No such file or directory\n")
    }
}
