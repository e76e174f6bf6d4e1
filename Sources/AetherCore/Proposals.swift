#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import Crypto

/// Puts the session's current state forward for review: it is frozen as a checkpoint, and the
/// proposal is bound to that root.
public struct ProposeRequest: Codable, Sendable, Equatable {
    public var message: String
    public var title: String?
    public var branch: String
    public var meta: [String: String]
    public init(message: String, title: String? = nil, branch: String = "main", meta: [String: String] = [:]) {
        self.message = message; self.title = title; self.branch = branch; self.meta = meta
    }
    enum CodingKeys: String, CodingKey, CaseIterable { case message, title, branch, meta }
    public init(from decoder: any Decoder) throws {
        let c = try RequestKeys.container(decoder, CodingKeys.self)
        message = try c.decode(String.self, forKey: .message)
        title = try c.decodeIfPresent(String.self, forKey: .title)
        branch = try c.decodeIfPresent(String.self, forKey: .branch) ?? "main"
        meta = try c.decodeIfPresent([String: String].self, forKey: .meta) ?? [:]
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(message, forKey: .message)
        try c.encodeIfPresent(title, forKey: .title)
        try c.encode(branch, forKey: .branch)
        if !meta.isEmpty { try c.encode(meta, forKey: .meta) }
    }
}

/// A review as the CLI and the control surface show it.
public struct ReviewInfo: Codable, Equatable, Sendable {
    public var reviewer: UInt32
    public var verdict: String
    public var comment: String
    public var time: String
    public var root: String
    /// Whether it counts under the policy now (an approval of this root by an eligible reviewer).
    public var counts: Bool
}

/// A proposal as the CLI and the control surface show it.
public struct ProposalInfo: Codable, Equatable, Sendable {
    public var id: String
    public var state: String
    public var root: String
    public var session: String
    public var branch: String
    public var title: String
    public var message: String
    public var meta: [String: String]
    public var author: UInt32
    public var checkpoint: String
    public var baseCommit: String?
    public var created: String
    public var writers: [UInt32]
    /// Approvals that count, and how many the branch's rule asks.
    public var approvals: Int
    public var approvalsNeeded: Int
    public var reviews: [ReviewInfo]

    enum CodingKeys: String, CodingKey {
        case id, state, root, session, branch, title, message, meta, author, checkpoint, baseCommit = "base_commit", created, writers
        case approvals, approvalsNeeded = "approvals_needed", reviews
    }
}

extension Workspace {
    /// Freezes the session's state as a checkpoint and records a proposal of it for `request.branch`.
    func propose(_ request: ProposeRequest, caller: UInt32) throws(AetherError) -> ProposalRecord {
        try authorize(caller, "propose")
        let message = try Workspace.validateRecord(message: request.message, meta: request.meta, what: "a proposal")
        try Repository.validateName(request.branch, what: "branch")
        let title = (request.title ?? String(message.split(separator: "\n").first ?? "")).trimmingWhitespace()
        guard title.utf8.count <= 200 else { throw .invalid("a proposal's title is at most 200 bytes") }
        let policy = try repo.policy()
        try Repository.requireMeta(request.meta, policy.rule(for: request.branch), what: "a proposal to \(request.branch)")
        var writers = try domain { try metadata.writers(session: session.id) }
        for uid in writersUnrecorded.sorted() where !writers.contains(uid) { writers.append(uid) }
        if !writers.contains(caller) { writers.append(caller) }
        var made: ProposalRecord?
        let base = session.baseCommit
        _ = try checkpoint(CheckpointRequest(message: "proposal: \(message)", meta: request.meta), author: caller) { (snapshot) throws(AetherError) in
            // The checkpoint keeps every path; the proposal (and so its commit) leaves out what the
            // policy never persists.
            let (root, withheld) = try self.repo.withholding(snapshot.root, policy.neverPersist)
            var meta = request.meta
            if withheld > 0 { meta["withheld"] = String(withheld) }
            var p = ProposalRecord(pid: Workspace.newSnapshotID(), session: self.session.id, author: caller, branch: request.branch,
                                   root: root, snapshot: snapshot.id, baseCommit: base, title: title, message: message,
                                   meta: meta, writers: writers.sorted())
            try domain {
                p.id = try self.metadata.insertProposal(p)
                try self.metadata.audit(uid: caller, action: "propose", session: self.session.name, detail: "\(p.pid) \(request.branch) \(snapshot.root.hex)")
            }
            made = p
        }
        guard let made else { throw .failed("propose: the checkpoint wrote no proposal") }
        return made
    }

