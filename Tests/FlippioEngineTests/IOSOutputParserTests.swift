import Foundation
import Testing
@testable import FlippioEngine

/// The parsers and the error mapping, on the real tools' captured output (Fixtures/ios).
@Suite struct IOSOutputParserTests {
    static func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/ios").appendingPathComponent(name))
    }

    static func result(stdout: String = "", stderr: String = "", status: Int32 = 0, timedOut: Bool = false) -> ProcessResult {
        ProcessResult(termination: .exited(status), stdout: Data(stdout.utf8), stderr: Data(stderr.utf8),
                      duration: .milliseconds(5), timedOut: timedOut)
    }

    static func failure(_ result: ProcessResult, _ tool: IOSErrors.Tool = .afcClient) -> FlippioError? {
        IOSErrors.failure(in: result, tool: tool, command: "test", deviceID: "00008030-001A35E22E10802E")
    }

    @Test func udidsFromRealIdeviceIDListing() throws {
        let text = String(decoding: try Self.fixture("idevice_id-1.3.0-list.stdout"), as: UTF8.self)
        #expect(IOSOutputParser.udids(text) == ["00008030-001A35E22E10802E"])
        #expect(IOSOutputParser.udids("A1 (USB)\nB2 (Network)\n--evil\n\nA1\n") == ["A1", "B2"])
    }

    @Test func usbmuxdDownFromRealIdeviceID() throws {
        let stderr = String(decoding: try Self.fixture("idevice_id-1.3.0-usbmuxd-down.stderr"), as: UTF8.self)
        let error = Self.failure(Self.result(stderr: stderr, status: 255), .ideviceID)
        #expect(error?.code == .usbmuxdUnavailable)
        #expect(error?.remedy?.contains("sudo systemctl start usbmuxd") == true)
    }

    @Test func ideviceinfoDeviceNotFoundIsOnStdout() throws {
        let stdout = String(decoding: try Self.fixture("ideviceinfo-1.3.0-device-not-found.stdout"), as: UTF8.self)
        #expect(Self.failure(Self.result(stdout: stdout, status: 255), .ideviceInfo)?.code == .deviceNotFound)
    }

    @Test func lockdownErrorsMapToStatesWithRemedies() throws {
        let mux = String(decoding: try Self.fixture("ideviceinfo-1.3.0-lockdown-mux-error.stderr"), as: UTF8.self)
        #expect(IOSOutputParser.lockdownError(mux)?.code == -8)
        #expect(Self.failure(Self.result(stderr: mux, status: 255), .ideviceInfo)?.code == .connectionReset)

        let locked = Self.failure(Self.result(stderr: "ERROR: Could not connect to lockdownd: Password protected (-17)\n", status: 255))
        #expect(locked?.code == .iosDeviceLocked)
        let pending = Self.failure(Self.result(stderr: "ERROR: Could not connect to lockdownd: Pairing dialog response pending (-19)\n", status: 255))
        #expect(pending?.code == .iosNotPaired)
        #expect(pending?.remedy?.contains("idevicepair pair") == true)
        #expect(IOSOutputParser.lockdownError("ERROR: Could not connect to lockdownd, error code -21\n")?.code == -21)
    }

    @Test func ideviceinstaller111FailuresAreRecognised() throws {
        let noDevice = String(decoding: try Self.fixture("ideviceinstaller-1.1.1-no-device.stderr"), as: UTF8.self)
        #expect(Self.failure(Self.result(stderr: noDevice, status: 255), .ideviceInstaller)?.code == .deviceNotFound)
        let lockdown = String(decoding: try Self.fixture("ideviceinstaller-1.1.1-lockdown.stderr"), as: UTF8.self)
        #expect(Self.failure(Self.result(stderr: lockdown, status: 255), .ideviceInstaller)?.code == .iosNotPaired)
    }

    @Test func appsFromLibplistXML() throws {
        let apps = try IOSOutputParser.apps(fromPropertyList: try Self.fixture("ideviceinstaller-1.1.1-list-xml.stdout"))
        #expect(apps == [
            AppInfo(id: "com.example.Notes", name: "Notes", version: "1.2"),
            AppInfo(id: "org.sample.cards", name: "Ana & Bob's \"Cards\"", version: "3.0.1"),
        ])
        #expect(throws: FlippioError.self) { try IOSOutputParser.apps(fromPropertyList: Data("CFBundleIdentifier, x\n".utf8)) }
    }

    @Test func appsFromBothTextListings() {
        let old = "CFBundleIdentifier, CFBundleVersion, CFBundleDisplayName\ncom.example.Notes, \"42\", \"Notes, the app\"\norg.x.bare, \"org.x.bare\"\n"
        #expect(IOSOutputParser.apps(fromText: old) == [
            AppInfo(id: "com.example.Notes", name: "Notes, the app", version: "42"),
            AppInfo(id: "org.x.bare", name: nil, version: nil),
        ])
        let new = "CFBundleIdentifier, CFBundleShortVersionString, CFBundleDisplayName\ncom.example.Notes, \"1.2\", \"Say \"hi\"\"\n"
        #expect(IOSOutputParser.apps(fromText: new) == [AppInfo(id: "com.example.Notes", name: "Say \"hi\"", version: "1.2")])
        #expect(IOSOutputParser.apps(fromText: "No device found.\n") == nil)
    }

    @Test func afcErrorOnStdoutWithStatusZeroIsAFailure() {
        let missing = Self.failure(Self.result(stdout: "Error: Failed to read from file '/Documents/x.db': Not found (8)\n"))
        #expect(missing?.code == .noSuchFile)
        let progress = Self.failure(Self.result(stdout: "\r12% (3.0 MB/s)   \rError: Failed to write to device file\n"))
        #expect(progress?.code == .connectionReset)
        #expect(Self.failure(Self.result(stdout: "Error: Failed to rename 'a' -> 'b': Permission denied (10)\n"))?.code == .permissionDenied)
        let refused = Self.failure(Self.result(stderr: "ERROR: InstallationLookupFailed\nThe App 'x' is either not present...\n"))
        #expect(refused?.code == .iosContainerRefused)
        #expect(Self.failure(Self.result(stdout: "notes.db\n")) == nil)
        #expect(Self.failure(Self.result(timedOut: true))?.code == .timedOut)
    }

    @Test func longListingIsParsedAndUntrustedNamesDropped() {
        let text = """
            drwxr-xr-x    3 mobile mobile         96 22 May 2024 10:00:00 Application Support
            -rw-r--r--    1 mobile mobile       8192 22 May 2024 10:00:01 my notes.db
            -rw-r--r--    1 mobile mobile          0 22 May 2024 10:00:01 ..

            """
        #expect(IOSOutputParser.longListing(text) == [
            .init(name: "Application Support", kind: .directory, size: 96),
            .init(name: "my notes.db", kind: .file, size: 8192),
        ])
        #expect(IOSOutputParser.longListing("Documents\nLibrary\n") == nil)
        let info = IOSOutputParser.info("{\n  \"st_size\": 8192,\n  \"st_blocks\": 16,\n  \"st_ifmt\": \"S_IFREG\"\n}\n")
        #expect(info?.kind == .file && info?.size == 8192)
    }

    @Test func databaseNamesByExtensionNeverSideFiles() {
        for name in ["a.db", "b.sqlite", "c.SQLITE3", "d.db3", "e.sqlitedb"] { #expect(IOSOutputParser.isDatabaseName(name)) }
        for name in ["a.db-wal", "a.db-shm", "a.db-journal", "db", ".db", "notes.txt"] { #expect(!IOSOutputParser.isDatabaseName(name)) }
    }
}
