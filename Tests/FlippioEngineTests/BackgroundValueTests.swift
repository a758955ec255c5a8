@testable import FlippioEngine
import Foundation
import Glibc
import Synchronization
import Testing

/// A value computed on a thread of its own: every reader gets it (or its error), whenever it reads.
@Suite("BackgroundValue")
struct BackgroundValueTests {
    struct Failure: Error, Equatable { let code: Int }

    @Test func aReaderWaitsForTheValue_andEveryLaterReaderGetsTheSame() async throws {
        let release = DispatchSemaphore(value: 0)
        let value = BackgroundValue(name: "test") { () throws -> String in
            release.wait()
            return "computed"
        }
        #expect(!value.isDone, "still computing: the work waits for the release")
        // Two readers waiting at once, then one after the end.
        let readers = (0..<2).map { _ in Task.detached { try value.value() } }
        release.signal()
        for reader in readers { #expect(try await reader.value == "computed") }
        #expect(value.isDone)
        #expect(try value.value() == "computed")
    }

    @Test func anErrorOfTheWorkReachesEveryReader() {
        let value = BackgroundValue<Int>(name: "test") { throw Failure(code: 7) }
        #expect(throws: Failure(code: 7)) { try value.value() }
        #expect(throws: Failure(code: 7)) { try value.value() }
    }

    @Test func theWorkRunsAtALowerPriorityThanItsCaller() throws {
        let caller = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        let value = BackgroundValue(name: "test") { getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) }
        #expect(try value.value() == min(19, caller + BackgroundValue<Int32>.niceness))
        #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == caller, "the caller's thread keeps its priority")
    }
}
