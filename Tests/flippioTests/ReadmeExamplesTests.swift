import Foundation
import Testing
import TestSupport

/// Every ```sh block of README.md, run as written against the emulated device.
///
/// Each block runs with `sh -e` in the simulator's folder (so README's `devices/emulator-5554` is
/// the device the simulator serves), with a private `$HOME` (so `~/.local/share/flippio` is a
/// fresh default workspace), the built `flippio` first on `PATH`, and the simulator on a free port
/// (`ANDROID_ADB_SERVER_PORT`, `ADB_SERVER_SOCKET`); no `FLIPPIO_*` or `XDG_*` variable leaks in.
///
/// A block must pass, or each line of it that a test cannot run is in ``skipped`` with the reason:
/// a new block that fails is a README that lies, not something to ignore. docs/CLI.md tells
/// README's authors to keep the list.
@Suite(.serialized) struct ReadmeExamplesTests {
    /// Lines (without their `# comment`) that cannot run in a test, and why. Every entry must still
    /// match a line of README.md, so the list cannot go stale.
    static let skipped: [(line: String, reason: String)] = [
        ("make demo", "runs an emulated device and the agent until Ctrl-C"),
        ("make test", "installs Debian packages with apt-get and runs the whole suite (this test included)"),
        ("swift run flippio-devsim --port 5137 --devices devices",
         "blocks until stopped; the test already runs the built flippio-devsim on a free port, serving this same devices/ folder"),
        ("export ADB_SERVER_SOCKET=tcp:127.0.0.1:5137",
         "port 5137 is README's; the test's simulator listens on a free port already set in ADB_SERVER_SOCKET"),
        ("make install", "a release build (minutes); scripts/test-install, run by `make test`, installs into a temporary PREFIX and runs the result"),
        ("sudo make install PREFIX=/usr/local", "installs for every user; scripts/test-install covers make install"),
        ("flippio service install", "needs a systemd user manager; ServiceEndToEndTests installs the unit under a real one"),
        ("~/.local/bin/flippio service install", "needs `make install` first and a systemd user manager; see ServiceEndToEndTests"),
    ]

    /// Blocks whose first line is one of these run before the others: they make the emulated
    /// device that the session example near the top of README.md works on.
    static let setUpFirst = ["mkdir -p devices/emulator-5554"]

    /// The ```sh blocks of `markdown`, in order.
    static func shellBlocks(_ markdown: String) -> [String] {
        var blocks: [String] = []
        var current: [Substring]?
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil {
                if line.trimmingCharacters(in: .whitespaces) == "```sh" { current = [] }
            } else if line.trimmingCharacters(in: .whitespaces).hasPrefix("```") {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else {
                current!.append(line)
            }
        }
        return blocks
    }

    /// A line without its trailing `# comment` and surrounding blanks (comments in README's
    /// blocks follow two or more spaces, and no command here has a `#` of its own).
    static func command(_ line: Substring) -> String {
        var text = String(line)
        if let hash = text.range(of: "  #") ?? (text.hasPrefix("#") ? text.range(of: "#") : nil) { text = String(text[..<hash.lowerBound]) }
        return text.trimmingCharacters(in: .whitespaces)
    }

    static var readme: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md")
    }

    @Test func everySkipEntryStillMatchesREADME() throws {
        let lines = try String(contentsOf: Self.readme, encoding: .utf8).split(separator: "\n").map(Self.command)
        for entry in Self.skipped {
            #expect(lines.contains(entry.line), "skip entry no longer in README.md: \(entry.line)")
        }
    }

    @Test func everyShellExampleRunsAsWritten() throws {
        let blocks = Self.shellBlocks(try String(contentsOf: Self.readme, encoding: .utf8))
        #expect(blocks.count >= 4, "README.md has its examples")
        let ordered = blocks.filter { block in Self.setUpFirst.contains { block.hasPrefix($0) } }
            + blocks.filter { block in !Self.setUpFirst.contains { block.hasPrefix($0) } }

        let sim = try Devsim()
        let home = try TemporaryDirectory("readme-home")
        let tools = Products.executable("flippio").deletingLastPathComponent().path
        let systemPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        var environment = sim.environment
        environment["HOME"] = home.url.path
        environment["PATH"] = tools + ":" + systemPath
        environment["LANG"] = "C.UTF-8"
        environment["TMPDIR"] = NSTemporaryDirectory()

        for (index, block) in ordered.enumerated() {
            var script = ["cd '\(sim.workDirectory.path)'"]
            var ran = 0
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if let entry = Self.skipped.first(where: { $0.line == Self.command(line) }) {
                    script.append(": 'skipped by the test: \(entry.reason.replacingOccurrences(of: "'", with: ""))'")
                } else {
                    if !Self.command(line).isEmpty { ran += 1 }
                    script.append(String(line))
                }
            }
            guard ran > 0 else { continue }  // every line is in the skip list
            let file = home.url.appendingPathComponent("block-\(index).sh")
            try script.joined(separator: "\n").appending("\n").write(to: file, atomically: true, encoding: .utf8)
            // `env -i`: only the variables above, nothing from the test runner's environment.
            let result = try Shell.run(URL(fileURLWithPath: "/usr/bin/env"),
                                       ["-i"] + environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" } + ["/bin/sh", "-e", file.path],
                                       timeout: 180)
            #expect(result.status == 0, """
                README.md's block failed (status \(result.status)); fix README or add a line to ReadmeExamplesTests.skipped with the reason:
                \(block)
                --- stdout ---
                \(result.out)
                --- stderr ---
                \(result.err)
                """)
        }

        // What the session example promises: the edit reached the device.
        let device = sim.devicesDirectory.appendingPathComponent("emulator-5554/fs/data/data/com.example.notes/databases/notes.db")
        #expect(try Shell.sqlite(device, "SELECT done FROM notes WHERE id = 1") == "1\n", "the device has the edit")
    }
}