    /// Commits an approved proposal's frozen root (not the live tree) to its branch, as a fast-forward
    /// from the proposal's base; the commit carries the proposal's id, its approvals and metadata.
    func commit(proposal ref: String, request: CommitRequest, author: UInt32, promoting: [SessionRecord]? = nil) throws(AetherError) -> SnapshotRecord {
        try repo.writing { () throws(AetherError) in try commitWriting(proposal: ref, request: request, author: author, promoting: promoting) }
    }

    private func commitWriting(proposal ref: String, request: CommitRequest, author: UInt32, promoting: [SessionRecord]?) throws(AetherError) -> SnapshotRecord {
        let p = try repo.resolveProposal(ref)
        guard p.session == session.id else {
            throw .invalid("proposal \(p.pid) is of another session; commit it there (aetherfs commit --proposal \(p.pid))")
        }
        if request.branch != CommitRequest.defaultBranch && request.branch != p.branch {
            throw .invalid("proposal \(p.pid) is for branch \(p.branch), not \(request.branch)")
        }
        let rule = try repo.policy().rule(for: p.branch)
        try repo.mayCommit(author, rule: rule, branch: p.branch)
        guard p.state == .approved else {
            throw .accessDenied("proposal \(p.pid) is \(p.state.rawValue); only an approved proposal is committed")
        }
        let approvals = try repo.countingApprovals(p, rule: rule)
        guard approvals.count >= rule.approvals ?? 1 else {
            throw .accessDenied("proposal \(p.pid) has \(approvals.count) approval(s) that count under the policy of \(p.branch); it needs \(rule.approvals ?? 1)")
        }
        let message = request.message.isEmpty ? p.message : try Workspace.validateRecord(message: request.message, meta: request.meta, what: "a commit")
        var meta = p.meta.merging(request.meta) { _, new in new }
        meta["proposal"] = p.pid
        meta["approved_by"] = approvals.map { "uid:\($0)" }.joined(separator: ",")
        try Repository.requireMeta(meta, rule, what: "a commit to \(p.branch)")
        let head = try domain { try metadata.branch(p.branch) }
        if head != p.baseCommit {
            throw .branchMoved("branch \(p.branch) moved since proposal \(p.pid) was made; propose again from its head")
        }
        let sid = Workspace.newSnapshotID()
        let record = try changeAndRecord(durable: true) { () throws(AetherError) -> SnapshotRecord in
            let record = try repo.publish(
                SnapshotRecord(sid: sid, kind: .commit, session: session.id, name: "\(p.branch)/\(sid)", root: p.root,
                               parent: head, time: secondsNow(), author: author, message: message, meta: meta,
                               filesChanged: 0, bytesAdded: 0, branch: p.branch),
                on: p.branch, from: head)
            try domain {
                guard try metadata.setProposalState(p.id, from: .approved, to: .committed) else {
                    throw AetherError.busy("proposal \(p.pid) changed while it was being committed")
                }
                try metadata.setBaseCommit(session: session.id, record.id)
                try metadata.resetWriters(session: session.id)
            }
            try recordCommit(record, author: author, detail: "\(p.branch) \(sid) proposal \(p.pid)", promoting: promoting)
            return record
        }
        session.baseCommit = record.id
        writersNoted = []
        writersUnrecorded = []
        return record
    }
}

extension Repository {
    /// The store's policy (the default when none was set).
    public func policy() throws(AetherError) -> Policy {
        guard let text = try domain({ try metadata.policyText() }) else { return Policy() }
        do {
            return try Policy.parse(text)
        } catch {
            throw .damaged("the store's policy does not parse (\(error.description)); set it again with aetherfs policy set")
        }
    }

    /// The uid that owns the store's directory: with root, the only one who may change its policy.
    public var ownerUID: UInt32 {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_uid : 0
    }

    /// Replaces the store's policy with `text` (checked whole first). Audited, refusals too.
    public func setPolicy(_ text: String, uid: UInt32) throws(AetherError) -> Policy {
        try audited(uid: uid, action: "policy-set", session: "", detail: "") { () throws(AetherError) -> Policy in
            guard uid == 0 || uid == ownerUID else {
                throw .accessDenied("only the store's owner (uid \(ownerUID)) and root may change its policy")
            }
            let policy = try Policy.parse(text)
            try domain {
                try transaction(durable: true) {
                    try metadata.setPolicyText(policy.json)
                    try metadata.audit(uid: uid, action: "policy-set", session: "", detail: policy.json)
                }
            }
            return policy
        }
    }

