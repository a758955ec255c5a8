import Foundation
import Testing
import TestSupport
@testable import FlippioEngine

/// Issue #7: property-based tests of every parser of device output and of the sidecar decoder.
///
/// Inputs come from a seeded generator (SplitMix64, below; no dependency), mixing random bytes
/// with fragments of the real tools' output, so that near-valid input reaches deep into the
/// parsers. The properties: no crash, no value that could escape the workspace or the app's
/// folder, bounded output. A failing case names its seed and iteration, so it can be replayed.
@Suite("Fuzz: device output parsers and the sidecar decoder")
struct FuzzParserTests {
    static let seeds: [UInt64] = [1, 0xF11_7710, 0xDEAD_BEEF]
    static let iterations = 500
    static let package = "com.example.notes"
    static let root = "/data/data/com.example.notes"

    /// Fragments of real output and of attacks, glued together at random.
    static let fragments: [String] = [
        "/", "/data/data/com.example.notes/", "/data/data/com.example.notes/databases/", "/sdcard/Android/data/com.example.notes/",
        "..", ".", "../", "/../", "//", "notes.db", "x.db", ".db", "-wal", "-shm", "-journal", ".sqlite", ".sqlite3", ".db3",
        "\n", "\r\n", "\r", "\t", " ", "  ", "\0", "\u{1B}[31m", "\u{7F}", "\u{85}", "\u{202E}", "é", "😀", "'", "\"", "$(id)", "`",
        "emulator-5554", "device", "offline", "unauthorized", "no permissions (user in plugdev group); see [http://x]",
        "product:sdk model:Pixel_7 device:x transport_id:1", "usb:1-1", "List of devices attached\n",
        "package:", "package:com.example.notes", "package:/data/app/base.apk=com.x.y", "package:-rf",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "  ", " *", "8192 ", "-1 ", "99999999999999999999 ",
        "run-as: package not debuggable: com.example.notes", "sha256sum: x: No such file or directory",
        "0000", "001c", "ffff", "zzzz", "00", "error: device offline",
        "<?xml version=\"1.0\"?>", "<plist version=\"1.0\"><array><dict><key>CFBundleIdentifier</key><string>com.x</string></dict></array></plist>",
        "<array>", "<dict>", "<key>CFBundleIdentifier</key>", "<string>../../etc</string>", "</plist>",
        "CFBundleIdentifier, CFBundleVersion, CFBundleDisplayName\n", "com.example.Notes, \"1.0\", \"Notes\"",
        "-rw-r--r--    1 mobile mobile       8192 22 May 2024 10:00:00 ", "drwxr-xr-x    2 mobile mobile 64 1 Jan 2024 00:00:00 ",
        "{\"st_ifmt\": \"S_IFDIR\", \"st_size\": 64}", "st_ifmt: S_IFREG", "st_size: 12",
        "00008030-001A2D3C0E82802E", "ERROR: Could not connect to lockdownd: Password protected (-17)",
        "SQLite format 3\0", "SQLite format 3\0/data/data/com.example.notes/databases/x\0",
    ]

