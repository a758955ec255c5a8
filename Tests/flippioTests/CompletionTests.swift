import FlippioEngine
import Foundation
import Testing
import TestSupport

/// The shell completions' callbacks (`flippio ---completion …`, as the generated bash, zsh and fish
/// scripts call them) answer with the emulated device's serial, its apps and the tracked copies.
@Suite("shell completion callbacks", .serialized)
struct CompletionTests {
    /// Runs the callback the way the bash script does: the subcommand, the argument, the index of the
    /// word being completed, the cursor position in it, then every word of the command line.
    func complete(_ scenario: Scenario, _ subcommand: String, _ argument: String, words: [String]) throws -> [String] {
        let result = try scenario.harness.flippio(
            ["---completion", subcommand, "--", argument, "\(words.count - 1)", "\(words.last?.count ?? 0)"] + words, timeout: 30)
        #expect(result.status == 0, "\(result.err)")
        return result.out.split(separator: "\n").map(String.init)
    }

    @Test("pull completes device serials, then that device's apps; push, resolve and forget complete tracked copies")
    func dynamicValues() throws {
        let scenario = try Scenario.make()
        _ = try scenario.harness.sim.addDevice("emulator-5556", state: "offline")
        // Only usable devices: an offline one cannot be pulled from.
        #expect(try complete(scenario, "pull", "positional@0", words: ["flippio", "pull", ""]) == [Scenario.serial])
        #expect(try complete(scenario, "pull", "positional@0", words: ["flippio", "pull", "zz"]) == [])
        #expect(try complete(scenario, "pull", "positional@1", words: ["flippio", "pull", Scenario.serial, "com.ex"]) == [Scenario.package])
        let tracked = scenario.localCopy.path
        for subcommand in ["push", "resolve", "forget"] {
            #expect(try complete(scenario, subcommand, "positional@0", words: ["flippio", subcommand, ""]) == [tracked], "\(subcommand)")
        }
        #expect(try complete(scenario, "push", "positional@0", words: ["flippio", "push", "/nowhere"]) == [])
    }
}
