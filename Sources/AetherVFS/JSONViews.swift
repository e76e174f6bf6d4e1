import Foundation
import AetherModel
import AetherCore
import AetherStore

/// What `.aether/status` shows.
public struct StatusInfo: Codable, Equatable, Sendable {
    public struct Store: Codable, Equatable, Sendable {
        public var path: String
        public var objects: Int
        public var bytes: Int64
    }
    public var session: String
    public var sessionID: Int64
    public var mountpoint: String
    /// The id of the checkpoint or commit the session last recorded.
    public var base: String?
    /// Its name.
    public var head: String?
    public var dirtyPaths: Int
    public var store: Store
    /// The session's line of `aetherfs usage` (its checkpoints, base and stored files; not its unsaved
    /// changes), as of `usage.asOf`; nil when it could not be computed.
    public var usage: Usage?

    public struct Usage: Codable, Equatable, Sendable {
        public var referenced: Int64
        public var exclusive: Int64
        public var shared: Int64
        public var asOf: String
        enum CodingKeys: String, CodingKey { case referenced, exclusive, shared, asOf = "as_of" }
    }

    enum CodingKeys: String, CodingKey {
        case session, mountpoint, base, head, store, usage
        case sessionID = "session_id", dirtyPaths = "dirty_paths"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(session, forKey: .session); try c.encode(sessionID, forKey: .sessionID)
        try c.encode(mountpoint, forKey: .mountpoint); try c.encode(base, forKey: .base)
        try c.encode(head, forKey: .head); try c.encode(dirtyPaths, forKey: .dirtyPaths)
        try c.encode(store, forKey: .store)
        try c.encode(usage, forKey: .usage)
    }
}

