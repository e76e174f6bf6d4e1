import Foundation
import AetherModel

/// What a checkpoint request carries.
public struct CheckpointRequest: Codable, Sendable, Equatable {
    public var message: String
    public var name: String?
    public var meta: [String: String]
    public init(message: String, name: String? = nil, meta: [String: String] = [:]) {
        self.message = message; self.name = name; self.meta = meta
    }
    enum CodingKeys: String, CodingKey, CaseIterable { case message, name, meta }
    public init(from decoder: any Decoder) throws {
        let c = try RequestKeys.container(decoder, CodingKeys.self)
        message = try c.decode(String.self, forKey: .message)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        meta = try c.decodeIfPresent([String: String].self, forKey: .meta) ?? [:]
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(message, forKey: .message)
        try c.encodeIfPresent(name, forKey: .name)
        if !meta.isEmpty { try c.encode(meta, forKey: .meta) }
    }
}

/// What a commit request carries.
public struct CommitRequest: Codable, Sendable, Equatable {
    /// The commit's message; of a proposal's commit, empty means the proposal's.
    public var message: String
    public var branch: String
    public var meta: [String: String]
    public var allowEmpty: Bool
    /// Commit this approved proposal's frozen root instead of the live tree.
    public var proposal: String?
    public static let defaultBranch = "main"
    public init(message: String, branch: String = CommitRequest.defaultBranch, meta: [String: String] = [:], allowEmpty: Bool = false,
                proposal: String? = nil) {
        self.message = message; self.branch = branch; self.meta = meta; self.allowEmpty = allowEmpty; self.proposal = proposal
    }
    enum CodingKeys: String, CodingKey, CaseIterable { case message, branch, meta, allowEmpty = "allow_empty", proposal }
    public init(from decoder: any Decoder) throws {
        let c = try RequestKeys.container(decoder, CodingKeys.self)
        proposal = try c.decodeIfPresent(String.self, forKey: .proposal)
        message = try proposal == nil ? c.decode(String.self, forKey: .message) : c.decodeIfPresent(String.self, forKey: .message) ?? ""
        branch = try c.decodeIfPresent(String.self, forKey: .branch) ?? CommitRequest.defaultBranch
        meta = try c.decodeIfPresent([String: String].self, forKey: .meta) ?? [:]
        allowEmpty = try c.decodeIfPresent(Bool.self, forKey: .allowEmpty) ?? false
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(message, forKey: .message)
        try c.encode(branch, forKey: .branch)
        if !meta.isEmpty { try c.encode(meta, forKey: .meta) }
        if allowEmpty { try c.encode(true, forKey: .allowEmpty) }
        try c.encodeIfPresent(proposal, forKey: .proposal)
    }
}

/// What a restore request carries: a checkpoint of the session, by name or id.
public struct RestoreRequest: Codable, Sendable, Equatable {
    public var checkpoint: String
    public init(checkpoint: String) { self.checkpoint = checkpoint }
    enum CodingKeys: String, CodingKey, CaseIterable { case checkpoint }
    public init(from decoder: any Decoder) throws {
        checkpoint = try RequestKeys.container(decoder, CodingKeys.self).decode(String.self, forKey: .checkpoint)
    }
}

