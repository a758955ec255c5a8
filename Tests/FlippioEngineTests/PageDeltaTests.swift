import FlippioEngine
import Foundation
import Testing
import TestSupport

@Suite("PageDelta")
struct PageDeltaTests {
    /// Builds the delta base→snapshot, writes the patch, applies it to a copy of base and checks
    /// the copy is byte-identical to the snapshot.
    func roundTrip(base: URL, snapshot: URL, dir: TemporaryDirectory) throws -> PageDelta {
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        let patch = dir.child("patch.bin")
        try delta.writePatch(from: snapshot, to: patch)
        #expect(try Data(contentsOf: patch).count == Int(delta.patchSize))
        let target = dir.child("target-\(UUID().uuidString.prefix(4)).db")
        try FileManager.default.copyItem(at: base, to: target)
        try delta.apply(patch: patch, to: target)
        #expect(try Data(contentsOf: target) == Data(contentsOf: snapshot), "byte-identical to the snapshot")
        // The base takes the same pages in place after a verified delta push.
        let newBase = dir.child("base-\(UUID().uuidString.prefix(4)).db")
        try FileManager.default.copyItem(at: base, to: newBase)
        try delta.writePages(from: snapshot, into: newBase)
        #expect(try Data(contentsOf: newBase) == Data(contentsOf: snapshot), "the base updated in place is the snapshot")
        return delta
    }

    /// A copy of `base` named `name`, changed by `sql` through sqlite3.
    func edited(_ base: URL, _ sql: String, name: String = "snapshot.db") throws -> URL {
        let copy = try MergeFixtures.copy(base, name)
        try Shell.sqlite(copy, sql)
        return copy
    }

    func bigDatabase(_ dir: TemporaryDirectory) throws -> URL {
        try MergeFixtures.blobs(dir.child("base.db"), rows: 2000, bytes: 500)
    }

    @Test func aOneRowEdit_changesAFewPages_andThePatchIsSmall() throws {
        let dir = try TemporaryDirectory("delta")
        let base = try bigDatabase(dir)
        let snapshot = try edited(base, "UPDATE t SET payload = zeroblob(500) WHERE id = 1000;")
        let delta = try roundTrip(base: base, snapshot: snapshot, dir: dir)
        #expect(delta.pageSize == 4096)
        // The header page (change counter) and the row's leaf page.
        #expect(delta.changedPages == 2)
        #expect(delta.runs.first == .init(firstPage: 0, count: 1, patchOffset: 0))
        #expect(delta.runs.last?.patchOffset == 1)
        #expect(delta.isWorthSending())
        #expect(!delta.shrinks)
        #expect(delta.patchSize * 50 < delta.targetSize)
    }

    @Test func growthAndShrink_areHandled() throws {
        let dir = try TemporaryDirectory("delta-size")
        let base = try bigDatabase(dir)
        let grown = try edited(base, "INSERT INTO t SELECT id + 5000, randomblob(500) FROM t WHERE id <= 100;", name: "grown.db")
        let growth = try roundTrip(base: base, snapshot: grown, dir: dir)
        #expect(growth.targetSize > growth.baseSize)

        let shrunk = try edited(base, "DELETE FROM t WHERE id > 100; VACUUM;", name: "shrunk.db")
        let shrink = try roundTrip(base: base, snapshot: shrunk, dir: dir)
        #expect(shrink.shrinks)
        #expect(shrink.targetSize < shrink.baseSize / 4)
    }

    /// The comparison reads both files 4 MiB (1,024 pages) at a time: changes on either side of a
    /// read's boundary, in the short last read, and pages past the base's end are all found.
    @Test func changesAtReadBoundariesAndPastTheBasesEnd_areAllFound() throws {
        let dir = try TemporaryDirectory("delta-boundaries")
        let base = try MergeFixtures.blobs(dir.child("base.db"), rows: 2600, bytes: 4000)
        var bytes = try Data(contentsOf: base)
        let pageSize = 4096
        let pages = bytes.count / pageSize
        #expect(pages > 2_100 && pages % 1_024 != 0)
        let touched = [1_023, 1_024, 2_047, 2_048, pages - 1]
        for page in touched { bytes[page * pageSize + 100] ^= 0xFF }
        bytes.append(Data(repeating: 7, count: 2 * pageSize))  // two pages the base does not have
        let snapshot = dir.child("snapshot.db")
        try bytes.write(to: snapshot)

        let delta = try roundTrip(base: base, snapshot: snapshot, dir: dir)
        let changed = delta.runs.flatMap { $0.firstPage..<($0.firstPage + $0.count) }
        #expect(changed == [0] + touched + [pages, pages + 1])
        #expect(delta.targetSize == Int64(bytes.count))
    }