    /// Runs `body`; when it fails, the refusal is recorded in the audit log before the error goes on.
    public func audited<T>(uid: UInt32, action: String, session: String, detail: String, _ body: () throws(AetherError) -> T) throws(AetherError) -> T {
        do {
            return try body()
        } catch {
            try? metadata.audit(uid: uid, action: action, session: session, detail: detail, result: "refused: \(error.description)")
            throw error
        }
    }

    /// Who may do `action` in session `s`: its owner and root, and others the policy lets.
    public func authorize(_ uid: UInt32, _ action: String, in s: SessionRecord) throws(AetherError) {
        if uid == 0 || uid == s.owner { return }
        guard try policy().mayDrive(action, uid: uid, owner: s.owner) else {
            throw .accessDenied("only the owner of session \(s.name) (uid \(s.owner)) and root may \(action) in it, not uid \(uid) (the policy's sessions.others_may can allow it)")
        }
    }

    /// Whether `uid` may commit to `branch` under `rule`.
    func mayCommit(_ uid: UInt32, rule: Policy.BranchRule, branch: String) throws(AetherError) {
        if let committers = rule.committers, !committers.contains(where: { $0.includes(uid) }) {
            throw .accessDenied("uid \(uid) may not commit to \(branch) (policy: committers \(committers.map(\.text).joined(separator: ", ")))")
        }
    }

    /// A commit or proposal without a key the branch's rule requires is refused, naming the key.
    static func requireMeta(_ meta: [String: String], _ rule: Policy.BranchRule, what: String) throws(AetherError) {
        for key in rule.requiredMeta ?? [] where (meta[key] ?? "").isEmpty {
            throw .invalid("\(what) needs the metadata key \"\(key)\" (policy: required_meta); add --meta \(key)=VALUE")
        }
    }

    /// A proposal by its id, or a unique prefix of it (4 or more hex digits).
    public func resolveProposal(_ ref: String) throws(AetherError) -> ProposalRecord {
        let ref = ref.trimmingWhitespace().lowercased()
        guard ref.count >= 4, ref.allSatisfy(\.isHexDigit) else { throw .invalid("a proposal id is 4 to 16 hex digits, not \"\(ref)\"") }
        let found = try domain { try metadata.proposals(pidPrefix: ref) }
        if found.count > 1 { throw .invalid("proposal id \(ref) is ambiguous (\(found.count) match)") }
        guard let p = found.first else { throw .notFound("proposal \(ref)") }
        return p
    }

    /// Whether `uid` may review `p` under `rule`: not its author nor a uid that wrote to its session
    /// (unless self-approval is allowed), and one of the rule's reviewers when it names them.
    func mayReview(_ uid: UInt32, _ p: ProposalRecord, rule: Policy.BranchRule) -> String? {
        if rule.selfApproval != true {
            if uid == p.author { return "uid \(uid) wrote proposal \(p.pid); another uid must review it (policy: self_approval is off)" }
            if p.writers.contains(uid) { return "uid \(uid) changed files of the proposal's session; another uid must review it (policy: self_approval is off)" }
        }
        if let reviewers = rule.reviewers, !reviewers.contains(where: { $0.includes(uid) }) {
            return "uid \(uid) is not a reviewer of \(p.branch) (policy: reviewers \(reviewers.map(\.text).joined(separator: ", ")))"
        }
        return nil
    }

    /// The uids whose approvals of `p` count now: approvals of its root by eligible reviewers, each once.
    func countingApprovals(_ p: ProposalRecord, rule: Policy.BranchRule) throws(AetherError) -> [UInt32] {
        var out: [UInt32] = []
        for r in try domain({ try metadata.reviews(proposal: p.id) })
        where r.verdict == .approve && r.root == p.root && mayReview(r.reviewer, p, rule: rule) == nil && !out.contains(r.reviewer) {
            out.append(r.reviewer)
        }
        return out
    }

