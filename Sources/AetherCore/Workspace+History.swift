#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

/// What a commit request carries.
extension Workspace {
    /// Until a store has a policy, only the session's owner and root may drive it (checkpoint, restore,
    /// fork, commit); anyone else is `.accessDenied`, whichever route the request came by.
    /// Notes that `uid` changed the session's files: recorded once per uid (until a commit forgets
    /// them), for the four-eyes rule of reviews.
    ///
    /// A file's change does not wait for the shared metadata: when it cannot be reached (PostgreSQL
    /// down), the uid is kept here (`writersUnrecorded`), tried again at its next change, and counted
    /// by a proposal made meanwhile.
    public func noteWriter(_ uid: UInt32) throws(AetherError) {
        guard !writersNoted.contains(uid) else { return }
        do {
            try metadata.addWriter(session: session.id, uid: uid)
            writersNoted.insert(uid)
            writersUnrecorded.remove(uid)
        } catch {
            if writersUnrecorded.insert(uid).inserted {
                logger.notice("session \(session.name): uid \(uid) is not yet recorded as a writer (\(error)); kept until it can be")
            }
        }
    }

    /// Who may do `action` in this session: its owner and root, and others the store's policy lets.
    public func authorize(_ uid: UInt32, _ action: String) throws(AetherError) { try repo.authorize(uid, action, in: session) }

    /// The limits of what a checkpoint or commit records, one set for every route (control files,
    /// xattrs, the CLI mounted or not): a message of 1 byte to 8 KiB after trimming, metadata keys of
    /// 1–200 bytes, at most 8 KiB of metadata: escaped as JSON, both fit in one control request.
    /// Returns the trimmed message.
    public static let maxMessage = 8 * 1024, maxMeta = 8 * 1024
    public static func validateRecord(message: String, meta: [String: String], what: String) throws(AetherError) -> String {
        let message = message.trimmingWhitespace()
        guard !message.isEmpty else { throw .invalid("\(what) needs a non-empty message") }
        guard message.utf8.count <= maxMessage else {
            throw .invalid("the message is \(message.utf8.count) bytes; messages are at most \(maxMessage)")
        }
        for key in meta.keys where key.isEmpty || key.utf8.count > 200 { throw .invalid("metadata keys must be 1-200 bytes") }
        let size = meta.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        guard size <= maxMeta else { throw .invalid("the metadata is \(size) bytes; at most \(maxMeta)") }
        return message
    }

    /// Creates a new session from this one's current state, or from one of its checkpoints (`at`).
    ///
    /// The new session shares every object: its cost is that of writing what changed since the last
    /// checkpoint, never the tree's size. This session keeps working undisturbed.
    public func fork(name: String, at: String? = nil, owner: UInt32) throws(AetherError) -> SessionRecord {
        try authorize(owner, "fork")
        try Repository.validateName(name, what: "session")
        if try domain({ try metadata.session(named: name) }) != nil { throw .exists("session \(name)") }
        let parent = session.id, baseCommit = session.baseCommit
        let insert = { (root: ObjectID, snapshot: Int64?) throws(AetherError) -> SessionRecord in
            var record = SessionRecord(name: name, baseRoot: root, baseSnapshot: snapshot, parentSession: parent, owner: owner,
                                       baseCommit: baseCommit)
            try domain {
                record.id = try self.metadata.insertSession(record)
                try self.metadata.audit(uid: owner, action: "fork", session: self.session.name, detail: "\(name)\(at.map { "@\($0)" } ?? "")")
            }
            return record
        }
        var made: SessionRecord?
        if let at {
            let snapshot = try repo.resolveSnapshot(at, session: session)
            try changeAndRecord(durable: true) { () throws(AetherError) in made = try insert(snapshot.root, snapshot.id) }
        } else {
            _ = try freeze { (root, _) throws(AetherError) in made = try insert(root, session.head) }
        }
        guard let made else { throw .failed("fork \(name): no session record was written") }
        return made
    }

