import Foundation
import Glibc

// MARK: - inotifyd

extension DeviceShell {
    /// Toybox's mask letters, in bit order (`toys/other/inotifyd.c`: `"acew0rmyndDM uox"`): bit i of
    /// an inotify mask is letter i. `x` is IN_IGNORED (the watch is gone).
    static let inotifydMaskLetters = Array("acew0rmyndDM uox")

    /// `inotifyd PROG FILE[:MASK]...` as toybox's: with PROG `-`, one line per event on stdout,
    /// `MASK<TAB>FILE` (or `MASK<TAB>DIR<TAB>NAME` for an entry of a watched folder), until killed.
    ///
    /// The simulator looks at the watched paths every 50 ms (sizes, times, inodes of the files
    /// and of each folder's entries) instead of asking the kernel: the device's files are host
    /// files that tests also write directly, and the output, the errors and the lifetime are what
    /// matter to the client. Like toybox it exits when every watch is gone (`x`), prints
    /// `inotifyd: PATH: No such file or directory` and exits 1 for a path that cannot be watched,
    /// and otherwise runs until the client goes away (or, here, the device is unplugged: the
    /// connection is cut as a dying USB link would cut it).
    func inotifyd(_ args: [String], _ io: ShellIO) throws -> Int32 {
        guard args.count >= 2 else {
            try io.err("inotifyd: Need 2 arguments\n")  // toybox's "<2" option string
            return 1
        }
        guard args[0] == "-" else {
            try io.err("inotifyd: running a PROG is not simulated; use '-'\n")
            return 1
        }
        var watches: [InotifydWatch] = []
        for word in args.dropFirst() {
            let (path, maskText) = word.firstIndex(of: ":").map { (String(word[..<$0]), String(word[word.index(after: $0)...])) }
                ?? (word, nil)
            var mask = 0xfff
            if let maskText {
                mask = 0
                for letter in maskText {
                    guard let bit = Self.inotifydMaskLetters.firstIndex(of: letter) else {
                        try io.err("inotifyd: bad mask '\(letter)'\n")
                        return 1
                    }
                    mask |= 1 << bit
                }
            }
            do {
                let resolved = try resolve(path)
                try fs.check(resolved, .read)
                _ = try fs.status(resolved)
                watches.append(InotifydWatch(shown: path, host: resolved.host, mask: mask, isDirectory: fs.isDirectory(resolved)))
            } catch let e as DeviceErrno {
                try io.err("inotifyd: \(path): \(e.text)\n")
                return 1
            }
        }
        for index in watches.indices { watches[index].look() }
        while true {
            if cancelled() || hungUp() { throw ConnectionClosed() }
            // Unplugged: the device's folder moved away. adbd's end of the link is gone.
            if !FileManager.default.fileExists(atPath: device.root.path) { throw ConnectionClosed() }
            usleep(50_000)
            for index in watches.indices where !watches[index].ignored {
                for line in watches[index].changes() { try io.out(line) }
            }
            if watches.allSatisfy(\.ignored) { return 0 }
        }
    }
}

/// One `FILE[:MASK]` of ``DeviceShell/inotifyd(_:_:)``: what it looked like last time.
struct InotifydWatch {
    let shown: String
    let host: String
    let mask: Int
    let isDirectory: Bool
    private(set) var ignored = false
    private var own: [Int]?
    private var entries: [String: [Int]] = [:]

    init(shown: String, host: String, mask: Int, isDirectory: Bool) {
        self.shown = shown
        self.host = host
        self.mask = mask
        self.isDirectory = isDirectory
    }

    private static func signature(_ path: String) -> [Int]? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return [Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec), Int(info.st_ino)]
    }

    mutating func look() {
        own = Self.signature(host)
        entries = [:]
        guard isDirectory, let names = try? FileManager.default.contentsOfDirectory(atPath: host) else { return }
        for name in names { entries[name] = Self.signature(host + "/" + name) }
    }

    /// Bits as in `<sys/inotify.h>`.
    private enum Bit {
        static let modify = 1 << 1, movedFrom = 1 << 6, movedTo = 1 << 7
        static let create = 1 << 8, delete = 1 << 9, deleteSelf = 1 << 10, ignored = 1 << 15
    }

    private func line(_ bits: Int, name: String? = nil) -> String? {
        // IN_IGNORED is always reported; the others only when asked for.
        let shownBits = bits & (mask | Bit.ignored)
        guard shownBits != 0 else { return nil }
        let letters = DeviceShell.inotifydMaskLetters.enumerated().filter { shownBits & (1 << $0.offset) != 0 }.map { String($0.element) }.joined()
        return name.map { "\(letters)\t\(shown)\t\($0)\n" } ?? "\(letters)\t\(shown)\n"
    }

    /// The lines for what changed since the last look.
    mutating func changes() -> [String] {
        let before = own, beforeEntries = entries
        look()
        guard own != nil else {
            ignored = true
            return [line(Bit.deleteSelf), line(Bit.ignored)].compactMap { $0 }
        }
        var lines: [String] = []
        if isDirectory {
            for name in entries.keys.sorted() {
                let now = entries[name]
                switch beforeEntries[name] {
                case nil: lines.append(contentsOf: [line(Bit.create, name: name), line(Bit.modify, name: name)].compactMap { $0 })
                case let old? where old[3] != now?[3]: lines.append(contentsOf: [line(Bit.movedTo, name: name)].compactMap { $0 })
                case let old? where old != now:
                    // An app keeps its database open: a write is a modify, not a close.
                    if let l = line(Bit.modify, name: name) { lines.append(l) }
                default: break
                }
            }
            for name in beforeEntries.keys.sorted() where entries[name] == nil {
                if let l = line(Bit.delete, name: name) { lines.append(l) }
            }
        } else if before != own {
            if let l = line(Bit.modify) { lines.append(l) }
        }
        return lines
    }
}
