import FlippioEngine
import Foundation
import Testing
import TestSupport

/// A tool that keeps running (`adb track-devices`, `adb shell … inotifyd`): its output arrives as
/// it is written, and no child (nor anything it started) outlives the call.
@Suite("StreamingProcess")
struct StreamingProcessTests {
    static let sh = "/bin/sh"

    /// Whether `pid` is gone: no such process, or a zombie waiting for its (new) parent to reap it.
    static func isGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        // "PID (comm) STATE …": the state follows the last ')'.
        guard let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    @Test func outputArrivesWhileTheChildRunsAndItsExitStatusIsReported() async throws {
        let dir = try TemporaryDirectory("flippio-stream")
        let fifo = dir.child("go").path
        #expect(mkfifo(fifo, 0o600) == 0)
        // The child prints a line, then blocks until the test writes into the FIFO: the first
        // line can only reach the test while the child is still running.
        let child = StreamingProcess(executable: Self.sh, arguments: ["-c", "echo first; cat \"$0\"; exit 3", fifo])
        let outcome = try await child.run { output in
            var text = ""
            for try await bytes in output {
                text += String(decoding: bytes, as: UTF8.self)
                if text == "first\n" {
                    try Data("second\n".utf8).write(to: URL(fileURLWithPath: fifo))
                }
            }
            return text
        }
        #expect(outcome.value == "first\nsecond\n")
        #expect(outcome.termination == .exited(3))
    }

    @Test func aCallerThatStopsReadingEndsTheChildAndWhatItStarted() async throws {
        let child = StreamingProcess(executable: Self.sh, arguments: ["-c", "sleep 3600 & echo $!; wait"])
        let outcome = try await child.run { output -> Int32? in
            var text = ""
            for try await bytes in output {
                text += String(decoding: bytes, as: UTF8.self)
                if text.hasSuffix("\n") { return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            return nil
        }
        let grandchild = try #require(outcome.value)
        #expect(outcome.termination == .signalled(SIGTERM), "the shell was stopped, not left running")
        try await waitUntil("the background sleep is gone with its group") { Self.isGone(grandchild) }
    }

    @Test func cancellingTheCallerEndsTheChild() async throws {
        let dir = try TemporaryDirectory("flippio-stream")
        let pidFile = dir.child("pid")
        let child = StreamingProcess(executable: Self.sh, arguments: ["-c", "echo $$ > \"$0\"; exec sleep 3600", pidFile.path])
        let task = Task { try await child.run { output in for try await _ in output {} } }
        try await waitUntil("the child wrote its pid") { ((try? String(contentsOf: pidFile, encoding: .utf8)) ?? "").hasSuffix("\n") }
        let pid = try #require(Int32(String(contentsOf: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        task.cancel()
        let outcome = try await task.value
        #expect(outcome.termination == .signalled(SIGTERM))
        #expect(Self.isGone(pid), "run returns only once the child was reaped")
    }

    @Test func aChildThatIgnoresSIGTERMIsKilled() async throws {
        // An ignored signal stays ignored across exec: the sleep ignores SIGTERM too.
        let child = StreamingProcess(executable: Self.sh, arguments: ["-c", "trap '' TERM; echo ready; exec sleep 3600"],
                                     killGrace: .milliseconds(200))
        let outcome = try await child.run { output in
            for try await _ in output { return }
        }
        #expect(outcome.termination == .signalled(SIGKILL))
    }

    @Test func theChildInheritsNoDescriptorButItsOutput() async throws {
        let dir = try TemporaryDirectory("flippio-stream")
        // Opened without O_CLOEXEC, as Foundation's Process leaves the socket it learns a
        // child's exit from: an `adb` server started by the child must not keep it open.
        let leaked = open(dir.child("open-file").path, O_CREAT | O_WRONLY, 0o600)
        #expect(leaked >= 3)
        defer { close(leaked) }
        let child = StreamingProcess(executable: Self.sh, arguments: ["-c", "ls /proc/$$/fd"])
        let outcome = try await child.run { output in
            var text = ""
            for try await bytes in output { text += String(decoding: bytes, as: UTF8.self) }
            return Set(text.split(separator: "\n").map(String.init))
        }
        #expect(outcome.value.isSuperset(of: ["0", "1", "2"]))
        #expect(!outcome.value.contains(String(leaked)), "\(outcome.value.sorted())")
    }

    @Test func aMissingToolIsToolNotFound() async throws {
        let child = StreamingProcess(executable: "/nonexistent/adb", arguments: ["track-devices"])
        await expectFlippioError(.toolNotFound) { try await child.run { output in for try await _ in output {} } }
    }
}