    @Test func aVacuumedCopy_isNotWorthADelta() throws {
        let dir = try TemporaryDirectory("delta-vacuum")
        let base = try bigDatabase(dir)
        try Shell.sqlite(base, "DELETE FROM t WHERE id % 2 = 0;")
        let snapshot = try edited(base, "VACUUM;")
        let delta = try roundTrip(base: base, snapshot: snapshot, dir: dir)
        #expect(!delta.isWorthSending())
    }

    @Test func aPageSizeChange_sendsEveryPage() throws {
        let dir = try TemporaryDirectory("delta-pagesize")
        let base = try bigDatabase(dir)
        let snapshot = try edited(base, "PRAGMA page_size = 8192; VACUUM;")
        let delta = try roundTrip(base: base, snapshot: snapshot, dir: dir)
        #expect(delta.pageSizeChanged)
        #expect(delta.pageSize == 8192)
        #expect(delta.runs == [.init(firstPage: 0, count: Int(delta.targetSize) / 8192, patchOffset: 0)])
        #expect(!delta.isWorthSending())
    }

    @Test func aDeviceCopyReopenedInWALMode_takesThePatch_andEndsIdenticalToTheSnapshot() throws {
        let dir = try TemporaryDirectory("delta-wal")
        let base = try bigDatabase(dir)
        let device = try edited(base, "PRAGMA journal_mode=WAL; SELECT count(*) FROM t;", name: "device.db")
        #expect(try ContentIdentity.hash(ofDatabaseAt: device) == ContentIdentity.hash(ofDatabaseAt: base))
        let snapshot = try edited(base, "PRAGMA journal_mode=WAL; UPDATE t SET payload = zeroblob(500) WHERE id = 1500;")
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        #expect(delta.runs.first?.firstPage == 0)
        let patch = dir.child("patch.bin")
        try delta.writePatch(from: snapshot, to: patch)
        try delta.apply(patch: patch, to: device)
        #expect(try Data(contentsOf: device) == Data(contentsOf: snapshot))
    }

    @Test func identicalFiles_giveAnEmptyPatch() throws {
        let dir = try TemporaryDirectory("delta-same")
        let base = try bigDatabase(dir)
        let snapshot = try MergeFixtures.copy(base, "snapshot.db")
        let delta = try roundTrip(base: base, snapshot: snapshot, dir: dir)
        #expect(delta.runs.isEmpty)
        #expect(delta.patchSize == 0)
    }

    @Test func aShortPatch_isRefused() throws {
        let dir = try TemporaryDirectory("delta-short")
        let base = try bigDatabase(dir)
        let snapshot = try edited(base, "UPDATE t SET payload = zeroblob(500) WHERE id = 10;")
        let delta = try PageDelta.between(base: base, snapshot: snapshot)
        let patch = dir.child("patch.bin")
        try Data(count: 100).write(to: patch)
        let error = try #require(throws: FlippioError.self) { try delta.apply(patch: patch, to: try MergeFixtures.copy(base, "t.db")) }
        #expect(error.code == .verificationFailed)
    }

    @Test func theBaseTakesADeltaInPlace_orAdoptsTheSnapshotWhenItIsNotTheDeltasBase() throws {
        let dir = try TemporaryDirectory("delta")
        let workspace = Workspace(root: dir.child("ws"))
        let remote = RemoteDatabase(platform: .android, deviceID: "emulator-5554", appID: "com.example.notes",
                                    path: "/data/data/com.example.notes/databases/notes.db", access: .runAs)
        let bases = BaseStore(workspace: workspace)
        let original = try bigDatabase(dir)
        try bases.save(original, for: remote)
        let snapshot = try edited(original, "UPDATE t SET payload = zeroblob(500) WHERE id = 7; DELETE FROM t WHERE id > 1900;")
        let delta = try PageDelta.between(base: bases.url(for: remote), snapshot: snapshot)
        #expect(delta.changedPages < 20)

        try bases.update(with: delta, from: snapshot, for: remote)
        #expect(try Data(contentsOf: bases.url(for: remote)) == Data(contentsOf: snapshot))
        #expect(FileManager.default.fileExists(atPath: snapshot.path), "in place: the snapshot is not consumed")

        // A base that is not the one the delta was computed against (another size, here cut
        // short as by a crash): the snapshot itself becomes the base, as after a whole-file push.
        let next = try edited(snapshot, "INSERT INTO t(payload) SELECT randomblob(500) FROM generate_series(1, 300);", name: "next.db")
        let stale = try PageDelta.between(base: bases.url(for: remote), snapshot: next)
        #expect(truncate(bases.url(for: remote).path, 4096) == 0)
        let expected = try Data(contentsOf: next)
        try bases.update(with: stale, from: next, for: remote)
        #expect(try Data(contentsOf: bases.url(for: remote)) == expected)
        #expect(!FileManager.default.fileExists(atPath: next.path), "adopted: renamed into place")
    }
}
