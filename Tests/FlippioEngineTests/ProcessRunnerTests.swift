import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

@Suite("ProcessRunner")
struct ProcessRunnerTests {
    let runner = ProcessRunner()

    func sh(_ script: String, timeout: Duration = .seconds(30), killGrace: Duration = .seconds(2),
            output: ProcessCommand.Output = .capture(limit: 4 << 20), errorLimit: Int = 64 << 10,
            environment: [String: String] = [:], input: Data? = nil) -> ProcessCommand {
        ProcessCommand(executable: "/bin/sh", arguments: ["-c", script], environment: environment,
                       timeout: timeout, killGrace: killGrace, output: output, errorLimit: errorLimit,
                       input: input)
    }

    /// True while `pid` exists and is not a zombie.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        // A zombie (killed, not yet reaped by its new parent) still answers kill(0).
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].prefix(1)
        return state != "Z"
    }

    // MARK: - Exit status and output

    @Test func exitStatusIsAResultNotAnError() async throws {
        let ok = try await runner.run(sh("exit 0"))
        #expect(ok.termination == .exited(0))
        #expect(ok.succeeded)
        let failed = try await runner.run(sh("exit 3"))
        #expect(failed.termination == .exited(3))
        #expect(!failed.succeeded)
        #expect(!failed.timedOut)
    }

    @Test func signalledChildIsReportedAsSignalled() async throws {
        let result = try await runner.run(sh("kill -9 $$"))
        #expect(result.termination == .signalled(SIGKILL))
        #expect(result.status == 128 + SIGKILL)
    }

    @Test func capturesStdoutAndStderrSeparately() async throws {
        let result = try await runner.run(sh("printf 'out\\n'; printf 'err\\n' >&2"))
        #expect(result.stdoutText == "out\n")
        #expect(result.stderrText == "err\n")
        #expect(!result.stdoutTruncated)
    }

    @Test func stdoutPastItsLimitIsTruncatedAndTheChildStillFinishes() async throws {
        // 200 000 bytes against a 1000-byte limit: the rest is drained, so the child exits 0.
        let result = try await runner.run(sh("head -c 200000 /dev/zero; echo done >&2",
                                             output: .capture(limit: 1000)))
        #expect(result.stdout.count == 1000)
        #expect(result.stdoutTruncated)
        #expect(result.termination == .exited(0))
        #expect(result.stderrText == "done\n")
    }

    @Test func stdoutExactlyAtItsLimitIsNotTruncated() async throws {
        let result = try await runner.run(sh("printf 12345", output: .capture(limit: 5)))
        #expect(result.stdoutText == "12345")
        #expect(!result.stdoutTruncated)
    }

    @Test func stderrIsBounded() async throws {
        let result = try await runner.run(sh("head -c 100000 /dev/zero >&2", errorLimit: 100))
        #expect(result.stderr.count == 100)
        #expect(result.termination == .exited(0))
    }

    @Test func stdinIsFedFromInput() async throws {
        let input = Data("line one\nline two\n".utf8)
        let result = try await runner.run(ProcessCommand(executable: "/bin/cat", arguments: [],
                                                         timeout: .seconds(30), input: input))
        #expect(result.stdout == input)
    }

    @Test func noInputMeansEmptyStdin() async throws {
        let result = try await runner.run(ProcessCommand(executable: "/bin/cat", arguments: [],
                                                         timeout: .seconds(30)))
        #expect(result.stdout.isEmpty)
        #expect(result.termination == .exited(0))
    }

    @Test func binaryOutputToFileIsByteExact() async throws {
        let dir = try TemporaryDirectory("runner")
        var generator = SystemRandomNumberGenerator()
        let words = (0..<(3 << 17)).map { _ in generator.next() as UInt64 }
        let bytes = words.withUnsafeBytes { Data($0) }
        let source = dir.child("source.bin")
        try bytes.write(to: source)
        let target = dir.child("target.bin")
        let result = try await runner.run(ProcessCommand(
            executable: "/bin/cat", arguments: [source.path], timeout: .seconds(60),
            output: .file(path: target.path)))
        #expect(result.termination == .exited(0))
        #expect(result.stdout.isEmpty)
        #expect(try Data(contentsOf: target) == bytes)
    }

    @Test func outputFileIsTruncatedFirst() async throws {
        let dir = try TemporaryDirectory("runner")
        let target = dir.child("target.txt")
        try Data(String(repeating: "old content ", count: 100).utf8).write(to: target)
        _ = try await runner.run(sh("printf new", output: .file(path: target.path)))
        #expect(try String(contentsOf: target, encoding: .utf8) == "new")
    }

    @Test func unwritableOutputFileThrows() async throws {
        await #expect(throws: FlippioError.self) {
            _ = try await runner.run(sh("true", output: .file(path: "/nonexistent-dir/x.bin")))
        }
    }

    // MARK: - Environment

    @Test func environmentIsInheritedAndOverridden() async throws {
        setenv("FLIPPIO_RUNNER_INHERITED", "from-parent", 1)
        defer { unsetenv("FLIPPIO_RUNNER_INHERITED") }
        let result = try await runner.run(sh(
            "printf '%s|%s|%s' \"$FLIPPIO_RUNNER_INHERITED\" \"$ANDROID_ADB_SERVER_PORT\" \"$PATH\"",
            environment: ["ANDROID_ADB_SERVER_PORT": "5099"]))
        let parts = result.stdoutText.split(separator: "|", omittingEmptySubsequences: false)
        #expect(parts.count == 3)
        #expect(parts[0] == "from-parent")
        #expect(parts[1] == "5099")
        #expect(parts[2] == ProcessInfo.processInfo.environment["PATH"].map { Substring($0) })
    }

    // MARK: - Deadlines, cancellation, process groups

    @Test func timeoutKillsTheWholeProcessGroup() async throws {
        let dir = try TemporaryDirectory("runner")
        let pidFile = dir.child("grandchild.pid")
        // The grandchild ignores SIGTERM; only the group SIGKILL can end it.
        let script = "sh -c 'trap \"\" TERM; echo $$ > \(pidFile.path); exec sleep 1000' & sleep 1000"
        let result = try await runner.run(sh(script, timeout: .milliseconds(500), killGrace: .milliseconds(200)))
        #expect(result.timedOut)
        #expect(!result.succeeded)
        let grandchild = try #require(pid_t(String(contentsOf: pidFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        try await waitUntil("grandchild \(grandchild) is gone") { !Self.isAlive(grandchild) }
    }

    @Test func timeoutEscalatesToSIGKILLWhenTheLeaderIgnoresSIGTERM() async throws {
        let result = try await runner.run(sh("trap '' TERM; while :; do sleep 0.05; done",
                                             timeout: .milliseconds(300), killGrace: .milliseconds(200)))
        #expect(result.timedOut)
        #expect(result.termination == .signalled(SIGKILL))
    }

    @Test func outputReadBeforeTheTimeoutIsKept() async throws {
        let result = try await runner.run(sh("echo partial; echo why >&2; sleep 1000",
                                             timeout: .milliseconds(500), killGrace: .milliseconds(200)))
        #expect(result.timedOut)
        #expect(result.stdoutText == "partial\n")
        #expect(result.stderrText == "why\n")
    }

    @Test func cancellationKillsTheGroupAndThrows() async throws {
        let dir = try TemporaryDirectory("runner")
        let pidFile = dir.child("grandchild.pid")
        let script = "sh -c 'echo $$ > \(pidFile.path); exec sleep 1000' & sleep 1000"
        let runner = self.runner
        let command = sh(script, timeout: .seconds(600), killGrace: .milliseconds(200))
        let task = Task { try await runner.run(command) }
        try await waitUntil("grandchild started") {
            ((try? String(contentsOf: pidFile, encoding: .utf8)) ?? "").hasSuffix("\n")
        }
        let grandchild = try #require(pid_t(String(contentsOf: pidFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(Self.isAlive(grandchild))
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        try await waitUntil("grandchild \(grandchild) is gone") { !Self.isAlive(grandchild) }
    }

    @Test func normalExitLeavesBackgroundChildrenAlone() async throws {
        // A tool may leave a daemon behind on purpose (adb starts its server that way).
        let dir = try TemporaryDirectory("runner")
        let pidFile = dir.child("daemon.pid")
        let result = try await runner.run(sh(
            "sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > \(pidFile.path)"))
        #expect(result.termination == .exited(0))
        let daemon = try #require(pid_t(String(contentsOf: pidFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(Self.isAlive(daemon))
        kill(daemon, SIGKILL)
    }

    @Test func grandchildHoldingThePipeDoesNotBlockTheResult() async throws {
        // The background sleep inherits stdout; the call still ends when `sh` exits.
        let dir = try TemporaryDirectory("runner")
        let pidFile = dir.child("holder.pid")
        let result = try await runner.run(sh("sleep 1000 & echo $! > \(pidFile.path); echo hi",
                                             timeout: .seconds(60)))
        #expect(!result.timedOut)
        #expect(result.stdoutText == "hi\n")
        if let pid = pid_t((try? String(contentsOf: pidFile, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") {
            kill(pid, SIGKILL)
        }
    }

    // MARK: - Starting

    @Test func missingExecutableThrowsToolNotFoundNamingIt() async throws {
        do {
            _ = try await runner.run(ProcessCommand(executable: "/nonexistent/bin/adb", arguments: ["version"],
                                                    timeout: .seconds(5)))
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .toolNotFound)
            #expect(error.message.contains("adb"))
            #expect(error.message.contains("/nonexistent/bin/adb"))
        }
    }

    @Test func missingBareNameThrowsToolNotFound() async throws {
        await #expect(throws: FlippioError.self) {
            do {
                _ = try await runner.run(ProcessCommand(executable: "flippio-no-such-tool-xyz", arguments: [],
                                                        timeout: .seconds(5)))
            } catch let error as FlippioError {
                #expect(error.code == .toolNotFound)
                throw error
            }
        }
    }

    @Test func nonExecutableFileThrowsToolFailed() async throws {
        let dir = try TemporaryDirectory("runner")
        let file = dir.child("not-executable")
        try Data("#!/bin/sh\n".utf8).write(to: file)
        do {
            _ = try await runner.run(ProcessCommand(executable: file.path, arguments: [], timeout: .seconds(5)))
            Issue.record("expected an error")
        } catch let error as FlippioError {
            #expect(error.code == .toolFailed)
        }
    }
}

