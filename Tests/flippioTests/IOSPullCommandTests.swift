import FlippioEngine
import Foundation
import Testing
import TestSupport

/// `flippio devices`, `apps`, `dbs` and `pull` for an iPhone made of the libimobiledevice
/// stand-ins, through the same CLI and engine paths as Android; each device-side failure gives
/// its message and its fix on stderr.
@Suite("iOS: listing and pulling", .serialized)
struct IOSPullCommandTests {
    static let locked = "00008101-000A1B2C3D4E5F60"
    static let untrusted = "00008110-0011223344556677"

    // MARK: - Listing

    @Test func devicesListsReadyLockedAndUntrustedIPhonesWithTheFix() throws {
        let scenario = try IOSScenario.make(pull: false)
        try scenario.ios.addDevice(udid: Self.locked, name: "Locked One", state: .locked)
        try scenario.ios.addDevice(udid: Self.untrusted, name: "New Phone", state: .unpaired)

        let text = try scenario.flippio(["devices"])
        #expect(text.status == 0, "\(text.err)")
        let line = text.out.split(separator: "\n").first { $0.hasPrefix(IOSScenario.udid) }.map(String.init) ?? ""
        #expect(line.contains("ios") && line.contains("Ana's iPhone") && line.contains("17.5"), "\(text.out)")
        #expect(text.out.contains(Self.locked) && text.out.contains("locked"))
        #expect(text.out.contains(Self.untrusted) && text.out.contains("not-trusted"))
        #expect(text.err.contains("\(Self.locked): locked: Unlock the device"), "\(text.err)")
        #expect(text.err.contains("\(Self.untrusted): not-trusted:") && text.err.contains("pair it: `idevicepair pair`"), "\(text.err)")

        let json = try scenario.flippio(["devices", "--json"])
        let devices = try JSONDocument.decode([Device].self, "devices", from: json.stdout)
        let byID = Dictionary(uniqueKeysWithValues: devices.map { ($0.id, $0) })
        #expect(Set(byID.keys) == [IOSScenario.udid, Self.locked, Self.untrusted], "the emulated Android side has no device")
        #expect(byID[IOSScenario.udid]?.platform == .ios)
        #expect(byID[IOSScenario.udid]?.state == .ready)
        #expect(byID[Self.locked]?.state == .locked)
        #expect(byID[Self.untrusted]?.state == .notTrusted)
        #expect(byID[Self.untrusted]?.remedy?.contains("idevicepair pair") == true)
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func appsAndDbsOfADevelopmentSignedApp(_ backend: IOSStandInBackend) throws {
        let scenario = try make(backend, pull: false)
        let library = scenario.device.container(IOSScenario.bundle).appendingPathComponent("Library/Application Support/cache.sqlite")
        try Shell.sqlite(library, "CREATE TABLE cache(k TEXT)")
        try scenario.ios.addDevice(udid: Self.locked, state: .locked)  // another device, not in the way

        let apps = try scenario.flippio(["apps", "00008030", "--json"])  // a unique prefix names the device
        #expect(apps.status == 0, "\(apps.err)")
        let listed = try JSONDocument.decode([AppInfo].self, "apps", from: apps.stdout)
        #expect(listed.map(\.id) == [IOSScenario.bundle])
        #expect(listed.first?.name == "Notes")

        let dbs = try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle, "--json"])
        #expect(dbs.status == 0, "\(dbs.err)")
        let databases = try JSONDocument.decode([RemoteDatabase].self, "databases", from: dbs.stdout)
        #expect(databases.map(\.path) == ["/Documents/notes.db", "/Library/Application Support/cache.sqlite"])
        #expect(databases.allSatisfy { $0.platform == .ios && $0.access == .container && $0.deviceID == IOSScenario.udid })
        #expect(scenario.ios.activeMounts().isEmpty, "a one-shot command leaves no mount behind")
    }

    /// Tool discovery finds the stand-ins first on PATH and checks each with `--version`, as it
    /// would the real tools; they answer it even without their devices folder.
    @Test func toolDiscoveryFindsTheStandInsAsItWouldTheRealTools() throws {
        let scenario = try IOSScenario.make(pull: false)
        let doctor = try scenario.flippio(["doctor", "--json"])
        let report = try JSONDecoder().decode(Engine.DoctorReport.self, from: doctor.stdout)
        let versions = Dictionary(uniqueKeysWithValues: report.tools.map { ($0.tool, $0) })
        #expect(versions[.ideviceID]?.version == "1.3.0")
        #expect(versions[.ideviceinfo]?.version == "1.3.0")
        #expect(versions[.ideviceinstaller]?.version == "1.1.1")
        #expect(versions[.afcclient]?.version == "1.3.1")
        for tool in [Tool.ideviceID, .ideviceinfo, .ideviceinstaller, .afcclient] {
            #expect(versions[tool]?.path == scenario.ios.tool(tool.rawValue).path)
            #expect(versions[tool]?.problem == nil)
        }
        #expect(report.devices.contains { $0.id == IOSScenario.udid && $0.platform == .ios && $0.state == .ready })

        for name in IOSStandIns.toolNames {
            // ifuse prints its version on stderr, fusermount answers -V.
            let bare = try Shell.run(scenario.ios.tool(name), [name == "fusermount" ? "-V" : "--version"],
                                     environment: ["FLIPPIO_IOS_SIM_DIR": ""])
            #expect(bare.status == 0 && (bare.out + bare.err).hasPrefix(name + " "), "\(name): \(bare.out)\(bare.err)")
        }
    }

    /// A scenario whose flippio finds `backend`; the ifuse case is cancelled (skipped) with the
    /// reason where the stand-in cannot mount.
    func make(_ backend: IOSStandInBackend, app: IOSStandInApp = IOSStandInApp(name: "Notes"), journalMode: String = "delete",
              pull: Bool = true) throws -> IOSScenario {
        if let reason = backend.unavailableReason { try Test.cancel(Comment(rawValue: reason)) }
        return try IOSScenario.make(app: app, journalMode: journalMode, pull: pull, backend: backend)
    }

    @Test func doctorSaysWhichFileBackendIsInUseAndWhatToInstallWithout() throws {
        let scenario = try IOSScenario.make(pull: false, backend: .ifuse)
        let doctor = try scenario.flippio(["doctor", "--json"])
        let report = try JSONDecoder().decode(Engine.DoctorReport.self, from: doctor.stdout)
        let files = try #require(report.checks.first { $0.name == "iOS files" })
        #expect(files.ok && files.detail.hasPrefix("ifuse (") && files.detail.contains("1.1.3"), "\(files)")

        try scenario.ios.removeTool("ifuse")
        let without = try scenario.flippio(["doctor", "--json"])
        let none = try #require(try JSONDecoder().decode(Engine.DoctorReport.self, from: without.stdout).checks.first { $0.name == "iOS files" })
        #expect(!none.ok)
        #expect(none.fix?.contains("sudo apt install ifuse") == true, "\(none)")
        #expect(none.fix?.contains("1.3.0 does not contain it") == true, "names why libimobiledevice-utils is not the answer")
    }

    // MARK: - Pulling

    @Test(arguments: IOSStandInBackend.allCases)
    func pullingAWALDatabaseWhoseNewestRowsAreOnlyInTheWALKeepsThem(_ backend: IOSStandInBackend) async throws {
        let scenario = try make(backend, journalMode: "wal", pull: false)
        let app = try SQLiteSession(scenario.deviceDatabase)
        defer { app.kill() }
        try await app.execute("PRAGMA wal_autocheckpoint=0; INSERT INTO notes(title) VALUES ('only in the wal');")
        let wal = URL(fileURLWithPath: scenario.deviceDatabase.path + "-wal")
        #expect(try !Data(contentsOf: scenario.deviceDatabase).contains(Data("only in the wal".utf8)))

        try scenario.pull()
        #expect(try scenario.localTitles() == ["one", "two", "three", "only in the wal"])
        for suffix in ["-wal", "-shm", "-journal"] {
            #expect(!FileManager.default.fileExists(atPath: scenario.localCopy.path + suffix), "folded into one file")
        }
        let sidecar = try SidecarStore.load(forDatabase: scenario.localCopy)
        #expect(sidecar.origin.platform == .ios)
        #expect(sidecar.origin.deviceID == IOSScenario.udid)
        #expect(sidecar.origin.deviceModel == "Ana's iPhone")
        #expect(sidecar.origin.appID == IOSScenario.bundle)
        #expect(sidecar.origin.remotePath == IOSScenario.remotePath)
        #expect(sidecar.origin.access == .container)
        #expect(sidecar.fingerprintAtPull.mainHash == (try ContentHash.sha256(fileAt: scenario.deviceDatabase)))
        #expect(sidecar.fingerprintAtPull.walHash == (try ContentHash.sha256(fileAt: wal)))
        #expect(sidecar.state == .clean)
        #expect(try scenario.uploadCount() == 0, "a pull writes nothing to the device")
    }

    /// The UDID is the device's folder in the workspace: both real formats (the 25-character one of
    /// A12 and later, the 40-hex one of older iPhones) are accepted as they are.
    @Test(arguments: ["00008030-001A2C3E0A38802E", "3d0d7e5fb2ce288813306e4d4636395e047a3d28"])
    func realUDIDFormatsNameTheDevicesFolderInTheWorkspace(udid: String) throws {
        let scenario = try IOSScenario.make(udid: udid)
        let expected = scenario.harness.workspace.appendingPathComponent(udid)
            .appendingPathComponent(IOSScenario.bundle).appendingPathComponent("Documents/notes.db")
        #expect(scenario.localCopy.path == expected.path)
        #expect(try scenario.localTitles() == ["one", "two", "three"])
        #expect(try SidecarStore.load(forDatabase: expected).origin.deviceID == udid)
        let status = try scenario.flippio(["status"])
        #expect(status.out.contains(udid) || status.out.contains("notes.db"), "\(status.out)")
    }

    @Test(arguments: IOSStandInBackend.allCases)
    func anAppWhoseContainerIsRefusedIsReachedThroughItsDocuments(_ backend: IOSStandInBackend) throws {
        // An App Store build with UIFileSharingEnabled: house_arrest vends only Documents.
        let scenario = try make(backend, app: IOSStandInApp(name: "Notes", container: false, documents: true), pull: false)
        let dbs = try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle, "--json"])
        #expect(dbs.status == 0, "\(dbs.err)")
        let databases = try JSONDocument.decode([RemoteDatabase].self, "databases", from: dbs.stdout)
        #expect(databases.map(\.path) == [IOSScenario.remotePath])
        #expect(databases.first?.access == .documents)
        try scenario.pull()
        #expect(try scenario.localTitles() == ["one", "two", "three"])
        #expect(try SidecarStore.load(forDatabase: scenario.localCopy).origin.access == .documents)
    }

    // MARK: - Errors

    @Test func aLockedOrUntrustedIPhoneNamesTheFix() throws {
        let scenario = try IOSScenario.make(pull: false)
        try scenario.ios.addDevice(udid: Self.locked, apps: [IOSScenario.bundle: .init()], state: .locked)
        try scenario.ios.addDevice(udid: Self.untrusted, apps: [IOSScenario.bundle: .init()], state: .unpaired)

        let locked = try scenario.flippio(["dbs", Self.locked, IOSScenario.bundle])
        #expect(locked.status == 1)
        #expect(locked.err.contains("is locked"), "\(locked.err)")
        #expect(locked.err.contains("fix: Unlock the device"), "\(locked.err)")

        let untrusted = try scenario.flippio(["pull", Self.untrusted, IOSScenario.bundle])
        #expect(untrusted.status == 1)
        #expect(untrusted.err.contains("does not trust this computer"), "\(untrusted.err)")
        #expect(untrusted.err.contains("fix: pair it: `idevicepair pair`"), "\(untrusted.err)")

        // The device locks between the listing and the file access: afcclient's own refusal.
        try scenario.device.setFaults(IOSStandInFaults(failNext: 1, failMessage: "ERROR: Could not connect to lockdownd: Password protected (-17)\n",
                                                       failTool: "afcclient", failStream: "stderr"))
        let lockedLate = try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle], environment: ["FLIPPIO_RETRY_ATTEMPTS": "1"])
        #expect(lockedLate.status == 1)
        #expect(lockedLate.err.contains("locked") && lockedLate.err.contains("fix: Unlock"), "\(lockedLate.err)")
    }

    @Test func anAppThatIsNotDevelopmentSignedNamesTheFix() throws {
        let scenario = try IOSScenario.make(app: IOSStandInApp(name: "Notes", container: false, documents: false), pull: false)
        let dbs = try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle])
        #expect(dbs.status == 1)
        #expect(dbs.err.contains("refused access to the files of \(IOSScenario.bundle)"), "\(dbs.err)")
        #expect(dbs.err.contains("fix: Install a development-signed build"), "\(dbs.err)")
        #expect(dbs.err.contains("UIFileSharingEnabled") && dbs.err.contains("--documents"), "\(dbs.err)")
        let pull = try scenario.flippio(["pull", IOSScenario.udid, IOSScenario.bundle])
        #expect(pull.status == 1)
        #expect(pull.err.contains("fix: Install a development-signed build"), "\(pull.err)")
    }

    @Test func usbmuxdNotRunningIsReportedWithHowToStartIt() throws {
        let scenario = try IOSScenario.make(pull: false)
        try scenario.ios.setUsbmuxdDown(true)
        let fast = ["FLIPPIO_RETRY_ATTEMPTS": "1"]

        let devices = try scenario.flippio(["devices"], environment: fast)
        #expect(devices.status == 1, "no device at all, and a problem: a failure")
        #expect(devices.err.contains("error: usbmuxd is not running"), "\(devices.err)")
        #expect(devices.err.contains("fix: start it: `sudo systemctl start usbmuxd`"), "\(devices.err)")

        let dbs = try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle], environment: fast)
        #expect(dbs.status == 1)
        #expect(dbs.err.contains("usbmuxd is not running"), "\(dbs.err)")
        #expect(dbs.err.contains("fix: start it: `sudo systemctl start usbmuxd`"), "\(dbs.err)")

        try scenario.ios.setUsbmuxdDown(false)
        #expect(try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle]).status == 0)
    }

    @Test func aMissingToolNamesItsDebianPackage() throws {
        let scenario = try IOSScenario.make(pull: false)
        try scenario.ios.removeTool("ideviceinstaller")
        let apps = try scenario.flippio(["apps", IOSScenario.udid])
        #expect(apps.status == 1)
        #expect(apps.err.contains("`ideviceinstaller` was not found"), "\(apps.err)")
        #expect(apps.err.contains("fix: Install it: `sudo apt install ideviceinstaller`"), "\(apps.err)")

        // Neither file backend: the fix names the package that really has one on Debian 12 (ifuse),
        // and says why libimobiledevice-utils is not it there.
        for tool in ["afcclient", "ifuse", "fusermount"] { try scenario.ios.removeTool(tool) }
        let dbs = try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle])
        #expect(dbs.status == 1)
        #expect(dbs.err.contains("`afcclient` was not found"), "\(dbs.err)")
        #expect(dbs.err.contains("fix:") && dbs.err.contains("sudo apt install ifuse"), "\(dbs.err)")
        #expect(dbs.err.contains("libimobiledevice-utils 1.3.0 does not contain it"), "\(dbs.err)")

        // Without idevice_id no iOS device can be listed: `doctor` names the package.
        try scenario.ios.removeTool("idevice_id")
        let doctor = try scenario.flippio(["doctor"])
        #expect(doctor.out.contains("libimobiledevice-utils") || doctor.err.contains("libimobiledevice-utils"), "\(doctor.out)\n\(doctor.err)")
    }

    @Test func aHungToolIsKilledAtItsTimeoutWithItsProcessGroup() async throws {
        let scenario = try IOSScenario.make(pull: false)
        try scenario.device.setFaults(IOSStandInFaults(hangSeconds: 600, hangTool: "afcclient"))
        let result = try scenario.flippio(["dbs", IOSScenario.udid, IOSScenario.bundle],
                                          environment: ["FLIPPIO_COMMAND_TIMEOUT_MS": "1000", "FLIPPIO_RETRY_ATTEMPTS": "1"],
                                          timeout: 300)
        #expect(result.status == 1, "flippio gave up by itself (a kill by the test would not be status 1)")
        #expect(result.err.contains("`afcclient` did not finish in time and was stopped"), "\(result.err)")
        #expect(result.err.contains("fix:"), "\(result.err)")
        let pids = scenario.device.hangPIDs()
        #expect(pids.count == 2, "the tool and the child in its process group")
        // The hung tool and its child were killed with their process group (the signal is sent
        // before flippio exits; the child's death may take a moment to show).
        try await waitUntil("the hung afcclient and its child are gone: \(pids.filter(processIsRunning))", timeout: .seconds(10)) {
            pids.allSatisfy { !processIsRunning($0) }
        }
    }
}

/// Whether `pid` runs (a zombie waiting for its parent counts as gone).
private func processIsRunning(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return !(stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? false)
}