    /// Records the current state as a commit on `branch`, which moves only as a fast-forward from the
    /// commit this session builds on; otherwise `.branchMoved`, and nothing changes.
    /// With `promoting`, the sibling forks it names are retired and this session marked the winner in
    /// the commit's own transaction, which one `promote` audit entry records.
    public func commit(_ request: CommitRequest, author: UInt32, promoting: [SessionRecord]? = nil) throws(AetherError) -> SnapshotRecord {
        try authorize(author, "commit")
        if let proposal = request.proposal { return try commit(proposal: proposal, request: request, author: author, promoting: promoting) }
        let message = try Workspace.validateRecord(message: request.message, meta: request.meta, what: "a commit")
        try Repository.validateName(request.branch, what: "branch")
        let branch = request.branch
        let rule = try repo.policy().rule(for: branch)
        try repo.mayCommit(author, rule: rule, branch: branch)
        if rule.requireProposal == true {
            throw .accessDenied("a commit to \(branch) must be of an approved proposal (policy: require_proposal): aetherfs propose, a review by another uid, then aetherfs commit --proposal ID")
        }
        try Repository.requireMeta(request.meta, rule, what: "a commit to \(branch)")
        let head = try domain { try metadata.branch(branch) }
        if let head, head != session.baseCommit {
            throw .branchMoved("branch \(branch) moved since this session's base; start a session from \(branch) and redo the change")
        }
        let headRecord = try head.flatMap { (id) throws(AetherError) in try domain { try metadata.snapshot(id: id) } }
        let sid = Workspace.newSnapshotID()
        let time = secondsNow()
        var made: SnapshotRecord?
        let neverPersist = try repo.policy().neverPersist
        var meta = request.meta
        _ = try freeze { (frozen, stats) throws(AetherError) in
            // The session keeps every path; the commit leaves out what the policy never persists.
            let (root, withheld) = try repo.withholding(frozen, neverPersist)
            if withheld > 0 { meta["withheld"] = String(withheld) }
            if let headRecord, headRecord.root == root, !request.allowEmpty {
                throw .invalid("nothing to commit: the state is identical to \(branch)'s head (use --allow-empty)")
            }
            let record = try repo.publish(
                SnapshotRecord(sid: sid, kind: .commit, session: session.id, name: "\(branch)/\(sid)", root: root,
                               parent: head, time: time, author: author, message: message, meta: meta,
                               filesChanged: stats.files, bytesAdded: stats.bytes, branch: branch),
                on: branch, from: head)
            try domain {
                try metadata.setBaseCommit(session: session.id, record.id)
                try metadata.resetWriters(session: session.id)
            }
            try recordCommit(record, author: author, detail: "\(branch) \(sid)", promoting: promoting)
            writersNoted = []
            writersUnrecorded = []
            session.baseCommit = record.id
            made = record
        }
        guard let made else { throw .failed("commit to \(branch): the freeze wrote no record") }
        return made
    }
}

extension Workspace {
    /// A commit's audit entry, or (promoting) the retirement of the sibling forks with one `promote` entry.
    func recordCommit(_ record: SnapshotRecord, author: UInt32, detail: String, promoting: [SessionRecord]?) throws(AetherError) {
        try domain {
            guard let siblings = promoting else {
                try metadata.audit(uid: author, action: "commit", session: session.name, detail: detail)
                return
            }
            for s in siblings { try metadata.setSessionState(s.id, SessionRecord.retired) }
            try metadata.setSessionState(session.id, SessionRecord.won)
            try metadata.audit(uid: author, action: "promote", session: session.name,
                               detail: "\(detail) retired \(siblings.map(\.name).joined(separator: ","))")
        }
        if promoting != nil { session.state = SessionRecord.won }
    }

    /// Commits this fork and retires its siblings (the forks of the same parent that build on the same
    /// commit) in one step: the winner is persisted, the rest stay readable until retention removes them.
    func promote(_ request: CommitRequest, caller: UInt32) throws(AetherError) -> SnapshotRecord {
        guard let parent = session.parentSession else {
            throw .invalid("session \(session.name) is not a fork; promote picks one of a session's forks")
        }
        let siblings = try domain { try metadata.sessions() }.filter {
            $0.parentSession == parent && $0.id != session.id && !$0.isRetired && $0.baseCommit == session.baseCommit
        }
        for s in siblings where repo.holder(of: s) != nil {
            throw .busy("fork \(s.name) is in use (mounted?); unmount it before promoting \(session.name)")
        }
        var r = request
        if !siblings.isEmpty { r.meta["promoted_over"] = siblings.map(\.name).joined(separator: ",") }
        return try commit(r, author: caller, promoting: siblings)
    }

    /// Whether a node changed since the last checkpoint, fork or commit: `new`, `modified` or `clean`.
    public func state(_ ino: UInt64) throws(AetherError) -> String {
        let n = try node(ino)
        if !n.rec.dirty { return "clean" }
        return n.rec.content == nil ? "new" : "modified"
    }

    /// A file's content hash: the id of the manifest a checkpoint would record. Written files are cut
    /// into chunks to know it (their chunks are stored, as a checkpoint would).
    public func digest(_ ino: UInt64) throws(AetherError) -> ObjectID {
        let n = try node(ino)
        guard n.kind == .file else { throw .noAttribute }
        if n.rec.upper && (n.rec.dirty || n.rec.content == nil) {
            let fd = try upperDescriptor(n)
            defer { if n.opens == 0 { close(fd); n.fd = -1 } }
            return try domain { try repo.content.ingest(FileBytes(fd: fd), size: n.rec.size) }.manifest
        }
        if let id = n.contentID { return id }
        return try domain { try repo.content.emptyManifest() }
    }

    /// The branch this session's base commit is on, if it builds on one.
    public func baseBranch() throws(AetherError) -> String? {
        guard let id = session.baseCommit else { return nil }
        return try domain { try metadata.snapshot(id: id) }?.branch
    }
}