extension ProcessRunnerTests {
    @Test func childThatIgnoresItsInputStillReturnsAResult() async throws {
        // 4 MiB of input to a child that exits at once: the write end sees EPIPE, not a crash.
        let input = Data(repeating: 0x61, count: 4 << 20)
        let result = try await runner.run(sh("exit 7", input: input))
        #expect(result.termination == .exited(7))
    }
}

extension ProcessRunnerTests {
    @Test func largeInputThroughCatToAFileIsByteExact() async throws {
        let dir = try TemporaryDirectory("runner")
        var generator = SystemRandomNumberGenerator()
        let words = (0..<(1 << 17)).map { _ in generator.next() as UInt64 }
        let bytes = words.withUnsafeBytes { Data($0) }
        let target = dir.child("target.bin")
        let result = try await runner.run(ProcessCommand(
            executable: "/bin/cat", arguments: [], timeout: .seconds(60), output: .file(path: target.path),
            input: bytes))
        #expect(result.termination == .exited(0))
        #expect(try Data(contentsOf: target) == bytes)
    }

    @Test func timeoutWhileTheChildIgnoresItsInputStillEnds() async throws {
        let result = try await runner.run(sh("sleep 1000", timeout: .milliseconds(300), killGrace: .milliseconds(200),
                                             input: Data(repeating: 0x62, count: 4 << 20)))
        #expect(result.timedOut)
    }
}

extension ProcessRunnerTests {
    @Test func fiftyMegabytesToAFileAreNotHeldInMemory() async throws {
        let dir = try TemporaryDirectory("runner")
        let source = dir.child("source.bin"), target = dir.child("target.bin")
        let size = 50 << 20
        let made = try await runner.run(sh("head -c \(size) /dev/urandom > \(source.path)", timeout: .seconds(120)))
        #expect(made.succeeded)
        let copied = try await runner.run(ProcessCommand(executable: "/bin/cat", arguments: [source.path],
                                                         timeout: .seconds(120), output: .file(path: target.path)))
        #expect(copied.succeeded)
        #expect(copied.stdout.isEmpty)
        let attributes = try FileManager.default.attributesOfItem(atPath: target.path)
        #expect((attributes[.size] as? NSNumber)?.intValue == size)
        let compared = try await runner.run(ProcessCommand(executable: "/usr/bin/cmp",
                                                           arguments: [source.path, target.path],
                                                           timeout: .seconds(120)))
        #expect(compared.termination == .exited(0))
    }
}