    /// Random input: random bytes, random fragments, or fragments with a few bytes flipped.
    static func input(_ rng: inout SplitMix64) -> Data {
        switch rng.next() % 4 {
        case 0:
            return Data((0..<Int(rng.next() % 512)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        default:
            var data = Data()
            for _ in 0..<Int(rng.next() % 40) {
                data.append(contentsOf: Array(fragments[Int(rng.next() % UInt64(fragments.count))].utf8))
            }
            if rng.next() % 3 == 0, !data.isEmpty {
                for _ in 0..<Int(rng.next() % 4) {
                    data[Int(rng.next() % UInt64(data.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            return data
        }
    }

    static func text(_ data: Data) -> String { String(decoding: data, as: UTF8.self) }

    static func hasControl(_ text: String) -> Bool { DeviceShellQuoting.containsControlCharacter(text) }

    // MARK: - Android

    @Test("adb devices -l: no crash; ids are single-line, non-empty", arguments: seeds)
    func devicesListing(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for i in 0..<Self.iterations {
            let text = Self.text(Self.input(&rng))
            let devices = AndroidOutputParser.devices(text)
            #expect(devices.count <= text.split(whereSeparator: \.isNewline).count, "seed \(seed) #\(i)")
            for device in devices {
                #expect(!device.id.isEmpty && !device.id.contains("\n") && !device.id.contains("\r"), "seed \(seed) #\(i): \(device.id.debugDescription)")
            }
        }
    }

    @Test("pm list packages: only well-formed package names, sorted and unique", arguments: seeds)
    func packageListing(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for i in 0..<Self.iterations {
            let packages = AndroidOutputParser.packages(Self.text(Self.input(&rng)))
            #expect(packages == Array(Set(packages)).sorted(), "seed \(seed) #\(i)")
            for name in packages {
                #expect(DeviceShellQuoting.isValidPackageName(name), "seed \(seed) #\(i): \(name.debugDescription)")
            }
        }
    }

    @Test("header scan: only safe database paths inside the app's folder, at most the limit, none escaping the workspace",
          arguments: seeds)
    func findListing(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let workspace = Workspace(root: URL(fileURLWithPath: "/nonexistent/workspace", isDirectory: true))
        for i in 0..<Self.iterations {
            let data = Self.input(&rng)
            let limit = Int(rng.next() % 20) + 1
            let listing = AndroidOutputParser.databasesByHeader(data, roots: [Self.root], limit: limit, truncated: rng.next() % 5 == 0)
            #expect(listing.paths.count <= limit, "seed \(seed) #\(i)")
            #expect(Set(listing.paths).count == listing.paths.count, "seed \(seed) #\(i): duplicates")
            for path in listing.paths {
                let context = "seed \(seed) #\(i): \(path.debugDescription)"
                #expect(path.hasPrefix(Self.root + "/"), "\(context)")
                #expect(DeviceShellQuoting.isSafeDevicePath(path), "\(context)")
                #expect(!path.split(separator: "/").contains(".."), "\(context)")
                #expect(AndroidOutputParser.isDatabaseName(String(path.split(separator: "/").last ?? "")), "\(context)")
                // Whatever the parser accepts maps to a local path inside the workspace, or is refused.
                let remote = RemoteDatabase(platform: .android, deviceID: "emulator-5554", appID: Self.package, path: path, access: .runAs)
                if let components = try? Workspace.relativeComponents(for: remote) {
                    let url = components.reduce(workspace.root) { $0.appendingPathComponent($1) }.standardizedFileURL
                    #expect(url.path.hasPrefix(workspace.root.path + "/"), "\(context) → \(url.path)")
                }
            }
            for warning in listing.warnings { #expect(!Self.hasControl(warning), "seed \(seed) #\(i): \(warning.debugDescription)") }
        }
    }

    @Test("header scan: names with a line break are never listed, whatever follows them", arguments: seeds)
    func headerScanNamesWithLineBreaks(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let header = Data(AndroidOutputParser.sqliteHeader)
        for i in 0..<300 {
            // A real file whose name holds a newline, then what follows it pretends to be a path.
            let tail = ["x.db", "evil.db", "/data/data/com.example.notes/databases/owned.db", "../../../etc/passwd.db"][Int(rng.next() % 4)]
            let good = "/data/data/com.example.notes/databases/good\(i).db"
            var output = header + Data(good.utf8) + Data([0])
            output += header + Data("/data/data/com.example.notes/databases/a\(i)\n\(tail)".utf8) + Data([0])
            output += header + Data("\(good)-wal".utf8) + Data([0])
            let listing = AndroidOutputParser.databasesByHeader(output, roots: [Self.root])
            #expect(listing.paths == [good], "seed \(seed) #\(i): \(listing.paths)")
        }
    }

    @Test("sha256sum and stat: well-formed values only", arguments: seeds)
    func hashAndSizeListings(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for i in 0..<Self.iterations {
            let text = Self.text(Self.input(&rng))
            for (file, hash) in AndroidOutputParser.sha256sums(text) {
                #expect(hash.count == 64 && hash.allSatisfy { "0123456789abcdef".contains($0) }, "seed \(seed) #\(i)")
                #expect(!file.isEmpty)
            }
            for (_, size) in AndroidOutputParser.sizes(text) { #expect(size >= 0, "seed \(seed) #\(i)") }
            if let value = AndroidOutputParser.property(text) {
                #expect(value.count <= 92 && !Self.hasControl(value) && !value.isEmpty, "seed \(seed) #\(i)")
            }
        }
    }

    @Test("adb track-devices framing: no crash on garbage; any split of valid frames gives the same lists", arguments: seeds)
    func trackDevicesFraming(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        for i in 0..<Self.iterations {
            var decoder = AndroidOutputParser.TrackDevicesDecoder()
            do {
                _ = try decoder.feed(Self.input(&rng))
            } catch let error as FlippioError {
                #expect(!error.message.isEmpty, "seed \(seed) #\(i)")
            } catch {
                Issue.record("seed \(seed) #\(i): not a FlippioError: \(error)")
            }
        }
        for i in 0..<300 {
            let bodies = (0..<Int(rng.next() % 4 + 1)).map { n in
                (0..<Int(rng.next() % 3)).map { "serial-\(i)-\(n)-\($0)\t\(["device", "offline", "unauthorized"][Int(rng.next() % 3)])\n" }.joined()
            }
            let stream = Array(bodies.map { String(format: "%04x", $0.utf8.count) + $0 }.joined().utf8)
            var whole = AndroidOutputParser.TrackDevicesDecoder()
            let expected = try whole.feed(stream)
            var split = AndroidOutputParser.TrackDevicesDecoder()
            var got: [[Device]] = []
            var offset = 0
            while offset < stream.count {
                let n = min(stream.count - offset, Int(rng.next() % 7) + 1)
                got += try split.feed(stream[offset..<(offset + n)])
                offset += n
            }
            #expect(got == expected && got.count == bodies.count, "seed \(seed) #\(i)")
        }
    }

    @Test("adb and device error texts: recognised or not, never a crash; excerpts are short and clean", arguments: seeds)
    func errorTexts(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for i in 0..<Self.iterations {
            let text = Self.text(Self.input(&rng))
            _ = AndroidErrors.recognise(text, .init(serial: "emulator-5554", package: Self.package, path: "/x"))
            let excerpt = AndroidErrors.excerpt(text)
            #expect(excerpt.count <= 201 && !excerpt.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "seed \(seed) #\(i)")
        }
    }

    // MARK: - iOS

    @Test("idevice_id, ideviceinfo, ideviceinstaller, afcclient: no crash; ids and names are safe", arguments: seeds)
    func iosListings(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for i in 0..<Self.iterations {
            let data = Self.input(&rng)
            let text = Self.text(data)
            let context = "seed \(seed) #\(i)"
            for udid in IOSOutputParser.udids(text) { #expect(IOSOutputParser.isUDID(udid), "\(context)") }
            if let value = IOSOutputParser.value(text) { #expect(!value.contains("\n") && value.count <= 256, "\(context)") }
            _ = IOSOutputParser.lockdownError(text)
            _ = IOSOutputParser.errorLines(text)
            if let apps = try? IOSOutputParser.apps(fromPropertyList: data) {
                for app in apps { #expect(IOSOutputParser.isBundleID(app.id), "\(context): \(app.id.debugDescription)") }
            }
            for app in IOSOutputParser.apps(fromText: text) ?? [] {
                #expect(IOSOutputParser.isBundleID(app.id), "\(context): \(app.id.debugDescription)")
            }
            for entry in IOSOutputParser.longListing(text) ?? [] {
                #expect(IOSOutputParser.isSafeName(entry.name) && entry.name != ".." && !entry.name.contains("/"), "\(context)")
            }
            for name in IOSOutputParser.names(text) {
                #expect(IOSOutputParser.isSafeName(name) && !Self.hasControl(name), "\(context): \(name.debugDescription)")
            }
            _ = IOSOutputParser.info(text)
        }
    }

    // MARK: - Workspace paths

    @Test("any remote path maps inside the workspace or is refused", arguments: seeds)
    func remotePathsNeverEscape(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let root = URL(fileURLWithPath: "/nonexistent/workspace", isDirectory: true)
        for i in 0..<Self.iterations {
            let path = Self.text(Self.input(&rng))
            let device = rng.next() % 4 == 0 ? Self.text(Self.input(&rng)) : "emulator-5554"
            let app = rng.next() % 4 == 0 ? Self.text(Self.input(&rng)) : Self.package
            let remote = RemoteDatabase(platform: .android, deviceID: device, appID: app, path: path, access: .runAs)
            do {
                let components = try Workspace.relativeComponents(for: remote)
                let context = "seed \(seed) #\(i): \(components)"
                #expect(components.count >= 3, "\(context)")
                for component in components {
                    #expect(!component.isEmpty && component != "." && component != ".." && !component.contains("/"), "\(context)")
                    #expect(!Self.hasControl(component) && !component.contains("\0"), "\(context)")
                }
                let url = components.reduce(root) { $0.appendingPathComponent($1) }.standardizedFileURL
                #expect(url.path.hasPrefix(root.path + "/"), "\(context)")
            } catch let error as FlippioError {
                #expect(error.code == .unsafePath, "seed \(seed) #\(i): \(error.code)")
            } catch {
                Issue.record("seed \(seed) #\(i): not a FlippioError: \(error)")
            }
        }
    }

    // MARK: - Sidecars

    static func sidecar(_ rng: inout SplitMix64) -> Sidecar {
        func hash() -> String { (0..<4).map { _ in String(format: "%016llx", rng.next()) }.joined() }
        func date() -> Date { Date(timeIntervalSince1970: Double(rng.next() % 4_000_000_000_000) / 1000) }
        var sidecar = Sidecar(
            origin: .init(platform: rng.next() % 2 == 0 ? .android : .ios, deviceID: "emulator-\(rng.next() % 10000)",
                          deviceModel: rng.next() % 2 == 0 ? nil : "Pixel \"7\" é😀", appID: Self.package,
                          remotePath: Self.root + "/databases/n\(rng.next() % 100).db", access: .runAs),
            pulledAt: date(), fingerprintAtPull: DeviceFingerprint(mainHash: hash(), walHash: rng.next() % 2 == 0 ? nil : hash()),
            contentHash: hash())
        sidecar.state = [.clean, .dirty, .settling, .pushing, .conflict, .waitingForDevice, .failed, .invalid][Int(rng.next() % 8)]
        if rng.next() % 2 == 0 { sidecar.lastError = .init(code: .deviceOffline, message: "off\nline \u{1}", remedy: nil, at: date()) }
        if rng.next() % 2 == 0 { sidecar.pendingPushHash = hash() }
        for _ in 0..<Int(rng.next() % 30) {
            sidecar.recordPush(.init(at: date(), contentHash: hash(), bytes: Int64(rng.next() % 1_000_000),
                                     durationMilliseconds: Int(rng.next() % 10_000), changedTables: ["t": "1 → 2"]))
        }
        sidecar.updatedAt = date()
        return sidecar
    }

    @Test("sidecar decoder: encode then decode gives the same sidecar", arguments: seeds)
    func sidecarRoundTrip(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let url = URL(fileURLWithPath: "/w/x.db.flippio.json")
        for i in 0..<300 {
            let sidecar = Self.sidecar(&rng)
            let decoded = try SidecarStore.decode(SidecarStore.encode(sidecar), from: url)
            #expect(decoded.pushHistory.count <= Sidecar.pushHistoryLimit, "seed \(seed) #\(i)")
            // Dates are stored to the millisecond.
            #expect(abs(decoded.updatedAt.timeIntervalSince(sidecar.updatedAt)) < 0.0011, "seed \(seed) #\(i)")
            var normalized = decoded
            normalized.updatedAt = sidecar.updatedAt
            normalized.pulledAt = sidecar.pulledAt
            normalized.lastError?.at = sidecar.lastError?.at ?? Date()
            normalized.pushHistory = zip(decoded.pushHistory, sidecar.pushHistory).map { d, s in var d = d; d.at = s.at; return d }
            #expect(normalized == sidecar, "seed \(seed) #\(i)")
        }
    }

    @Test("sidecar decoder: damaged JSON is a sidecar or a clear error, never a crash", arguments: seeds)
    func sidecarDamage(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let url = URL(fileURLWithPath: "/w/x.db.flippio.json")
        for i in 0..<Self.iterations {
            var data = (try? SidecarStore.encode(Self.sidecar(&rng))) ?? Data()
            switch rng.next() % 6 {
            case 0: data = data.prefix(Int(rng.next() % UInt64(data.count + 1)))                     // truncated
            case 1: for _ in 0..<Int(rng.next() % 8 + 1) { data[Int(rng.next() % UInt64(data.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            case 2: data = Data(Self.text(data).replacingOccurrences(of: "\"schemaVersion\" : 1", with: "\"schemaVersion\" : \(rng.next() % 1000)").utf8)
            case 3:
                // A key removed or its value's type changed.
                if var json = try? JSONSerialization.jsonObject(with: data) as? [String: Any], !json.isEmpty {
                    let key = json.keys.sorted()[Int(rng.next() % UInt64(json.count))]
                    json[key] = rng.next() % 2 == 0 ? nil : (["x", 1, NSNull(), [1], ["a": 1]] as [Any])[Int(rng.next() % 5)]
                    data = (try? JSONSerialization.data(withJSONObject: json)) ?? data
                }
            case 4: data = Self.input(&rng)
            default: data.append(contentsOf: Array("}{\0\u{1B}".utf8))
            }
            do {
                let sidecar = try SidecarStore.decode(data, from: url)
                #expect(sidecar.schemaVersion <= Sidecar.currentSchemaVersion, "seed \(seed) #\(i)")
            } catch let error as FlippioError {
                #expect([.sidecarUnreadable, .sidecarTooNew].contains(error.code), "seed \(seed) #\(i): \(error.code)")
                #expect(error.remedy != nil)
            } catch {
                Issue.record("seed \(seed) #\(i): not a FlippioError: \(error)")
            }
        }
    }
}

