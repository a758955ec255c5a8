import Foundation
import Logging

/// One run of toybox's `inotifyd` inside an app's sandbox: the device telling the agent, as it
/// happens, that the app wrote one of its files.
///
/// ```
/// adb -s SERIAL shell 'run-as PKG inotifyd - /data/data/PKG/databases:cwmynd 2>&1'
/// ```
///
/// With `-` as its program, `inotifyd` prints one line per event and runs until killed
/// (`toys/other/inotifyd.c`): the mask letters, a TAB, the watched path, and for an entry of a
/// watched folder a TAB and the entry's name, e.g. `c<TAB>/data/data/PKG/databases<TAB>notes.db-wal`.
/// The letters asked for: `c` modified, `w` closed after writing, `m`/`y` moved in/out,
/// `n` created, `d` deleted.
///
/// Why folders, not files: the folder's events cover the database, its `-wal` and its `-journal`,
/// and the files an app creates later (a `-journal` exists only during a transaction); toybox
/// exits at once (`inotifyd: PATH: No such file or directory`) when one of its FILE arguments
/// does not exist, so watching a `-journal` by name would fail whenever the app is idle.
///
/// Why `2>&1` on the device: `run-as` and `inotifyd` complain on stderr, and reading one stream
/// keeps the child simple; event lines always hold a TAB, complaints never start with mask letters
/// followed by one.
///
/// The child runs in its own process group (as ``DeviceTracker``'s `adb track-devices`), so
/// cancelling the consuming task kills `adb` and whatever it started; adb then closes the device
/// connection and the device-side `inotifyd` exits.
public struct AppChangeStream: Sendable {
    public let adbPath: String
    /// Variables added to the inherited environment (`ANDROID_ADB_SERVER_PORT` works either way).
    public let environment: [String: String]
    public let serial: String
    public let appID: String
    /// The device folders to watch (each followed database's folder, once).
    public let folders: [String]

    /// The mask letters asked for (see the type's documentation).
    static let mask = "cwmynd"

    public init(adbPath: String, environment: [String: String] = [:], serial: String, appID: String, folders: [String]) {
        self.adbPath = adbPath
        self.environment = environment
        self.serial = serial
        self.appID = appID
        self.folders = folders
    }

    /// The device command line.
    var command: String {
        "run-as \(appID) inotifyd - " + DeviceShellQuoting.join(folders.map { "\($0):\(Self.mask)" }) + " 2>&1"
    }

    /// Runs `inotifyd` until it ends, calling `onChange` with the device path of each file that
    /// changed (in the order reported; a burst gives many calls: the receiver settles them).
    ///
    /// Returns when the stream ends (app reinstalled, device unplugged, adb server gone): the
    /// caller starts it again with backoff.
    ///
    /// - throws: ``FlippioError/Code/deviceWatchUnavailable`` when the device has no `inotifyd`
    ///   or refused it (the caller polls instead); `CancellationError` when cancelled. Nothing
    ///   else: other endings are returns.
    public func run(onStarted: @Sendable () -> Void = {}, onChange: @Sendable (String) -> Void) async throws {
        let child = StreamingProcess(executable: adbPath, arguments: ["-s", serial, "shell", command], environment: environment)
        let complaints = try await child.run { output in
            var decoder = Decoder()
            onStarted()
            for try await bytes in output {
                for line in decoder.feed(bytes) {
                    switch line {
                    case .changed(let path): onChange(path)
                    case .complaint: break
                    }
                }
            }
            return decoder.complaints
        }.value
        try Task.checkCancellation()
        if let refusal = Self.refusal(in: complaints) {
            throw FlippioError.deviceWatchUnavailable(serial: serial, appID: appID, detail: refusal)
        }
    }

    /// A complaint that means `inotifyd` cannot work for this app on this device, or nil when
    /// the stream merely ended (device gone, adb killed) and is worth starting again.
    ///
    /// The texts are the device's own: mksh's `inotifyd: inaccessible or not found` (no applet),
    /// run-as's `run-as: exec failed for inotifyd: ...`, and `run-as: package not debuggable` /
    /// `unknown package`, and toybox's `inotifyd: PATH: Permission denied` (SELinux refusing
    /// inotify on app data on some builds).
    static func refusal(in complaints: [String]) -> String? {
        complaints.first { line in
            line.contains("inaccessible or not found") || line.contains("exec failed for inotifyd")
                || line.hasPrefix("run-as:") || (line.hasPrefix("inotifyd:") && !line.contains("No such file or directory"))
        }
    }

    // MARK: - Output

    /// Splits `inotifyd -` output into lines, and lines into changed paths or complaints.
    struct Decoder {
        enum Line: Equatable {
            /// The device path of the file the event is about (`DIR/NAME`, or the watched FILE).
            case changed(String)
            case complaint(String)
        }

        private var pending: [UInt8] = []
        /// The first few non-event lines, for ``AppChangeStream/refusal(in:)``.
        private(set) var complaints: [String] = []

        mutating func feed(_ bytes: [UInt8]) -> [Line] {
            pending += bytes
            var lines: [Line] = []
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let text = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                let line = Self.parse(text)
                if case .complaint(let complaint) = line, complaints.count < 8, !complaint.isEmpty { complaints.append(complaint) }
                lines.append(line)
            }
            // A line with no end in sight is not inotifyd's: keep memory bounded.
            if pending.count > 64 * 1024 { pending.removeAll() }
            return lines
        }

        /// `MASK<TAB>FILE` or `MASK<TAB>DIR<TAB>NAME`, mask letters from toybox's `acew0rmyndDM uox`.
        static func parse(_ text: String) -> Line {
            let fields = text.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 2 || fields.count == 3, !fields[0].isEmpty,
                  fields[0].allSatisfy({ "acew0rmyndDM uox".contains($0) }), !fields[1].isEmpty else {
                return .complaint(text.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            if fields.count == 3 {
                let folder = fields[1].hasSuffix("/") ? String(fields[1].dropLast()) : fields[1]
                return .changed(folder + "/" + fields[2])
            }
            return .changed(fields[1])
        }
    }
}