/// What a fork request carries: the new session's name, and the checkpoint to fork from (nil: the
/// current state).
public struct ForkRequest: Codable, Sendable, Equatable {
    public var name: String
    public var at: String?
    public init(name: String, at: String? = nil) { self.name = name; self.at = at }
    enum CodingKeys: String, CodingKey, CaseIterable { case name, at }
    public init(from decoder: any Decoder) throws {
        let c = try RequestKeys.container(decoder, CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        at = try c.decodeIfPresent(String.self, forKey: .at)
    }
}

/// One action on a session, whichever route brings it: a control file or an xattr on a mount's root,
/// a CLI verb (through the session's mount, or on the store), later an HTTP route. Each route decodes
/// its input into a request and calls `Workspace.perform`, where every rule is checked once.
/// Makes a tree already in the store (what `aetherfs import --into` built from an archive) a new
/// checkpoint of the session and its tree, as a restore would; unsaved changes are checkpointed first.
public struct ImportRequest: Codable, Sendable, Equatable {
    /// The tree's id (64 hex digits).
    public var root: String
    public var message: String
    public var name: String?
    public var meta: [String: String]
    public init(root: String, message: String, name: String? = nil, meta: [String: String] = [:]) {
        self.root = root; self.message = message; self.name = name; self.meta = meta
    }
    enum CodingKeys: String, CodingKey, CaseIterable { case root, message, name, meta }
    public init(from decoder: any Decoder) throws {
        let c = try RequestKeys.container(decoder, CodingKeys.self)
        root = try c.decode(String.self, forKey: .root)
        message = try c.decode(String.self, forKey: .message)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        meta = try c.decodeIfPresent([String: String].self, forKey: .meta) ?? [:]
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(root, forKey: .root)
        try c.encode(message, forKey: .message)
        try c.encodeIfPresent(name, forKey: .name)
        if !meta.isEmpty { try c.encode(meta, forKey: .meta) }
    }
}

public enum SessionRequest: Sendable, Equatable {
    case checkpoint(CheckpointRequest)
    case restore(RestoreRequest)
    case fork(ForkRequest)
    case commit(CommitRequest)
    case adopt(ImportRequest)
    case propose(ProposeRequest)
    /// A commit of this fork that retires its sibling forks (`aetherfs promote`).
    case promote(CommitRequest)

    /// The verbs that take requests: each is a control file's name and a CLI subcommand.
    public static let verbs = ["checkpoint", "restore", "fork", "commit", "import", "propose", "promote"]

    public var verb: String {
        switch self {
        case .checkpoint: "checkpoint"
        case .restore: "restore"
        case .fork: "fork"
        case .commit: "commit"
        case .adopt: "import"
        case .propose: "propose"
        case .promote: "promote"
        }
    }

    /// Decodes a control file's payload: a JSON object (it starts with `{`) of the verb's request, or
    /// the plain form — a message (checkpoint, commit), a checkpoint's name or id (restore),
    /// `NAME` or `NAME@CHECKPOINT` (fork).
    public init(verb: String, payload: String) throws(AetherError) {
        let text = payload.trimmingWhitespace()
        let json = text.hasPrefix("{")
        switch verb {
        case "checkpoint":
            guard !text.isEmpty else { throw .invalid("a checkpoint needs a message (echo \"msg\" > .aether/checkpoint)") }
            self = .checkpoint(json ? try RequestKeys.decode(CheckpointRequest.self, text) : CheckpointRequest(message: text))
        case "commit":
            guard !text.isEmpty else { throw .invalid("a commit needs a message (echo \"msg\" > .aether/commit)") }
            self = .commit(json ? try RequestKeys.decode(CommitRequest.self, text) : CommitRequest(message: text))
        case "restore":
            self = .restore(json ? try RequestKeys.decode(RestoreRequest.self, text)
                                 : RestoreRequest(checkpoint: try SessionRequest.oneLine(text, "a checkpoint name or id to restore")))
        case "fork":
            if json {
                self = .fork(try RequestKeys.decode(ForkRequest.self, text))
            } else {
                let line = try SessionRequest.oneLine(text, "a new session's name (NAME or NAME@CHECKPOINT)")
                let (name, at) = try Repository.splitAt(line, what: "a fork request")
                self = .fork(ForkRequest(name: name, at: at))
            }
        case "propose":
            guard !text.isEmpty else { throw .invalid("a proposal needs a message (echo \"msg\" > .aether/propose)") }
            self = .propose(json ? try RequestKeys.decode(ProposeRequest.self, text) : ProposeRequest(message: text))
        case "promote":
            self = .promote(json ? try RequestKeys.decode(CommitRequest.self, text)
                                 : CommitRequest(message: text.isEmpty ? "promoted" : text))
        case "import":
            self = .adopt(json ? try RequestKeys.decode(ImportRequest.self, text)
                               : ImportRequest(root: try SessionRequest.oneLine(text, "the id of a tree in the store"), message: "import"))
        default:
            throw .invalid("\(verb) takes no requests")
        }
    }

