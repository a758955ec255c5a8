import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

@Suite("ToolDiscovery")
struct ToolDiscoveryTests {
    static let versionOutputs: [Tool: String] = [
        .adb: "Android Debug Bridge version 1.0.41\nVersion 29.0.6-debian\nInstalled as /x/adb\n",
        .ideviceID: "idevice_id 1.3.0\n",
        .ideviceinfo: "ideviceinfo 1.3.0\n",
        .ideviceinstaller: "ideviceinstaller 1.1.1\n",
        .afcclient: "afcclient 1.3.1 (readline)\n",
        .ifuse: "ifuse 1.1.3\n",
        .fusermount: "fusermount version: 2.9.9\n",
    ]

    /// Writes an executable shell script named after `tool` into `directory`.
    @discardableResult
    static func fakeTool(_ tool: Tool, in directory: URL, _ body: String) throws -> String {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(tool.executableName)
        try Data(("#!/bin/sh\n" + body + "\n").utf8).write(to: url)
        guard chmod(url.path, 0o755) == 0 else { throw ShellError("chmod \(url.path) failed") }
        return url.path
    }

    /// A script that prints the tool's usual version output.
    static func wellBehaved(_ tool: Tool, extra: String = "") -> String {
        "\(extra)\nprintf '%s' '\(versionOutputs[tool]!)'"
    }

    static func readPid(_ url: URL) -> pid_t? {
        (try? String(contentsOf: url, encoding: .utf8))
            .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    // MARK: - Finding

    @Test func findsEveryToolOnPATHAndParsesItsVersion() async throws {
        let dir = try TemporaryDirectory("tools")
        for tool in Tool.allCases { try Self.fakeTool(tool, in: dir.url, Self.wellBehaved(tool)) }
        let discovery = ToolDiscovery(environment: ["PATH": "/nonexistent:\(dir.path)"], runner: ProcessRunner())
        let all = await discovery.locateAll()
        #expect(all.map(\.tool) == Tool.allCases)
        #expect(all.allSatisfy { $0.isUsable })
        #expect(all.map(\.path) == Tool.allCases.map { dir.url.appendingPathComponent($0.executableName).path })
        #expect(all.map(\.version) == ["29.0.6-debian", "1.3.0", "1.3.0", "1.1.1", "1.3.1", "1.1.3", "2.9.9"])
        #expect(try await discovery.require(.afcclient) == dir.url.appendingPathComponent("afcclient").path)
    }

    /// fuse3 alone (Debian 12's default) installs `fusermount3`, with no `fusermount`.
    @Test func fusermount3StandsInForFusermount() async throws {
        let dir = try TemporaryDirectory("tools")
        let script = dir.url.appendingPathComponent("fusermount3")
        try Data("#!/bin/sh\nprintf 'fusermount3 version: 3.14.0\\n'\n".utf8).write(to: script)
        #expect(chmod(script.path, 0o755) == 0)
        let info = await ToolDiscovery(environment: ["PATH": dir.path], runner: ProcessRunner()).locate(.fusermount)
        #expect(info.path == script.path && info.version == "3.14.0")
    }

    @Test func missingToolNamesItsDebianPackage() async throws {
        let dir = try TemporaryDirectory("tools")
        let discovery = ToolDiscovery(environment: ["PATH": dir.path], runner: ProcessRunner())
        let info = await discovery.locate(.ideviceinstaller)
        #expect(info.path == nil)
        #expect(!info.isUsable)
        #expect(info.problem?.contains("not found") == true)
        #expect(info.problem?.contains("`ideviceinstaller`") == true)
        let adb = await discovery.locate(.adb)
        #expect(adb.problem?.contains("install the Debian package `adb`") == true)
        #expect(await discovery.locate(.afcclient).problem?.contains("`libimobiledevice-utils`") == true)
        do {
            _ = try await discovery.require(.ideviceID)
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .toolNotFound)
            #expect(error.message.contains("idevice_id"))
            #expect(error.remedy?.contains("libimobiledevice-utils") == true)
            #expect(error.remedy?.contains("FLIPPIO_IDEVICE_ID") == true)
        }
    }

