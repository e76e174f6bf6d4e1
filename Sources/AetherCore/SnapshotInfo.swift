import AetherModel

extension JSONText {
    /// Reads an answer of the daemon (or a request) as `type`.
    public static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws(AetherError) -> T {
        guard let value = JSONText.decoded(type, text) else {
            throw .damaged("an answer that is not the expected JSON: \(text.prefix(200))")
        }
        return value
    }
}

/// A checkpoint or commit as `.aether/checkpoint`, `.aether/last` and `--json` show it.
public struct SnapshotInfo: Codable, Equatable, Sendable {
    public var id: String
    public var name: String
    public var kind: String
    /// The root tree's id, in hex.
    public var root: String
    public var time: String
    public var author: UInt32
    public var message: String
    public var meta: [String: String]
    public var filesChanged: Int64
    public var bytesAdded: Int64
    /// What the snapshot is now: `committed` (a commit) or `saved` (a checkpoint), as proposals have
    /// theirs: every result of these actions carries an id, a state and a root. (Optional only so
    /// that the answer of a daemon started by an older aetherfs still decodes.)
    public var state: String?
    /// The branch a commit is on.
    public var branch: String?

    enum CodingKeys: String, CodingKey {
        case id, name, kind, root, time, author, message, meta, state, branch
        case filesChanged = "files_changed", bytesAdded = "bytes_added"
    }

    public init(_ r: SnapshotRecord) {
        id = r.sid; name = r.name; kind = r.kind.rawValue; root = r.root.hex; time = isoTime(r.time)
        author = r.author; message = r.message; meta = r.meta
        filesChanged = r.filesChanged; bytesAdded = r.bytesAdded
        state = r.kind == .commit ? "committed" : "saved"
        branch = r.branch
    }
}

/// A session in brief: what a fork answers.
public struct SessionSummary: Codable, Equatable, Sendable {
    public var session: String
    public var id: Int64
    public var parent: Int64?
    public var root: String

    public init(_ s: SessionRecord) {
        session = s.name; id = s.id; parent = s.parentSession; root = s.baseRoot.hex
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(session, forKey: .session); try c.encode(id, forKey: .id)
        try c.encode(parent, forKey: .parent); try c.encode(root, forKey: .root)
    }
}

/// One line of a history: id, time, kind, name, first line of the message.
public func formatLogLine(_ r: SnapshotRecord) -> String {
    let first = r.message.split(separator: "\n").first.map(String.init) ?? ""
    return "\(r.sid)  \(isoTime(r.time))  \(r.kind.rawValue)  \(r.name)  \(first)\n"
}

