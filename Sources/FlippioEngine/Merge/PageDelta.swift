import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The pages of a snapshot that differ from the base: what a delta push sends.
///
/// Both files are page-for-page copies (the base the device holds, the snapshot to push); they
/// are compared page by page, with the page size from the snapshot's header. The patch file is
/// the changed pages concatenated, run after run, so the device side writes each run with one
///
/// ```sh
/// dd if=PATCH of=TARGET bs=PAGESIZE skip=RUN.patchOffset seek=RUN.firstPage count=RUN.count conv=notrunc
/// ```
///
/// then `truncate -s TARGETSIZE TARGET` when the file shrank. For example:
///
/// ```swift
/// let delta = try PageDelta.between(base: baseCopy, snapshot: snapshot)
/// if delta.isWorthSending() {
///     try delta.writePatch(from: snapshot, to: patchFile)
///     // push patchFile, run delta.runs as dd commands, check the SHA-256
/// }
/// ```
///
/// A page-size change makes every page changed (a full push). Pages are numbered from 0 (page 0
/// holds the header), as `dd seek=` counts blocks. A non-empty patch always carries page 0, so
/// the precondition on the device side is `ContentIdentity.hash(ofDatabaseAt: device) ==
/// ContentIdentity.hash(ofDatabaseAt: base)` (equal pages, header bytes SQLite rewrites aside);
/// the result has the snapshot's header, journal-mode bytes included.
public struct PageDelta: Sendable, Equatable, Codable {
    /// Consecutive changed pages.
    public struct Run: Sendable, Equatable, Codable {
        /// The first page of the run in the target file (0-based).
        public let firstPage: Int
        /// How many pages.
        public let count: Int
        /// Where the run starts in the patch file, in pages (`dd skip=`).
        public let patchOffset: Int

        public init(firstPage: Int, count: Int, patchOffset: Int) {
            self.firstPage = firstPage
            self.count = count
            self.patchOffset = patchOffset
        }
    }

    public let pageSize: Int
    public let runs: [Run]
    /// The snapshot's size in bytes: the size the target must have afterwards.
    public let targetSize: Int64
    /// The base's size in bytes.
    public let baseSize: Int64
    /// Whether the page size differs between base and snapshot (every page is in the patch).
    public let pageSizeChanged: Bool

    /// Pages in the patch.
    public var changedPages: Int { runs.reduce(0) { $0 + $1.count } }

    /// The patch file's size in bytes (the last page of a file may be short).
    public var patchSize: Int64 {
        runs.reduce(0) { $0 + byteCount($1) }
    }

    /// Whether the target must be truncated after the runs are written.
    public var shrinks: Bool { targetSize < baseSize }

    /// Whether sending the patch is worth it: smaller than `threshold` of the snapshot (the
    /// default: half) and the page size unchanged.
    public func isWorthSending(threshold: Double = 0.5) -> Bool {
        !pageSizeChanged && Double(patchSize) < Double(targetSize) * threshold
    }

    /// Compares `base` and `snapshot` page by page.
    ///
    /// - throws: ``FlippioError/Code/notSQLite`` or ``FlippioError/Code/databaseMissing`` for
    ///   either file.
    /// - Important: pass the base copy and a snapshot, never the live file (see ``ContentHash``).
    public static func between(base: URL, snapshot: URL) throws -> PageDelta {
        let pageSize = try SQLiteHeader.read(fileAt: snapshot).pageSize
        let basePageSize = try SQLiteHeader.read(fileAt: base).pageSize
        let baseSize = try ContentIdentity.fileSize(base)
        let targetSize = try ContentIdentity.fileSize(snapshot)
        let pageCount = Int((targetSize + Int64(pageSize) - 1) / Int64(pageSize))
        guard basePageSize == pageSize else {
            return PageDelta(changedPages: Array(0..<pageCount), pageSize: pageSize, targetSize: targetSize,
                             baseSize: baseSize, pageSizeChanged: true)
        }
        let changed = try changedPages(base: base, snapshot: snapshot, pageSize: pageSize, pageCount: pageCount)
        return PageDelta(changedPages: changed, pageSize: pageSize, targetSize: targetSize, baseSize: baseSize, pageSizeChanged: false)
    }

    public init(pageSize: Int, runs: [Run], targetSize: Int64, baseSize: Int64, pageSizeChanged: Bool) {
        self.pageSize = pageSize
        self.runs = runs
        self.targetSize = targetSize
        self.baseSize = baseSize
        self.pageSizeChanged = pageSizeChanged
    }

    /// The delta of a snapshot whose pages were compared with the base while it was written
    /// (``Comparison``), without reading either file again.
    public init(_ comparison: Comparison, targetSize: Int64) {
        self.init(changedPages: comparison.changedPages, pageSize: comparison.pageSize, targetSize: targetSize,
                  baseSize: comparison.baseSize, pageSizeChanged: false)
    }