    /// The payload that carries this request to a mounted session's control file: its JSON form.
    public var payload: String {
        switch self {
        case .checkpoint(let r): JSONText.encode(r)
        case .restore(let r): JSONText.encode(r)
        case .fork(let r): JSONText.encode(r)
        case .commit(let r): JSONText.encode(r)
        case .adopt(let r): JSONText.encode(r)
        case .propose(let r): JSONText.encode(r)
        case .promote(let r): JSONText.encode(r)
        }
    }

    /// Checks the request's own form — names, a message's and metadata's limits — before anything runs,
    /// or before the CLI sends it to a mount. `Workspace.perform` checks it again.
    public func validate() throws(AetherError) {
        switch self {
        case .checkpoint(let r):
            _ = try Workspace.validateRecord(message: r.message, meta: r.meta, what: "a checkpoint")
            if let name = r.name { try Repository.validateName(name, what: "checkpoint") }
        case .commit(let r), .promote(let r):
            if r.proposal == nil || !r.message.isEmpty { _ = try Workspace.validateRecord(message: r.message, meta: r.meta, what: "a commit") }
            if let p = r.proposal, p.count < 4 || !p.allSatisfy(\.isHexDigit) { throw .invalid("a proposal id is 4 to 16 hex digits, not \"\(p)\"") }
            try Repository.validateName(r.branch, what: "branch")
        case .propose(let r):
            _ = try Workspace.validateRecord(message: r.message, meta: r.meta, what: "a proposal")
            try Repository.validateName(r.branch, what: "branch")
        case .restore(let r):
            guard !r.checkpoint.trimmingWhitespace().isEmpty else { throw .invalid("write a checkpoint name or id to restore") }
        case .fork(let r):
            try Repository.validateName(r.name, what: "session")
            if let at = r.at, at.isEmpty { throw .invalid("a fork's \"at\" names a checkpoint of the session") }
        case .adopt(let r):
            _ = try Workspace.validateRecord(message: r.message, meta: r.meta, what: "an import")
            guard ObjectID(hex: r.root) != nil else { throw .invalid("an import's \"root\" is a tree id: 64 hex digits") }
            if let name = r.name { try Repository.validateName(name, what: "checkpoint") }
        }
    }

    /// Reads a session's answer to this request (`.aether/last` after it ran, as JSON).
    public func answer(from text: String) throws(AetherError) -> SessionAnswer {
        switch self {
        case .fork: .session(try JSONText.decode(SessionSummary.self, text))
        case .propose: .proposal(try JSONText.decode(ProposalInfo.self, text))
        default: .snapshot(try JSONText.decode(SnapshotInfo.self, text))
        }
    }

    static func oneLine(_ text: String, _ what: String) throws(AetherError) -> String {
        let line = text.trimmingWhitespace()
        guard !line.isEmpty, !line.contains("\n") else { throw .invalid("write \(what)") }
        return line
    }
}

/// What a session request answers: the checkpoint or commit made, the checkpoint restored, the
/// session a fork made.
public enum SessionAnswer: Sendable, Equatable {
    case snapshot(SnapshotInfo)
    case session(SessionSummary)
    case proposal(ProposalInfo)

    public var json: String {
        switch self {
        case .snapshot(let s): JSONText.encode(s)
        case .session(let s): JSONText.encode(s)
        case .proposal(let p): JSONText.encode(p)
        }
    }

    public func proposal() throws(AetherError) -> ProposalInfo {
        guard case .proposal(let p) = self else { throw .failed("the answer is not a proposal: \(json.prefix(200))") }
        return p
    }

    /// The snapshot answered; an answer of another kind is an error of the one who answered.
    public func snapshot() throws(AetherError) -> SnapshotInfo {
        guard case .snapshot(let s) = self else { throw .failed("the answer names a session, not a snapshot: \(json.prefix(200))") }
        return s
    }

