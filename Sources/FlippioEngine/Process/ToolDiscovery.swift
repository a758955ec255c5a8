// TEMPORARY stand-in until the real ToolDiscovery lands from branch `process`. Not committed.
import Foundation
public enum Tool: String, Sendable, Codable, CaseIterable { case adb, ideviceID = "idevice_id", ideviceinfo, ideviceinstaller, afcclient }
public struct ToolInfo: Sendable, Codable, Equatable { public var tool: Tool; public var path: String?; public var version: String?; public var problem: String? }
public actor ToolDiscovery {
    let environment: [String: String]; let explicitPaths: [Tool: String]
    public init(environment: [String: String], explicitPaths: [Tool: String], runner: any ProcessRunning, timeout: Duration) {
        self.environment = environment; self.explicitPaths = explicitPaths
    }
    public func locate(_ tool: Tool) async -> ToolInfo {
        if let p = explicitPaths[tool] { return ToolInfo(tool: tool, path: p) }
        for dir in (environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let c = "\(dir)/\(tool.rawValue)"; if FileManager.default.isExecutableFile(atPath: c) { return ToolInfo(tool: tool, path: c) }
        }
        return ToolInfo(tool: tool, path: nil, problem: "not found")
    }
    public func locateAll() async -> [ToolInfo] { var r: [ToolInfo] = []; for t in Tool.allCases { r.append(await locate(t)) }; return r }
    public func require(_ tool: Tool) async throws -> String {
        guard let p = await locate(tool).path else { throw FlippioError(.toolNotFound, "\(tool.rawValue) not found") }; return p
    }
}