    /// Groups `changedPages` (ascending) into runs.
    private init(changedPages: [Int], pageSize: Int, targetSize: Int64, baseSize: Int64, pageSizeChanged: Bool) {
        var changed = changedPages
        // Page 0 goes with every non-empty patch (it changes with every commit anyway: the
        // change counter): the target's header is then the snapshot's whatever it was, so a
        // device copy that differs from the base only in volatile header bytes (an app that
        // reopened it in WAL mode) takes the patch safely.
        if let first = changed.first, first != 0 { changed.insert(0, at: 0) }

        var runs: [Run] = []
        var patchOffset = 0
        for page in changed {
            if let last = runs.last, last.firstPage + last.count == page {
                runs[runs.count - 1] = Run(firstPage: last.firstPage, count: last.count + 1, patchOffset: last.patchOffset)
            } else {
                runs.append(Run(firstPage: page, count: 1, patchOffset: patchOffset))
            }
            patchOffset += 1
        }
        self.init(pageSize: pageSize, runs: runs, targetSize: targetSize, baseSize: baseSize, pageSizeChanged: pageSizeChanged)
    }

    /// The pages of `snapshot` that differ from `base` (a page past the base's end differs).
    static func changedPages(base: URL, snapshot: URL, pageSize: Int, pageCount: Int) throws -> [Int] {
        let comparer = try Comparer(base: base, pageSize: pageSize)
        let snapshotFD = try openForReading(snapshot)
        defer { close(snapshotFD) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Comparer.bytesPerRead(pageSize), alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < Int64(pageCount) * Int64(pageSize) {
            let count = try readFully(snapshotFD, into: buffer.baseAddress!, count: buffer.count, at: off_t(offset), path: snapshot.path)
            if count == 0 { break }
            try comparer.compare(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), at: offset)
            offset += Int64(count)
        }
        return comparer.result.changedPages
    }

    /// Which pages of a file differ from the base, found while it was written.
    public struct Comparison: Sendable, Equatable {
        /// The base compared with.
        public var base: URL
        public var pageSize: Int
        /// The base's size in bytes when compared.
        public var baseSize: Int64
        /// The pages that differ (0-based, ascending); a page past the base's end differs.
        public var changedPages: [Int]
    }

    /// Compares a file with the base chunk by chunk, as the file is read or written.
    ///
    /// The base is read with `pread` into one buffer allocated once and compared page by page
    /// with `memcmp`: at 200 MB this is one read from the page cache, well under the time of one
    /// SHA-256 pass (through `FileHandle` and a `Data` per read it was 4×).
    final class Comparer {
        let base: URL
        let pageSize: Int
        let baseSize: Int64
        private let fd: Int32
        private let buffer: UnsafeMutableRawBufferPointer
        private var changed: [Int] = []

        /// How much to compare at a time: 4 MiB, whole pages.
        static func bytesPerRead(_ pageSize: Int) -> Int { max(1, (4 << 20) / pageSize) * pageSize }

        /// - throws: ``FlippioError/Code/databaseMissing`` when the base cannot be read.
        init(base: URL, pageSize: Int) throws {
            self.base = base
            self.pageSize = pageSize
            fd = try openForReading(base)
            var info = stat()
            baseSize = fstat(fd, &info) == 0 ? Int64(info.st_size) : 0
            buffer = .allocate(byteCount: Self.bytesPerRead(pageSize), alignment: 4096)
        }

        /// Compares `chunk`, the file's bytes at `offset` (a multiple of the page size; whole pages
        /// but for the file's last), with the base's, a read at a time.
        func compare(_ chunk: UnsafeRawBufferPointer, at offset: Int64) throws {
            var done = 0
            while done < chunk.count {
                let count = min(chunk.count - done, buffer.count)
                let at = offset + Int64(done)
                let baseBytes = try readFully(fd, into: buffer.baseAddress!, count: count, at: off_t(at), path: base.path)
                var start = 0
                while start < count {
                    let end = min(start + pageSize, count)
                    if end > baseBytes || memcmp(chunk.baseAddress! + done + start, buffer.baseAddress! + start, end - start) != 0 {
                        changed.append(Int(at / Int64(pageSize)) + start / pageSize)
                    }
                    start = end
                }
                done += count
            }
        }

        var result: Comparison {
            Comparison(base: base, pageSize: pageSize, baseSize: baseSize, changedPages: changed)
        }

        deinit {
            _ = Glibc.close(fd)
            buffer.deallocate()
        }
    }