    /// Records a review of a proposal, bound to its root. A rejection rejects it; enough approvals
    /// (the branch's rule) approve it. Only open or approved proposals are reviewed.
    /// With `key`, the review is signed (see `Approvals`).
    public func review(_ ref: String, approve: Bool, comment: String, reviewer: UInt32,
                       key: Curve25519.Signing.PrivateKey? = nil) throws(AetherError) -> ProposalRecord {
        try audited(uid: reviewer, action: "review", session: "", detail: "\(ref) \(approve ? "approve" : "reject")") { () throws(AetherError) in
            let p = try resolveProposal(ref)
            guard comment.utf8.count <= Workspace.maxMessage else { throw .invalid("a review's comment is at most \(Workspace.maxMessage) bytes") }
            guard p.state == .open || p.state == .approved else { throw .invalid("proposal \(p.pid) is \(p.state.rawValue); it takes no reviews") }
            let rule = try policy().rule(for: p.branch)
            if let why = mayReview(reviewer, p, rule: rule) { throw .accessDenied(why) }
            let sessionName = (try? metadata.session(id: p.session))??.name ?? ""
            let verdict: ReviewRecord.Verdict = approve ? .approve : .reject
            let envelope = try key.map { (k) throws(AetherError) in try Approvals.sign(p, verdict: verdict, reviewer: reviewer, key: k) } ?? ""
            var updated = p
            try domain {
                try transaction(durable: true) {
                    _ = try metadata.insertReview(ReviewRecord(proposal: p.id, reviewer: reviewer, verdict: verdict,
                                                               comment: comment, root: p.root, envelope: envelope))
                    var next = p.state
                    if !approve {
                        next = .rejected
                    } else if try countingApprovals(p, rule: rule).count >= rule.approvals ?? 1 {
                        next = .approved
                    }
                    if next != p.state {
                        guard try metadata.setProposalState(p.id, from: p.state, to: next) else {
                            throw AetherError.busy("proposal \(p.pid) changed while it was being reviewed")
                        }
                        updated.state = next
                    }
                    try metadata.audit(uid: reviewer, action: "review", session: sessionName,
                                       detail: "\(p.pid) \(approve ? "approve" : "reject") \(p.root.hex) \(comment)")
                }
            }
            return updated
        }
    }

    /// Withdraws a proposal: its author (or root) only, while it is open or approved.
    public func withdraw(_ ref: String, uid: UInt32) throws(AetherError) -> ProposalRecord {
        try audited(uid: uid, action: "withdraw", session: "", detail: ref) { () throws(AetherError) in
            var p = try resolveProposal(ref)
            guard uid == 0 || uid == p.author else { throw .accessDenied("only proposal \(p.pid)'s author (uid \(p.author)) may withdraw it") }
            guard p.state == .open || p.state == .approved else { throw .invalid("proposal \(p.pid) is \(p.state.rawValue); it cannot be withdrawn") }
            let sessionName = (try? metadata.session(id: p.session))??.name ?? ""
            try domain {
                try transaction(durable: true) {
                    guard try metadata.setProposalState(p.id, from: p.state, to: .withdrawn) else {
                        throw AetherError.busy("proposal \(p.pid) changed while it was being withdrawn")
                    }
                    try metadata.audit(uid: uid, action: "withdraw", session: sessionName, detail: p.pid)
                }
            }
            p.state = .withdrawn
            return p
        }
    }

    /// A proposal with its reviews, as shown.
    public func info(_ p: ProposalRecord) throws(AetherError) -> ProposalInfo {
        let rule = try policy().rule(for: p.branch)
        let counting = try countingApprovals(p, rule: rule)
        let reviews = try domain { try metadata.reviews(proposal: p.id) }
        let sid = { (id: Int64?) throws(AetherError) -> String? in try id.flatMap { (i) throws(AetherError) in try domain { try self.metadata.snapshot(id: i) }?.sid } }
        return ProposalInfo(
            id: p.pid, state: p.state.rawValue, root: p.root.hex, session: try domain { try metadata.session(id: p.session) }?.name ?? "",
            branch: p.branch, title: p.title, message: p.message, meta: p.meta, author: p.author, checkpoint: try sid(p.snapshot) ?? "",
            baseCommit: try sid(p.baseCommit), created: isoTime(p.created), writers: p.writers, approvals: counting.count,
            approvalsNeeded: rule.approvals ?? 1,
            reviews: reviews.map {
                ReviewInfo(reviewer: $0.reviewer, verdict: $0.verdict.rawValue, comment: $0.comment, time: isoTime($0.time), root: $0.root.hex,
                           counts: $0.verdict == .approve && $0.root == p.root && counting.contains($0.reviewer))
            })
    }
}
