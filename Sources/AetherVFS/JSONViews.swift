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
        /// Where its objects live: `local`, or the `s3://` address of a packed store.
        public var backend: String
        /// The requests this mount made to a remote backend (nil for a local one).
        public var requests: RequestCounts?
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


/// A session as `session create|list|show` print it.
public struct SessionInfo: Encodable, Sendable {
    public var name: String
    public var id: Int64
    public var state: String
    public var owner: UInt32
    public var created: String
    public var lastUsed: String
    /// The id of the checkpoint or commit it last recorded.
    public var head: String?
    /// The session it was forked from.
    public var parent: String?
    public var mountpoint: String?
    /// The process serving or changing it, and its host.
    public var pid: Int32?
    public var host: String?

    public init(_ repo: Repository, _ s: SessionRecord) {
        name = s.name; id = s.id; state = s.state; owner = s.owner
        created = isoTime(s.created); lastUsed = isoTime(s.lastUsed)
        head = s.head.flatMap { try? repo.metadata.snapshot(id: $0) }?.sid
        parent = s.parentSession.flatMap { try? repo.metadata.session(id: $0) }?.name
        let holder = repo.holder(of: s)
        mountpoint = holder?.mountpoint; pid = holder?.pid; host = holder?.host
    }

    enum CodingKeys: String, CodingKey { case name, id, state, owner, created, lastUsed = "last_used", head, parent, mountpoint, pid, host }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name); try c.encode(id, forKey: .id); try c.encode(state, forKey: .state)
        try c.encode(owner, forKey: .owner); try c.encode(created, forKey: .created); try c.encode(lastUsed, forKey: .lastUsed)
        try c.encode(head, forKey: .head); try c.encode(parent, forKey: .parent); try c.encode(mountpoint, forKey: .mountpoint)
        try c.encode(pid, forKey: .pid); try c.encode(host, forKey: .host)
    }
}

public struct BranchInfo: Encodable, Sendable {
    public var name: String
    public var head: SnapshotInfo
    public init(name: String, head: SnapshotInfo) { self.name = name; self.head = head }
}


/// One change of `diff --json`.
public struct ChangeInfo: Encodable, Sendable {
    public var change: String
    public var path: String
    public var from: String?
    public var aspects: [String]?

    public init(_ c: Change) {
        func text(_ p: [UInt8]) -> String { String(decoding: p, as: UTF8.self) }
        change = c.kind.rawValue; path = text(c.path); from = c.from.map(text)
        aspects = c.aspects.isEmpty ? nil : c.aspects
    }

    /// The change as `diff` prints it: a letter, the path (a rename's old path first), what changed.
    public var line: String {
        let letters = ["added": "A", "deleted": "D", "modified": "M", "renamed": "R"]
        return "\(letters[change] ?? "?")  " + (from.map { $0 + " -> " } ?? "") + path + (aspects.map { "  (\($0.joined(separator: ", ")))" } ?? "")
    }
}

