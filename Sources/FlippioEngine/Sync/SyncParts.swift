import Foundation
import Logging

/// The parts of the sync path, built in one place from the configuration: the workspace, its
/// sidecars, the warm connection pool, the device bridges and the push pipeline.
///
/// Every process builds them the same way: the agent (around a ``SyncEngine``) and the one-shot
/// commands (``Engine``), so a `flippio push` pushes exactly as the agent does.
public struct SyncParts: Sendable {
    public let workspace: Workspace
    public let sidecars: SidecarStore
    public let pool: ConnectionPool
    public let bridges: BridgeProvider
    public let pipeline: PushPipeline

    /// - parameter poolCapacity: overrides ``FlippioConfiguration/poolCapacity`` (one-shot commands
    ///   touch a few databases and need no large pool).
    public init(configuration: FlippioConfiguration, bridges: BridgeProvider, logger: Logger, poolCapacity: Int? = nil) {
        workspace = Workspace(root: configuration.workspace)
        sidecars = SidecarStore()
        pool = ConnectionPool(capacity: poolCapacity ?? configuration.poolCapacity)
        self.bridges = bridges
        var pipeline = PushPipeline(workspace: workspace, sidecars: sidecars, pool: pool, bridges: bridges,
                                    stopAppBeforePush: configuration.stopAppBeforePush, retry: configuration.retry, logger: logger)
        pipeline.restartAppAfterPush = configuration.restartApp
        pipeline.deltaThreshold = configuration.deltaThreshold
        self.pipeline = pipeline
    }
}