    fileprivate static func openForReading(_ url: URL) throws -> Int32 {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw unreadable(url.path, errno: errno) }
        return fd
    }

    private static func unreadable(_ path: String, errno code: Int32) -> FlippioError {
        FlippioError(.databaseMissing, "Could not read \(path): \(String(cString: strerror(code))).",
                     remedy: "Pull the database again.", context: ["path": path])
    }

    /// Reads up to `count` bytes at `offset`, fewer only at the end of the file.
    fileprivate static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, at offset: off_t,
                                      path: String) throws -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, offset + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw unreadable(path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes the patch: the snapshot's changed pages, run after run, to `patch` (replaced).
    ///
    /// - throws: ``FlippioError/Code/workspaceWriteFailed``; ``FlippioError/Code/verificationFailed``
    ///   when the snapshot is shorter than when the delta was computed.
    public func writePatch(from snapshot: URL, to patch: URL) throws {
        let source = try ContentIdentity.open(snapshot)
        defer { try? source.close() }
        guard FileManager.default.createFile(atPath: patch.path, contents: nil),
              let output = try? FileHandle(forWritingTo: patch)
        else { throw FlippioError.workspaceWriteFailed(path: patch.path, errno: errno == 0 ? EIO : errno) }
        defer { try? output.close() }
        try copyRuns(from: source, page: \.firstPage, to: output, page: nil, path: patch.path) {
            FlippioError(.verificationFailed, "\(snapshot.path) changed while its page delta was written.",
                         remedy: "Take a new snapshot; the agent retries.", context: ["path": snapshot.path])
        }
    }

    /// Writes the patch into `file` in place, as the device side does with `dd … conv=notrunc`
    /// and `truncate`: afterwards `file` (a copy of the base) is byte-identical to the snapshot.
    ///
    /// - throws: ``FlippioError/Code/verificationFailed`` when the patch is shorter than the runs
    ///   say; ``FlippioError/Code/workspaceWriteFailed``.
    public func apply(patch: URL, to file: URL) throws {
        let input = try ContentIdentity.open(patch)
        defer { try? input.close() }
        guard let output = try? FileHandle(forUpdating: file) else {
            throw FlippioError.workspaceWriteFailed(path: file.path, errno: ENOENT)
        }
        defer { try? output.close() }
        try copyRuns(from: input, page: \.patchOffset, to: output, page: \.firstPage, path: file.path) {
            FlippioError(.verificationFailed, "The patch \(patch.path) is shorter than its runs.",
                         remedy: "Push the whole file instead.", context: ["path": patch.path])
        }
    }

    /// Writes the changed pages from `snapshot` into `file` (a copy of the base) in place, and
    /// sets its size: afterwards `file` is byte-identical to the snapshot. Not synced.
    ///
    /// - throws: ``FlippioError/Code/verificationFailed`` when the snapshot is shorter than the
    ///   runs say; ``FlippioError/Code/workspaceWriteFailed``.
    public func writePages(from snapshot: URL, into file: URL) throws {
        let input = try ContentIdentity.open(snapshot)
        defer { try? input.close() }
        guard let output = try? FileHandle(forUpdating: file) else {
            throw FlippioError.workspaceWriteFailed(path: file.path, errno: ENOENT)
        }
        defer { try? output.close() }
        try copyRuns(from: input, page: \.firstPage, to: output, page: \.firstPage, path: file.path, sync: false) {
            FlippioError(.verificationFailed, "\(snapshot.path) is shorter than its page delta.",
                         remedy: "Push the whole file instead.", context: ["path": snapshot.path])
        }
    }

    /// Bytes in `run` (the file's last page may be short).
    private func byteCount(_ run: Run) -> Int64 {
        min(Int64(run.count) * Int64(pageSize), targetSize - Int64(run.firstPage) * Int64(pageSize))
    }

    /// Copies each run from `input` at page `inputPage` to `output` at page `outputPage` (appended
    /// when nil); then sets `output`'s size to ``targetSize`` when writing in place, and syncs
    /// unless told not to.
    private func copyRuns(from input: FileHandle, page inputPage: KeyPath<Run, Int>,
                          to output: FileHandle, page outputPage: KeyPath<Run, Int>?,
                          path: String, sync: Bool = true, short: () -> FlippioError) throws {
        do {
            for run in runs {
                try input.seek(toOffset: UInt64(run[keyPath: inputPage]) * UInt64(pageSize))
                let bytes = try input.read(upToCount: Int(byteCount(run))) ?? Data()
                guard bytes.count == byteCount(run) else { throw short() }
                if let outputPage { try output.seek(toOffset: UInt64(run[keyPath: outputPage]) * UInt64(pageSize)) }
                try output.write(contentsOf: bytes)
            }
            if outputPage != nil { try output.truncate(atOffset: UInt64(targetSize)) }
            if sync { try output.synchronize() }
        } catch let error as FlippioError {
            throw error
        } catch {
            throw FlippioError.workspaceWriteFailed(path: path, errno: EIO)
        }
    }
}
