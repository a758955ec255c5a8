import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

@Suite("Unit file")
struct UnitFileTests {
    static let repoUnit = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("systemd/flippio-agent.service")

    static let systemdAnalyze = Products.systemTool("systemd-analyze")

    func installer(executable: String = "/bin/true", workspace: String = "/home/u/flippio") -> ServiceInstaller {
        ServiceInstaller(environment: ["HOME": "/home/u"], runner: UnusedRunner(), executablePath: executable,
                         workspace: URL(fileURLWithPath: workspace, isDirectory: true))
    }

    /// Sections of a unit file: name → (key → values, in order).
    func parse(_ text: String) -> [String: [String: [String]]] {
        var sections: [String: [String: [String]]] = [:]
        var current = ""
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") { current = String(line.dropFirst().dropLast()); continue }
            guard let equals = line.firstIndex(of: "=") else { continue }
            sections[current, default: [:]][String(line[..<equals]), default: []].append(String(line[line.index(after: equals)...]))
        }
        return sections
    }

    @Test("for the iOS ifuse backend, the unit leaves out no_new_privs and every setting that implies it")
    func ifuseUnitAllowsSetuidFusermount() {
        var installer = installer()
        let hardened = parse(installer.unitFileContents())["Service"] ?? [:]
        #expect(hardened["NoNewPrivileges"] == ["yes"])
        #expect(hardened["SystemCallFilter"] == ["@system-service"])
        installer.allowsSetuidHelpers = true
        let service = parse(installer.unitFileContents())["Service"] ?? [:]
        #expect(service["NoNewPrivileges"] == ["no"])
        for key in ["SystemCallFilter", "SystemCallArchitectures", "RestrictAddressFamilies", "RestrictNamespaces",
                    "MemoryDenyWriteExecute", "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID"] {
            #expect(service[key] == nil, "\(key) implies NoNewPrivileges= in a user unit")
        }
        #expect(service["KillMode"] == ["process"] && service["Type"] == ["notify"] && service["UMask"] == ["0077"],
                "everything else stays")
    }

    @Test("systemd/flippio-agent.service is the installer's template, byte for byte")
    func templateMatchesRepository() throws {
        let text = try String(contentsOf: Self.repoUnit, encoding: .utf8)
        #expect(text == ServiceInstaller.unitTemplate)
        #expect(text.contains("ExecStart=@FLIPPIO@ agent --workspace @WORKSPACE@"))
    }

    @Test("the unit has the keys issues #5 and #15 ask for, and none that need user namespaces")
    func keys() throws {
        let unit = parse(installer().unitFileContents())
        let expected: [String: [String: String]] = [
            "Unit": ["StartLimitIntervalSec": "60", "StartLimitBurst": "5", "Documentation": "man:flippio(1)"],
            "Service": [
                "Type": "notify", "NotifyAccess": "main", "ExecStart": "/bin/true agent --workspace /home/u/flippio",
                "Restart": "on-failure", "RestartSec": "2", "WatchdogSec": "30", "TimeoutStopSec": "20",
                "KillMode": "process", "NoNewPrivileges": "yes", "SystemCallArchitectures": "native",
                "SystemCallFilter": "@system-service", "SystemCallErrorNumber": "EPERM",
                "RestrictNamespaces": "yes", "MemoryDenyWriteExecute": "yes", "RestrictSUIDSGID": "yes",
                "LockPersonality": "yes", "RestrictRealtime": "yes",
                "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK", "UMask": "0077",
            ],
            "Install": ["WantedBy": "default.target"],
        ]
        for (section, keys) in expected {
            for (key, value) in keys {
                #expect(unit[section]?[key] == [value], "\(section).\(key)")
            }
        }
        #expect(unit["Unit"]?["Description"]?.first?.isEmpty == false)
        let forbidden = ["ProtectHome", "PrivateTmp", "ProtectSystem", "PrivateUsers", "PrivateDevices",
                         "ProtectKernelTunables", "ProtectControlGroups", "Environment", "EnvironmentFile"]
        for key in forbidden {
            #expect(unit["Service"]?[key] == nil, "\(key) must not be set")
        }
    }

    // MARK: - systemd's own check

    /// `systemd-analyze --user verify` needs a runtime directory (it does not need a running manager).
    func verify(_ unitText: String, in dir: TemporaryDirectory) throws -> ShellResult {
        let runtime = dir.child("runtime")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let unit = dir.child("flippio-agent.service")
        try unitText.write(to: unit, atomically: true, encoding: .utf8)
        return try Shell.run(Self.systemdAnalyze!, ["--user", "verify", "--man=no", unit.path],
                             environment: ["XDG_RUNTIME_DIR": runtime.path, "XDG_CONFIG_HOME": dir.child("config").path,
                                           "SYSTEMD_LOG_COLOR": "0"],
                             timeout: 60)
    }

    @Test("systemd-analyze --user verify accepts the generated unit without a warning",
          .enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed"))
    func systemdAccepts() throws {
        let dir = try TemporaryDirectory("flippio-unit")
        let text = installer(executable: "/bin/true", workspace: dir.child("my ws 100%").path).unitFileContents()
        let result = try verify(text, in: dir)
        #expect(result.status == 0, "\(result.err)")
        #expect(result.err.isEmpty, "\(result.err)")
        #expect(result.out.isEmpty, "\(result.out)")
    }

    @Test("Environment= lines for adb and FLIPPIO_* variables pass systemd-analyze verify",
          .enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed"))
    func environmentLinesAccepted() throws {
        let dir = try TemporaryDirectory("flippio-unit")
        let installer = ServiceInstaller(
            environment: ["HOME": "/home/u", "ANDROID_ADB_SERVER_PORT": "5137", "ADB_SERVER_SOCKET": "tcp:127.0.0.1:5137",
                          "FLIPPIO_SETTLE_MS": "500", "FLIPPIO_NOTE": #"a "b" 100% $HOME \ c"#],
            runner: UnusedRunner(), executablePath: "/bin/true", workspace: dir.child("ws"))
        let text = installer.unitFileContents()
        let unit = parse(text)
        #expect(unit["Service"]?["Environment"] == [
            #""ADB_SERVER_SOCKET=tcp:127.0.0.1:5137""#, #""ANDROID_ADB_SERVER_PORT=5137""#,
            #""FLIPPIO_NOTE=a \"b\" 100%% $HOME \\ c""#, #""FLIPPIO_SETTLE_MS=500""#,
        ])
        let result = try verify(text, in: dir)
        #expect(result.status == 0, "\(result.err)")
        #expect(result.err.isEmpty, "\(result.err)")
    }

    @Test("the verify check has teeth: an unknown key, a bad value or a missing executable is reported",
          .enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed"))
    func verifyDetectsProblems() throws {
        let dir = try TemporaryDirectory("flippio-unit")
        let good = installer().unitFileContents()
        let badKey = good.replacingOccurrences(of: "UMask=0077", with: "UMask=0077\nProtectHomeTypo=yes")
        #expect(try verify(badKey, in: dir).err.contains("ProtectHomeTypo"))
        let badValue = good.replacingOccurrences(of: "Restart=on-failure", with: "Restart=sometimes")
        #expect(try verify(badValue, in: dir).err.contains("sometimes"))
        let missing = installer(executable: dir.child("no-such-flippio").path).unitFileContents()
        let result = try verify(missing, in: dir)
        #expect(result.status != 0)
        #expect(result.err.contains("no-such-flippio"))
    }
}

/// A runner for tests that must not start processes.
struct UnusedRunner: ProcessRunning {
    func run(_ command: ProcessCommand) async throws -> ProcessResult {
        Issue.record("unexpected process: \(command.commandLine)")
        throw FlippioError(.toolNotFound, "no processes in this test")
    }
}