    @Test func hangingToolIsReportedAsTimedOutAndKilled() async throws {
        let dir = try TemporaryDirectory("tools")
        let pidFile = dir.child("adb.pid")
        try Self.fakeTool(.adb, in: dir.child("bin"), "echo $$ > \(pidFile.path)\nexec sleep 1000")
        let discovery = ToolDiscovery(environment: ["PATH": dir.child("bin").path], runner: ProcessRunner(),
                                      timeout: .milliseconds(500))
        let info = await discovery.locate(.adb)
        #expect(info.path == dir.child("bin/adb").path)
        #expect(info.problem?.contains("timed out after 500ms") == true)
        #expect(!info.isUsable)
        let pid = try #require(Self.readPid(pidFile))
        try await waitUntil("hanging adb \(pid) is killed") { kill(pid, 0) != 0 }
        do {
            _ = try await discovery.require(.adb)
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .toolFailed)
            #expect(error.message.contains("timed out"))
        }
    }

    @Test func failingVersionCallIsAProblem() async throws {
        let dir = try TemporaryDirectory("tools")
        try Self.fakeTool(.ideviceinfo, in: dir.url, "echo 'ERROR: broken install' >&2\nexit 4")
        let discovery = ToolDiscovery(environment: ["PATH": dir.path], runner: ProcessRunner())
        let info = await discovery.locate(.ideviceinfo)
        #expect(info.path != nil)
        #expect(info.problem?.contains("status 4") == true)
        #expect(info.problem?.contains("ERROR: broken install") == true)
    }

    // MARK: - Precedence

    @Test func explicitPathsBeatTheEnvironmentWhichBeatsPATH() async throws {
        let dir = try TemporaryDirectory("tools")
        let onPath = try Self.fakeTool(.adb, in: dir.child("path"), "echo 'Version 1-path'")
        let fromEnv = try Self.fakeTool(.adb, in: dir.child("env"), "echo 'Version 2-env'")
        let fromFlag = try Self.fakeTool(.adb, in: dir.child("flag"), "echo 'Version 3-flag'")
        let pathOnly = ToolDiscovery(environment: ["PATH": dir.child("path").path], runner: ProcessRunner())
        #expect(await pathOnly.locate(.adb) == ToolInfo(tool: .adb, path: onPath, version: "1-path", problem: nil))
        let env = ["PATH": dir.child("path").path, "FLIPPIO_ADB": fromEnv]
        let withEnv = ToolDiscovery(environment: env, runner: ProcessRunner())
        #expect(await withEnv.locate(.adb) == ToolInfo(tool: .adb, path: fromEnv, version: "2-env", problem: nil))
        let withFlag = ToolDiscovery(environment: env, explicitPaths: [.adb: fromFlag], runner: ProcessRunner())
        #expect(await withFlag.locate(.adb) == ToolInfo(tool: .adb, path: fromFlag, version: "3-flag", problem: nil))
    }

    @Test func brokenExplicitPathIsReportedWithoutFallingBackToPATH() async throws {
        let dir = try TemporaryDirectory("tools")
        try Self.fakeTool(.ideviceID, in: dir.url, Self.wellBehaved(.ideviceID))
        let discovery = ToolDiscovery(environment: ["PATH": dir.path, "FLIPPIO_IDEVICE_ID": "/nonexistent/idevice_id"],
                                      runner: ProcessRunner())
        let info = await discovery.locate(.ideviceID)
        #expect(info.path == nil)
        #expect(info.problem?.contains("FLIPPIO_IDEVICE_ID") == true)
        #expect(info.problem?.contains("/nonexistent/idevice_id") == true)
    }

    @Test func adbIsFoundUnderTheAndroidSDK() async throws {
        let dir = try TemporaryDirectory("tools")
        let sdkRootAdb = try Self.fakeTool(.adb, in: dir.child("sdk-root/platform-tools"), "echo 'Version 9-root'")
        let discovery = ToolDiscovery(environment: ["PATH": dir.child("empty").path,
                                                    "ANDROID_HOME": dir.child("missing").path,
                                                    "ANDROID_SDK_ROOT": dir.child("sdk-root").path],
                                      runner: ProcessRunner())
        #expect(await discovery.locate(.adb).path == sdkRootAdb)

        let homeAdb = try Self.fakeTool(.adb, in: dir.child("home/platform-tools"), "echo 'Version 8-home'")
        let preferHome = ToolDiscovery(environment: ["ANDROID_HOME": dir.child("home").path,
                                                     "ANDROID_SDK_ROOT": dir.child("sdk-root").path],
                                       runner: ProcessRunner())
        let info = await preferHome.locate(.adb)
        #expect(info.path == homeAdb)
        #expect(info.version == "8-home")
        // Only adb has an SDK fallback.
        #expect(await preferHome.locate(.ideviceinfo).path == nil)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/adb")))
    func findsTheRealAdb() async throws {
        let discovery = ToolDiscovery(environment: ["PATH": "/usr/bin"], runner: ProcessRunner())
        let info = await discovery.locate(.adb)
        #expect(info.path == "/usr/bin/adb")
        #expect(info.isUsable)
        #expect(info.version?.first?.isNumber == true)
    }

    // MARK: - Concurrency and caching

    @Test func allToolsAreCheckedConcurrently() async throws {
        let dir = try TemporaryDirectory("tools")
        let log = dir.child("calls.log")
        let count = Tool.allCases.count
        for tool in Tool.allCases {
            // Each version call waits (bounded) until every call has started: if the calls ran
            // one after another, the first would give up waiting and log "alone".
            try Self.fakeTool(tool, in: dir.child("bin"), """
                echo "start \(tool)" >> \(log.path)
                i=0
                while [ "$(grep -c '^start' \(log.path))" -lt \(count) ]; do
                  i=$((i+1)); if [ $i -gt 300 ]; then echo "alone \(tool)" >> \(log.path); break; fi
                  sleep 0.1
                done
                sleep 0.3
                echo "end \(tool)" >> \(log.path)
                echo 'Version 1.0'; echo '\(tool) 1.0'
                """)
        }
        let discovery = ToolDiscovery(environment: ["PATH": dir.child("bin").path], runner: ProcessRunner(),
                                      timeout: .seconds(120))
        let all = await discovery.locateAll()
        #expect(all.allSatisfy { $0.isUsable })
        let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("alone") })
        #expect(lines.count == 2 * count)
        // Every call started before any call ended: they all overlapped.
        #expect(lines.prefix(count).allSatisfy { $0.hasPrefix("start") })
        #expect(lines.suffix(count).allSatisfy { $0.hasPrefix("end") })
    }

    @Test func theVersionCallRunsOncePerTool() async throws {
        let dir = try TemporaryDirectory("tools")
        let counter = dir.child("adb.count")
        try Self.fakeTool(.adb, in: dir.child("bin"), "echo call >> \(counter.path)\nsleep 0.2\necho 'Version 1.0'")
        let discovery = ToolDiscovery(environment: ["PATH": dir.child("bin").path], runner: ProcessRunner())
        // Concurrent callers share the in-flight lookup…
        let results = await withTaskGroup(of: ToolInfo.self) { group in
            for _ in 0..<8 { group.addTask { await discovery.locate(.adb) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        // …and later callers get the cached result.
        let again = await discovery.locate(.adb)
        _ = await discovery.locateAll()
        #expect(results.count == 8)
        #expect(results.allSatisfy { $0 == again })
        #expect(again.version == "1.0")
        #expect(try String(contentsOf: counter, encoding: .utf8) == "call\n")
    }

    // MARK: - Tool facts

    @Test func versionParsing() {
        #expect(Tool.adb.parseVersion("Android Debug Bridge version 1.0.41\nVersion 29.0.6-debian\n") == "29.0.6-debian")
        #expect(Tool.adb.parseVersion("Android Debug Bridge version 1.0.41\nInstalled as /usr/bin/adb\n") == "1.0.41")
        #expect(Tool.adb.parseVersion("garbage") == nil)
        #expect(Tool.ideviceID.parseVersion("idevice_id 1.3.0\n") == "1.3.0")
        #expect(Tool.ideviceinstaller.parseVersion("ideviceinstaller 1.1.1") == "1.1.1")
        #expect(Tool.afcclient.parseVersion("afcclient 1.3.1 (readline)\n") == "1.3.1")
        #expect(Tool.ideviceinfo.parseVersion("ideviceinfo v-dev") == "v-dev")
        #expect(Tool.ideviceinfo.parseVersion("") == nil)
    }

    @Test func environmentVariablesAndPackages() {
        #expect(Tool.allCases.map(\.environmentVariable) ==
            ["FLIPPIO_ADB", "FLIPPIO_IDEVICE_ID", "FLIPPIO_IDEVICEINFO", "FLIPPIO_IDEVICEINSTALLER", "FLIPPIO_AFCCLIENT",
             "FLIPPIO_IFUSE", "FLIPPIO_FUSERMOUNT"])
        #expect(Tool.allCases.map(\.debianPackage) ==
            ["adb", "libimobiledevice-utils", "libimobiledevice-utils", "ideviceinstaller", "libimobiledevice-utils",
             "ifuse", "fuse3"])
        // ifuse prints `ifuse 1.1.3` (Debian 12's snapshot); fusermount answers -V.
        #expect(Tool.ifuse.parseVersion("ifuse 1.1.3\n") == "1.1.3")
        #expect(Tool.fusermount.versionArguments == ["-V"])
        #expect(Tool.fusermount.parseVersion("fusermount version: 2.9.9\n") == "2.9.9")
        #expect(Tool.fusermount.parseVersion("fusermount3 version: 3.14.0\n") == "3.14.0")
        #expect(ToolDiscovery.format(.seconds(3)) == "3s")
        #expect(ToolDiscovery.format(.milliseconds(250)) == "250ms")
        #expect(ToolDiscovery.format(.milliseconds(1500)) == "1.5s")
    }

    @Test func toolInfoIsCodable() throws {
        let info = ToolInfo(tool: .ideviceID, path: "/usr/bin/idevice_id", version: "1.3.0", problem: nil)
        let json = try JSONEncoder().encode(info)
        #expect(String(decoding: json, as: UTF8.self).contains("\"idevice_id\""))
        #expect(try JSONDecoder().decode(ToolInfo.self, from: json) == info)
    }
}
