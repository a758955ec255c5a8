import Foundation

/// iOS file access through `afcclient` (libimobiledevice 1.3.1 and later): one tool call per
/// operation, `-u UDID --container BUNDLE -- COMMAND ARGS`.
///
/// It runs the tools through the bridge it belongs to (its runner, timeouts and environment).
///
/// - Important: afcclient reports most failures with exit status 0 and an `Error:` line on stdout;
///   see ``IOSErrors``.
struct AFCClientBackend: IOSFileBackend {
    let bridge: IOSBridge

    var kind: IOSFileBackendKind { .afcclient }

    private var timeouts: IOSBridge.Timeouts { bridge.timeouts }

    func arguments(_ files: IOSAppFiles) -> [String] {
        ["-u", files.deviceID] + bridge.networkFlag(files.deviceID)
            + [files.access == .documents ? "--documents" : "--container", files.appID]
    }

    /// Lists a folder with `ls -l` (names, kinds, sizes); falls back to `ls` plus `info` per entry
    /// for an afcclient without `ls -l`.
    func list(_ files: IOSAppFiles, path: String) async throws -> [IOSOutputParser.AFCEntry] {
        let arguments = arguments(files)
        let long = try await bridge.run(.afcClient, arguments + ["--", "ls", "-l", path], timeout: timeouts.control)
        let olderTool = IOSOutputParser.errorLines(long.stdoutText).contains { $0.contains("'-l'") }
        if !olderTool {
            if let error = IOSErrors.failure(in: long, tool: .afcClient, command: "afcclient ls -l \(path)", deviceID: files.deviceID) {
                throw await bridge.explained(error, tool: .afcClient, deviceID: files.deviceID)
            }
            if let entries = IOSOutputParser.longListing(long.stdoutText) { return entries }
        }
        let plain = try await bridge.checked(.afcClient, arguments + ["--", "ls", path], timeout: timeouts.control,
                                             deviceID: files.deviceID)
        var entries: [IOSOutputParser.AFCEntry] = []
        for name in IOSOutputParser.names(plain.stdoutText).prefix(bridge.limits.maxEntries) {
            let info = try? await bridge.checked(.afcClient, arguments + ["--", "info", path + "/" + name],
                                                 timeout: timeouts.control, deviceID: files.deviceID)
            if let parsed = info.flatMap({ IOSOutputParser.info($0.stdoutText) }) {
                entries.append(IOSOutputParser.AFCEntry(name: name, kind: parsed.kind, size: parsed.size))
            }
        }
        return entries
    }

    func head(_ files: IOSAppFiles, path: String, count: Int, size: Int64?) async throws -> Data {
        let folder = bridge.temporaryDirectory.appendingPathComponent("flippio-ios-\(UUID().uuidString.prefix(12))", isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let local = folder.appendingPathComponent("probe")
        try await download(files, path: path, to: local, size: size)
        let handle = try FileHandle(forReadingFrom: local)
        defer { try? handle.close() }
        return try handle.read(upToCount: count) ?? Data()
    }

    func download(_ files: IOSAppFiles, path: String, to local: URL, size: Int64?) async throws {
        try await bridge.checked(.afcClient, arguments(files) + ["--", "get", path, local.path],
                                 timeout: timeouts.transfer(bytes: size ?? 0), deviceID: files.deviceID)
        guard FileManager.default.fileExists(atPath: local.path) else {
            throw FlippioError(.protocolFault, "afcclient reported success but did not write \(local.path).",
                               context: ["device": files.deviceID, "path": path])
        }
    }

    /// `put` (which refuses to overwrite, so a temp file left by an interrupted push is removed
    /// first), then a listing of the folder to check the size that arrived.
    func upload(_ local: URL, size: Int64, hash: String, to files: IOSAppFiles, path: String) async throws {
        try await remove(files, paths: [path])
        try await bridge.checked(.afcClient, arguments(files) + ["--", "put", local.path, path],
                                 timeout: timeouts.transfer(bytes: size), deviceID: files.deviceID)
        let (parent, name) = IOSBridge.splitPath(path)
        let listing = try await list(files, path: parent)
        guard let uploaded = listing.first(where: { $0.name == name }), uploaded.size == size else {
            throw FlippioError(.verificationFailed, "The upload of \(path) to \(files.deviceID) came out incomplete.",
                               remedy: "Check the cable; flippio tries again.", context: ["path": path])
        }
    }

    func remove(_ files: IOSAppFiles, paths: [String]) async throws {
        guard !paths.isEmpty else { return }
        try await bridge.checked(.afcClient, arguments(files) + ["--", "rm"] + paths, timeout: timeouts.control,
                                 deviceID: files.deviceID, ignoring: { $0.contains("Not found (8)") })
    }

    func move(_ files: IOSAppFiles, from: String, to: String) async throws {
        try await bridge.checked(.afcClient, arguments(files) + ["--", "mv", from, to], timeout: timeouts.control,
                                 deviceID: files.deviceID)
    }

    func release(deviceID: String?) async {}
}
