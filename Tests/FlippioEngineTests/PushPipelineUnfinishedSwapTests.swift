import Testing
@testable import FlippioEngine

/// iOS swaps in separate AFC calls (remove -wal/-shm, then rename): what an interrupted push of
/// ours looks like on the next attempt, as opposed to a change the app made.
@Suite struct PushPipelineUnfinishedSwapTests {
    let main = String(repeating: "a", count: 64), wal = String(repeating: "b", count: 64)
    let other = String(repeating: "c", count: 64)

    @Test func journalsGoneAroundTheExpectedMainFile_isOurUnfinishedSwap() {
        #expect(PushPipeline.isUnfinishedSwap(DeviceFingerprint(mainHash: main),
                                              expected: DeviceFingerprint(mainHash: main, walHash: wal)))
        #expect(PushPipeline.isUnfinishedSwap(DeviceFingerprint(mainHash: main),
                                              expected: DeviceFingerprint(mainHash: main, journalHash: wal)))
    }

    @Test func anyOtherDifference_isNot() {
        // The app wrote its main file: a real change.
        #expect(!PushPipeline.isUnfinishedSwap(DeviceFingerprint(mainHash: other),
                                               expected: DeviceFingerprint(mainHash: main, walHash: wal)))
        // A new -wal: the app wrote.
        #expect(!PushPipeline.isUnfinishedSwap(DeviceFingerprint(mainHash: main, walHash: other),
                                               expected: DeviceFingerprint(mainHash: main, walHash: wal)))
        // Nothing was removed (there was no journal): equal, not "unfinished".
        #expect(!PushPipeline.isUnfinishedSwap(DeviceFingerprint(mainHash: main), expected: DeviceFingerprint(mainHash: main)))
        // The database is gone.
        #expect(!PushPipeline.isUnfinishedSwap(DeviceFingerprint(mainHash: nil),
                                               expected: DeviceFingerprint(mainHash: nil, walHash: wal)))
    }
}