    public func session() throws(AetherError) -> SessionSummary {
        guard case .session(let s) = self else { throw .failed("the answer names a snapshot, not a session: \(json.prefix(200))") }
        return s
    }
}

extension Workspace {
    /// Runs one session request for `caller`: the one entry the control surface, the CLI and (later) the
    /// HTTP service call. Returns the answer and what the kernel must forget (a restore's changes).
    ///
    /// Refusals of what the audit log records (commits, proposals, restores, imports) are recorded too.
    public func perform(_ request: SessionRequest, caller: UInt32) throws(AetherError) -> (answer: SessionAnswer, invalidations: [Invalidation]) {
        if session.isRetired && request.verb != "fork" {
            throw .notPermitted("session \(session.name) is retired: its tree and checkpoints are read-only (fork it to work on)")
        }
        guard ["commit", "propose", "restore", "import", "promote"].contains(request.verb) else { return try run(request, caller: caller) }
        return try repo.audited(uid: caller, action: request.verb, session: session.name, detail: request.payload) { () throws(AetherError) in
            try run(request, caller: caller)
        }
    }

    private func run(_ request: SessionRequest, caller: UInt32) throws(AetherError) -> (answer: SessionAnswer, invalidations: [Invalidation]) {
        try authorize(caller, request.verb)
        try request.validate()
        switch request {
        case .checkpoint(let r):
            return (.snapshot(SnapshotInfo(try checkpoint(r, author: caller))), [])
        case .restore(let r):
            let snapshot = try repo.resolveSnapshot(r.checkpoint.trimmingWhitespace(), session: session)
            let invalidations = try restore(to: snapshot, caller: caller)
            return (.snapshot(SnapshotInfo(snapshot)), invalidations)
        case .fork(let r):
            return (.session(SessionSummary(try fork(name: r.name, at: r.at, owner: caller))), [])
        case .commit(let r):
            return (.snapshot(SnapshotInfo(try commit(r, author: caller))), [])
        case .adopt(let r):
            let (made, invalidations) = try adopt(r, caller: caller)
            return (.snapshot(SnapshotInfo(made)), invalidations)
        case .propose(let r):
            return (.proposal(try repo.info(try propose(r, caller: caller))), [])
        case .promote(let r):
            return (.snapshot(SnapshotInfo(try promote(r, caller: caller))), [])
        }
    }
}

/// The decoding of a request's JSON form, with errors a person can act on: an unknown key, a value
/// of the wrong type, a key missing, text that is not JSON — each `.invalid` with one line.
enum RequestKeys {
    /// A request's content that does not hold (an unknown key, a value out of its form), said in words.
    struct Unknown: Error { let message: String }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// The request's keyed container, after refusing any key the request does not know.
    static func container<K: CodingKey & CaseIterable>(_ decoder: any Decoder, _ keys: K.Type) throws -> KeyedDecodingContainer<K> {
        let known = K.allCases.map(\.stringValue)
        for key in try decoder.container(keyedBy: AnyKey.self).allKeys where !known.contains(key.stringValue) {
            throw Unknown(message: "unknown key \"\(key.stringValue)\" (expected \(known.joined(separator: ", ")))")
        }
        return try decoder.container(keyedBy: K.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws(AetherError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch let e as Unknown {
            throw .invalid(e.message)
        } catch let DecodingError.typeMismatch(expected, context) {
            let path = context.codingPath.map(\.stringValue)
            if path.count == 2 && path[0] == "meta" { throw .invalid("meta value of \"\(path[1])\" must be a string") }
            let what = expected == Bool.self ? "true or false" : expected == String.self ? "a string" : "an object"
            throw .invalid("\"\(path.joined(separator: "."))\" must be \(what)")
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            throw .invalid("\"\(context.codingPath.map(\.stringValue).joined(separator: "."))\": \(context.debugDescription)")
        } catch let DecodingError.valueNotFound(_, context) {
            throw .invalid("\"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" must not be null")
        } catch let DecodingError.keyNotFound(key, _) {
            throw .invalid("the request needs \"\(key.stringValue)\"")
        } catch {
            throw .invalid("the request starts with '{' but is not a JSON object")
        }
    }
}
