import AetherModel
import AetherCore
import AetherVFS

// What `--json` prints, beside the records the control surface answers with (`SnapshotInfo`,
// `SessionSummary`): each encoded once, by `JSONText`.

/// A session as `session create|list|show` print it.
struct SessionInfo: Encodable {
    var name: String
    var id: Int64
    var state: String
    var owner: UInt32
    var created: String
    var lastUsed: String
    /// The id of the checkpoint or commit it last recorded.
    var head: String?
    /// The session it was forked from.
    var parent: String?
    var mountpoint: String?
    /// The process serving or changing it, and its host.
    var pid: Int32?
    var host: String?

    init(_ repo: Repository, _ s: SessionRecord) {
        name = s.name; id = s.id; state = s.state; owner = s.owner
        created = isoTime(s.created); lastUsed = isoTime(s.lastUsed)
        head = s.head.flatMap { try? repo.metadata.snapshot(id: $0) }?.sid
        parent = s.parentSession.flatMap { try? repo.metadata.session(id: $0) }?.name
        let holder = repo.holder(of: s)
        mountpoint = holder?.mountpoint; pid = holder?.pid; host = holder?.host
    }

    enum CodingKeys: String, CodingKey { case name, id, state, owner, created, lastUsed = "last_used", head, parent, mountpoint, pid, host }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name); try c.encode(id, forKey: .id); try c.encode(state, forKey: .state)
        try c.encode(owner, forKey: .owner); try c.encode(created, forKey: .created); try c.encode(lastUsed, forKey: .lastUsed)
        try c.encode(head, forKey: .head); try c.encode(parent, forKey: .parent); try c.encode(mountpoint, forKey: .mountpoint)
        try c.encode(pid, forKey: .pid); try c.encode(host, forKey: .host)
    }
}

struct BranchInfo: Encodable {
    var name: String
    var head: SnapshotInfo
}

/// One change of `diff --json`.
struct ChangeInfo: Encodable {
    var change: String
    var path: String
    var from: String?
    var aspects: [String]?

    init(_ c: Change) {
        func text(_ p: [UInt8]) -> String { String(decoding: p, as: UTF8.self) }
        change = c.kind.rawValue; path = text(c.path); from = c.from.map(text)
        aspects = c.aspects.isEmpty ? nil : c.aspects
    }

    /// The change as `diff` prints it: a letter, the path (a rename's old path first), what changed.
    var line: String {
        let letters = ["added": "A", "deleted": "D", "modified": "M", "renamed": "R"]
        return "\(letters[change] ?? "?")  " + (from.map { $0 + " -> " } ?? "") + path + (aspects.map { "  (\($0.joined(separator: ", ")))" } ?? "")
    }
}

struct VerifyInfo: Encodable {
    struct Problem: Encodable { var problem: String; var affects: [String] }
    var clean: Bool
    var trees: Int
    var manifests: Int
    var chunks: Int
    var problems: [Problem]
}

struct StoreInfo: Encodable {
    var store: String
    var format: Int
}

