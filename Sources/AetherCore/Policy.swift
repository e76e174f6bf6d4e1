#if canImport(Glibc)
import Glibc
#endif
import Foundation
import AetherModel

/// Who a policy names: `uid:N`, `user:NAME`, `group:NAME` or `group:GID`, or `*` (anyone).
public struct Principal: Codable, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable { case anyone, uid(UInt32), group(UInt32) }
    public let kind: Kind
    public let text: String

    public init(_ text: String) throws(AetherError) {
        self.text = text
        if text == "*" { kind = .anyone; return }
        guard let colon = text.firstIndex(of: ":") else { throw .invalid("\"\(text)\" is not uid:N, user:NAME, group:NAME or *") }
        let what = text[..<colon], value = String(text[text.index(after: colon)...])
        switch what {
        case "uid":
            guard let uid = UInt32(value) else { throw .invalid("\"\(text)\": a uid is a number") }
            kind = .uid(uid)
        case "user":
            guard let pw = getpwnam(value) else { throw .invalid("\"\(text)\": no such user on this machine") }
            kind = .uid(pw.pointee.pw_uid)
        case "group":
            if let gid = UInt32(value) { kind = .group(gid); return }
            guard let gr = getgrnam(value) else { throw .invalid("\"\(text)\": no such group on this machine") }
            kind = .group(gr.pointee.gr_gid)
        default:
            throw .invalid("\"\(text)\" is not uid:N, user:NAME, group:NAME or *")
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(text) } catch {
            guard case .invalid(let why) = error else { throw error }
            throw RequestKeys.Unknown(message: why)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }

    public var description: String { text }

    /// Whether `uid` is this principal (a group: its primary or a supplementary group).
    public func includes(_ uid: UInt32) -> Bool {
        switch kind {
        case .anyone: true
        case .uid(let u): u == uid
        case .group(let g): Principal.groups(of: uid).contains(g)
        }
    }

    static func groups(of uid: UInt32) -> [UInt32] {
        guard let pw = getpwuid(uid) else { return [] }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            _ = getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &groups, &count)
        }
        return Array(groups.prefix(Int(max(0, count))))
    }
}

/// The store's policy: who may create a durable result on each branch and what must come with it,
/// what others may do in a session they do not own, and paths that are never persisted. Set as a
/// JSON file (`aetherfs policy set FILE`); a file with an unknown key, a bad principal or glob is
/// refused whole. No policy (the default) is `Policy()`: anyone who may drive a session commits.
public struct Policy: Codable, Equatable, Sendable {
    /// One branch's rule; unset fields fall back to the `"*"` rule, then to the defaults.
    public struct BranchRule: Codable, Equatable, Sendable {
        /// Who may commit (nil: whoever may drive the session).
        public var committers: [Principal]?
        /// A commit must be of an approved proposal.
        public var requireProposal: Bool?
        /// Approvals a proposal needs (default 1).
        public var approvals: Int?
        /// Who may review (nil: anyone but the author and the session's writers).
        public var reviewers: [Principal]?
        /// The author (and the session's writers) may approve.
        public var selfApproval: Bool?
        /// Metadata keys a commit or proposal must carry.
        public var requiredMeta: [String]?
        /// An export of a snapshot on this branch must be of a commit.
        public var exportRequiresCommit: Bool?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case committers, requireProposal = "require_proposal", approvals, reviewers, selfApproval = "self_approval"
            case requiredMeta = "required_meta", exportRequiresCommit = "export_requires_commit"
        }

        public init(from decoder: any Decoder) throws {
            let c = try RequestKeys.container(decoder, CodingKeys.self)
            committers = try c.decodeIfPresent([Principal].self, forKey: .committers)
            requireProposal = try c.decodeIfPresent(Bool.self, forKey: .requireProposal)
            approvals = try c.decodeIfPresent(Int.self, forKey: .approvals)
            reviewers = try c.decodeIfPresent([Principal].self, forKey: .reviewers)
            selfApproval = try c.decodeIfPresent(Bool.self, forKey: .selfApproval)
            requiredMeta = try c.decodeIfPresent([String].self, forKey: .requiredMeta)
            exportRequiresCommit = try c.decodeIfPresent(Bool.self, forKey: .exportRequiresCommit)
        }

