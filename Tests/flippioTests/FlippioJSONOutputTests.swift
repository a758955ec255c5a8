import FlippioEngine
import Foundation
import Testing
import TestSupport

/// `--json` on every command that prints data, errors included; `status` for terminals and
/// scripts; `apps` says which apps are debuggable. The real flippio binary, the real adb,
/// flippio-devsim.
@Suite(.serialized) struct FlippioJSONOutputTests {
    /// The document a `--json` run printed, checked for `"schemaVersion": 1`.
    func document(_ result: ShellResult, _ context: String = "") throws -> [String: Any] {
        let object = try #require(try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any],
                                  "\(context): stdout is not a JSON object: \(result.out)")
        #expect(object["schemaVersion"] as? Int == 1, "\(context): \(result.out)")
        return object
    }

    @Test func everyDataCommand_printsAVersionedObject() throws {
        let scenario = try Scenario.make()
        let h = scenario.harness
        let runs: [([String], String)] = [
            (["devices"], "devices"), (["apps", Scenario.serial], "apps"), (["dbs", Scenario.serial, Scenario.package], "databases"),
            (["pull", Scenario.serial, Scenario.package, "notes.db"], "pulled"), (["status"], "databases"),
            (["push", "--force", "--no-stop-app"], "results"), (["doctor"], "tools"),
        ]
        for (arguments, key) in runs {
            let result = try h.flippio(arguments + ["--json"])
            #expect(result.status == 0, "\(arguments): \(result.err)")
            let object = try document(result, "\(arguments)")
            #expect(object[key] != nil, "\(arguments) has \"\(key)\": \(result.out)")
        }
        let status = try document(try h.flippio(["status", "--json"]))
        #expect(status["workspace"] as? String == h.workspace.path)
        let databases = try #require(status["databases"] as? [[String: Any]])
        #expect(databases.first?["path"] as? String == scenario.localCopy.path, "JSON keeps absolute paths")
        let forget = try h.flippio(["forget", scenario.localCopy.path, "--json"])
        #expect(try document(forget)["forgotten"] as? String == scenario.localCopy.path)
    }

    @Test func failures_printTheErrorObjectOnStdout_andExit1() throws {
        let scenario = try Scenario.make(pull: false)
        let missing = try scenario.harness.flippio(["dbs", "nosuch", Scenario.package, "--json"])
        #expect(missing.status == 1)
        let error = try #require(try document(missing)["error"] as? [String: Any])
        #expect(error["code"] as? String == "device-not-found")
        #expect((error["message"] as? String)?.contains("nosuch") == true)
        #expect((error["remedy"] as? String)?.isEmpty == false)
        #expect(missing.err.contains("error:"), "people at a terminal still read it on stderr")

        // No adb: `devices` lists nothing, says why in `problems` and fails with `error`.
        let noAdb = try scenario.harness.flippio(["devices", "--json", "--adb", "/nonexistent/adb"],
                                                 environment: ["FLIPPIO_IDEVICE_ID": "/nonexistent/idevice_id"])
        #expect(noAdb.status == 1, "\(noAdb.out)")
        let listing = try document(noAdb)
        #expect((listing["devices"] as? [Any])?.isEmpty == true)
        #expect((listing["problems"] as? [[String: Any]])?.isEmpty == false)
        #expect((listing["error"] as? [String: Any])?["code"] as? String == "tool-not-found", "\(noAdb.out)")

        let noDatabase = try scenario.harness.flippio(["pull", Scenario.serial, Scenario.package, "nope.db", "--json"])
        #expect(noDatabase.status == 1)
        #expect((try document(noDatabase)["error"] as? [String: Any])?["code"] as? String == "no-such-file")
    }

    @Test func usageAndConfigurationErrors_exit2_alsoInJSON() throws {
        let h = try FlippioHarness()
        let usage = try h.flippio(["status", "--bogus", "--json"])
        #expect(usage.status == 2)
        #expect((try document(usage)["error"] as? [String: Any])?["code"] as? String == "usage")
        let level = try h.flippio(["status", "--log-level", "loud"])
        #expect(level.status == 2)
        #expect(level.err.contains("--log-level accepts one of: trace, debug"))

        let config = h.home.url.appendingPathComponent("config/flippio/config.json")
        try FileManager.default.createDirectory(at: config.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(#"{"stopApp": "no", "setleMs": 5}"#.utf8).write(to: config)
        let typo = try h.flippio(["status", "--json"])
        #expect(typo.status == 2)
        let error = try #require(try document(typo)["error"] as? [String: Any])
        #expect(error["code"] as? String == "invalid-configuration")
        #expect((error["message"] as? String)?.contains("\"setleMs\" (did you mean \"settleMs\"?)") == true, "\(typo.out)")
        try Data(#"{"stopApp": "no"}"#.utf8).write(to: config)
        let wrongType = try h.flippio(["devices"])
        #expect(wrongType.status == 2)
        #expect(wrongType.err.contains("\"stopApp\" to \"no\"") && wrongType.err.contains("accepts true or false"), "\(wrongType.err)")
        #expect(!wrongType.err.contains("DecodingError"))
        // `~` in a flag means $HOME even when the shell left it alone (`--workspace=~/ws`).
        try Data(#"{"workspace": "~/from-config"}"#.utf8).write(to: config)
        let home = h.home.url.appendingPathComponent("home").path
        let flag = try h.flippio(["status", "--json", "--workspace=~/ws"], environment: ["HOME": home])
        #expect(try document(flag)["workspace"] as? String == home + "/ws", "\(flag.out)\(flag.err)")
        let file = try h.flippio(["status", "--json"], environment: ["HOME": home, "FLIPPIO_WORKSPACE": ""])
        #expect(try document(file)["workspace"] as? String == home + "/from-config", "\(file.out)\(file.err)")
        try FileManager.default.removeItem(at: config)
        let env = try h.flippio(["status"], environment: ["FLIPPIO_SETTLE_MS": "soon"])
        #expect(env.status == 2)
        #expect(env.err.contains("FLIPPIO_SETTLE_MS=soon"))
    }

    @Test func apps_sayWhichAreDebuggable() throws {
        let h = try FlippioHarness()
        try h.sim.addDevice(Scenario.serial, packages: ["com.example.notes": true, "com.example.bank": false])
        let text = try h.flippio(["apps", Scenario.serial])
        #expect(text.status == 0, "\(text.err)")
        let lines = text.out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(lines.contains(["com.example.bank", "no"]), "\(text.out)")
        #expect(lines.contains(["com.example.notes", "yes"]), "\(text.out)")
        let json = try document(try h.flippio(["apps", Scenario.serial, "--json"]))
        let apps = try #require(json["apps"] as? [[String: Any]])
        #expect(apps.map { $0["debuggable"] as? Bool } == [false, true])
    }

    @Test func status_relativePaths_andExitCodeForConflictOrFailed() throws {
        let scenario = try Scenario.make()
        let h = scenario.harness
        let relative = "\(Scenario.serial)/\(Scenario.package)\(Scenario.remotePath)"
        let text = try h.flippio(["status", "--exit-code"])
        #expect(text.status == 0, "clean: \(text.out)\(text.err)")
        #expect(text.out.contains(" \(relative) "), "\(text.out)")
        #expect(!text.out.contains(h.workspace.path), "the workspace prefix is left out: \(text.out)")

        for state in ["conflict", "failed"] {
            try setSidecarState(scenario, state)
            let flagged = try h.flippio(["status", "--exit-code"])
            #expect(flagged.status == 1, "\(state): \(flagged.out)")
            #expect(flagged.out.contains(state))
            #expect(try h.flippio(["status"]).status == 0, "without --exit-code the state is only shown")
            let json = try h.flippio(["status", "--exit-code", "--json"])
            #expect(json.status == 1)
            #expect(((try document(json)["databases"] as? [[String: Any]])?.first?["state"] as? String) == state)
        }
        try setSidecarState(scenario, "waiting-for-device")
        #expect(try h.flippio(["status", "--exit-code"]).status == 0, "a transient state does not fail the prompt")
    }

    /// Puts the sidecar (the agent's state) into `state`, as the agent would have left it.
    func setSidecarState(_ scenario: Scenario, _ state: String) throws {
        let url = Sidecar.url(forDatabase: scenario.localCopy)
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        object["state"] = state
        try JSONSerialization.data(withJSONObject: object).write(to: url)
    }
}