        func over(_ base: BranchRule) -> BranchRule {
            var r = base
            if let v = committers { r.committers = v }
            if let v = requireProposal { r.requireProposal = v }
            if let v = approvals { r.approvals = v }
            if let v = reviewers { r.reviewers = v }
            if let v = selfApproval { r.selfApproval = v }
            if let v = requiredMeta { r.requiredMeta = v }
            if let v = exportRequiresCommit { r.exportRequiresCommit = v }
            return r
        }
    }

    public struct SessionRule: Codable, Equatable, Sendable {
        /// What a uid other than a session's owner (and root) may do in it.
        public var othersMay: [String] = []
        public init() {}
        enum CodingKeys: String, CodingKey, CaseIterable { case othersMay = "others_may" }
        public init(from decoder: any Decoder) throws {
            othersMay = try RequestKeys.container(decoder, CodingKeys.self).decodeIfPresent([String].self, forKey: .othersMay) ?? []
        }
        /// The actions `others_may` can name.
        public static let actions = ["checkpoint", "restore", "fork", "commit", "propose", "promote", "import"]
    }

    /// How long checkpoints and sessions stay: nothing is removed by a rule that is not set. Applied by
    /// `aetherfs prune` (`Repository.prune`).
    public struct Retention: Codable, Equatable, Sendable {
        /// Each session's newest checkpoints kept.
        public var keepLast: Int?
        /// Checkpoints younger than this kept.
        public var keepWithin: TimeSpan?
        /// Checkpoints named by their author (not `cp-N`) kept (default true).
        public var keepNamed: Bool?
        /// A session nobody has used for this long is retired.
        public var idleTTL: TimeSpan?
        /// A session retired this long ago is deleted.
        public var retiredTTL: TimeSpan?
        /// A fork a promotion retired is deleted this long after (default: `retired_ttl`).
        public var losersTTL: TimeSpan?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case keepLast = "keep_last", keepWithin = "keep_within", keepNamed = "keep_named"
            case idleTTL = "idle_ttl", retiredTTL = "retired_ttl", losersTTL = "losers_ttl"
        }

        public init(from decoder: any Decoder) throws {
            let c = try RequestKeys.container(decoder, CodingKeys.self)
            keepLast = try c.decodeIfPresent(Int.self, forKey: .keepLast)
            keepWithin = try c.decodeIfPresent(TimeSpan.self, forKey: .keepWithin)
            keepNamed = try c.decodeIfPresent(Bool.self, forKey: .keepNamed)
            idleTTL = try c.decodeIfPresent(TimeSpan.self, forKey: .idleTTL)
            retiredTTL = try c.decodeIfPresent(TimeSpan.self, forKey: .retiredTTL)
            losersTTL = try c.decodeIfPresent(TimeSpan.self, forKey: .losersTTL)
        }

        /// Whether a checkpoint rule is set (without one, every checkpoint stays).
        public var prunesCheckpoints: Bool { keepLast != nil || keepWithin != nil }
    }

    public var branches: [String: BranchRule] = [:]
    public var sessions = SessionRule()
    public var retention = Retention()
    /// Globs of paths that commits, proposals and exports leave out (checkpoints keep them).
    public var neverPersist: [String] = []

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case branches, sessions, retention, neverPersist = "never_persist" }

    public init(from decoder: any Decoder) throws {
        let c = try RequestKeys.container(decoder, CodingKeys.self)
        branches = try c.decodeIfPresent([String: BranchRule].self, forKey: .branches) ?? [:]
        sessions = try c.decodeIfPresent(SessionRule.self, forKey: .sessions) ?? SessionRule()
        retention = try c.decodeIfPresent(Retention.self, forKey: .retention) ?? Retention()
        neverPersist = try c.decodeIfPresent([String].self, forKey: .neverPersist) ?? []
    }

    /// Reads and checks a policy file's text; the whole file is refused at its first problem.
    public static func parse(_ text: String) throws(AetherError) -> Policy {
        let policy: Policy
        do {
            policy = try RequestKeys.decode(Policy.self, text)
        } catch {
            guard case .invalid(let why) = error else { throw error }
            throw .invalid("policy: \(why)")
        }
        for (name, rule) in policy.branches {
            if name != "*" { try Repository.validateName(name, what: "policy branch") }
            if let n = rule.approvals, n < 0 || n > 100 { throw .invalid("policy: branch \(name): approvals must be 0 to 100") }
            for key in rule.requiredMeta ?? [] where key.isEmpty || key.utf8.count > 200 {
                throw .invalid("policy: branch \(name): a required_meta key is 1 to 200 bytes")
            }
        }
        for action in policy.sessions.othersMay where !SessionRule.actions.contains(action) {
            throw .invalid("policy: sessions.others_may: \"\(action)\" is not one of \(SessionRule.actions.joined(separator: ", "))")
        }
        for glob in policy.neverPersist { try PathGlob.check(glob) }
        if let n = policy.retention.keepLast, n < 1 || n > 1_000_000 { throw .invalid("policy: retention.keep_last must be 1 to 1,000,000") }
        return policy
    }

    /// The rule that holds for `branch`: its own over `"*"` over the defaults.
    public func rule(for branch: String) -> BranchRule {
        var r = BranchRule()
        r.requireProposal = false; r.approvals = 1; r.selfApproval = false; r.requiredMeta = []; r.exportRequiresCommit = false
        if let star = branches["*"] { r = star.over(r) }
        if let own = branches[branch] { r = own.over(r) }
        return r
    }

    /// Whether `uid` may do `action` in a session owned by `owner`: the owner and root always; others
    /// when `sessions.others_may` names the action.
    public func mayDrive(_ action: String, uid: UInt32, owner: UInt32) -> Bool {
        uid == 0 || uid == owner || sessions.othersMay.contains(action)
    }

    public var json: String { JSONText.encode(self) }
}

extension Policy {
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(branches, forKey: .branches)
        try c.encode(sessions, forKey: .sessions)
        if retention != Retention() { try c.encode(retention, forKey: .retention) }
        try c.encode(neverPersist, forKey: .neverPersist)
    }
}

/// Globs over a snapshot's paths (relative, `/`-separated): `*`, `?` and `[…]` within a component,
/// `**` for any number of components. A glob without a `/` matches a name at any depth (`.env`); one
/// that matches a directory leaves out everything below it.
public enum PathGlob {
    public static func check(_ glob: String) throws(AetherError) {
        guard !glob.isEmpty, glob.utf8.count <= 1024, !glob.hasPrefix("/") else {
            throw .invalid("policy: never_persist: \"\(glob)\" is not a relative glob of 1 to 1,024 bytes")
        }
        var depth = 0
        for ch in glob {
            if ch == "[" { depth += 1 } else if ch == "]" && depth > 0 { depth -= 1 }
        }
        guard depth == 0 else { throw .invalid("policy: never_persist: \"\(glob)\" has an unclosed '['") }
        for part in glob.split(separator: "/", omittingEmptySubsequences: false) where part.isEmpty {
            throw .invalid("policy: never_persist: \"\(glob)\" has an empty component")
        }
    }

    /// Whether `path` (components) matches `glob`.
    public static func matches(_ glob: String, _ path: [String]) -> Bool {
        var parts = glob.split(separator: "/").map(String.init)
        if parts.count == 1 && parts[0] != "**" { parts = ["**", parts[0]] }
        return match(parts[...], path[...])
    }

    private static func match(_ g: ArraySlice<String>, _ p: ArraySlice<String>) -> Bool {
        guard let first = g.first else { return p.isEmpty }
        if first == "**" {
            var rest = p
            while true {
                if match(g.dropFirst(), rest) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let name = p.first, fnmatch(first, name, 0) == 0 else { return false }
        return match(g.dropFirst(), p.dropFirst())
    }
}

extension Repository {
    /// What an export of `ref` writes under the policy: the snapshot's (or live session's) root less
    /// the never-persist paths, and how many were left out. Work whose base is on a branch whose rule
    /// says `export_requires_commit` is exported only as a commit.
    public func exportable(_ ref: String, root: ObjectID) throws(AetherError) -> (root: ObjectID, withheld: Int) {
        let policy = try policy()
        let snapshot = try? resolveSnapshot(ref, session: nil)
        if snapshot?.kind != .commit {
            let session = try snapshot.map { (s) throws(AetherError) in try domain { try metadata.session(id: s.session) } } ?? (try? self.session(named: ref))
            if let base = session?.baseCommit, let branch = try domain({ try metadata.snapshot(id: base) })?.branch,
               policy.rule(for: branch).exportRequiresCommit == true {
                throw .accessDenied("work on \(branch) is exported only as a commit (policy: export_requires_commit); export a commit of \(branch)")
            }
        }
        return try withholding(root, policy.neverPersist)
    }

    /// `root` without the paths the never-persist `globs` match (a matching directory goes whole), and
    /// how many entries were left out. Unchanged subtrees are remembered, so a second commit of a
    /// slightly changed tree reads only what changed.
    public func withholding(_ root: ObjectID, _ globs: [String]) throws(AetherError) -> (root: ObjectID, withheld: Int) {
        guard !globs.isEmpty else { return (root, 0) }
        return try domain { try withhold(root, globs, path: []) }
    }

    private func withhold(_ id: ObjectID, _ globs: [String], path: [String]) throws -> (root: ObjectID, withheld: Int) {
        let key = WithheldKey(tree: id, path: path, globs: globs)
        if let known = withheldCache.withLock({ $0[key] }) { return known }
        var tree = try content.tree(id)
        var withheld = 0
        var kept: [TreeEntry] = []
        kept.reserveCapacity(tree.entries.count)
        for e in tree.entries {
            let p = path + [String(decoding: e.name, as: UTF8.self)]
            if globs.contains(where: { PathGlob.matches($0, p) }) {
                withheld += 1
                continue
            }
            if e.kind == .directory, let sub = e.content {
                let (subRoot, n) = try withhold(sub, globs, path: p)
                var d = e
                d.content = subRoot
                kept.append(d)
                withheld += n
            } else {
                kept.append(e)
            }
        }
        let result: (root: ObjectID, withheld: Int)
        if withheld == 0 {
            result = (id, 0)
        } else {
            tree.entries = kept
            tree.pages = nil
            result = (try content.putTree(tree), withheld)
        }
        withheldCache.withLock { cache in
            if cache.count > 100_000 { cache.removeAll() }
            cache[key] = result
        }
        return result
    }
}

/// A subtree's never-persist result depends on its id, where it is and the rules.
struct WithheldKey: Hashable {
    let tree: ObjectID
    let path: [String]
    let globs: [String]
}
