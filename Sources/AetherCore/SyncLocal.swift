#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

/// This machine's store as one side of a sync; `aetherfs serve` answers for it too.
public final class LocalPeer: SyncPeer, @unchecked Sendable {
    public let repo: Repository
    /// Guarded by `lock`.
    private var lease: Int64?
    private let lock = Lock()

    public init(_ repo: Repository) { self.repo = repo }

    public func missing(_ ids: [ObjectID]) throws(AetherError) -> [ObjectID] { try domain { try repo.objects.missing(of: ids) } }

    public func stored(_ ids: [ObjectID]) throws(AetherError) -> [[UInt8]] {
        if let absent = try missing(ids).first { throw .notFound("object \(absent.hex) in the store") }
        return try domain { try ids.map { try repo.objects.stored($0) } }
    }

    public func receive(_ objects: [(ObjectID, [UInt8])]) throws(AetherError) {
        try repo.ensureRoom(for: objects.reduce(0) { $0 + $1.1.count })
        for (id, file) in objects {
            // Verified before it is stored; what it names must be here already (so the store stays
            // closed: nothing in it refers to an object it lacks).
            let decoded = try domain { try ObjectStore.decode(file, id: id, expecting: nil) }
            var named: [ObjectID] = []
            func children(_ entries: [TreeEntry]) -> [ObjectID] {
                entries.compactMap { $0.kind == .directory || $0.kind == .file ? $0.content : nil }
            }
            switch decoded.kind {
            case .chunk: break
            case .manifest:
                named = try domain { try Manifest.decode(decoded.content) }.chunks.map(\.id).filter { $0 != Manifest.hole }
            case .tree:
                // A tree (naming its pages and entries) or a page of one (naming its entries).
                if Tree.isPage(decoded.content) {
                    named = children(try domain { try Tree.decodePageEntries(decoded.content) })
                } else {
                    let tree = try domain { try Tree.decode(decoded.content) }
                    named = (tree.pages ?? []).map(\.id) + children(tree.entries)
                }
            }
            if !named.isEmpty, let absent = try missing(Array(Set(named))).first {
                throw .invalid("object \(id.hex) names \(absent.hex), which this store lacks: objects must come after what they name")
            }
            _ = try domain { try repo.objects.putStored(id, file) }
        }
    }

    public func branch(_ name: String) throws(AetherError) -> (head: String, commits: [SyncSnapshot])? {
        guard let head = try domain({ try repo.metadata.branch(name) }), let record = try domain({ try repo.metadata.snapshot(id: head) }) else { return nil }
        return (record.sid, try repo.history(record.sid, limit: Int.max).map { (s) throws(AetherError) in try travelling(s) })
    }

    public func session(_ name: String) throws(AetherError) -> SyncSession? {
        guard let s = try domain({ try repo.metadata.session(named: name) }) else { return nil }
        func sid(_ id: Int64?) throws(AetherError) -> String? { try id.flatMap { (i) throws(AetherError) in try domain { try repo.metadata.snapshot(id: i) }?.sid } }
        return SyncSession(name: s.name, owner: s.owner, state: s.state, created: s.created, baseRoot: s.baseRoot.hex,
                           baseSnapshot: try sid(s.baseSnapshot), head: try sid(s.head), baseCommit: try sid(s.baseCommit),
                           parent: try s.parentSession.flatMap { (p) throws(AetherError) in try domain { try repo.metadata.session(id: p) }?.name },
                           checkpoints: try repo.checkpoints(of: s).map { (c) throws(AetherError) in try travelling(c) })
    }

    public func knownSnapshots(_ sids: [String]) throws(AetherError) -> Set<String> {
        var known = Set<String>()
        for sid in sids where try record(sid) != nil { known.insert(sid) }
        return known
    }

    public func beginReceiving() throws(AetherError) {
        let id = try domain { try repo.metadata.beginWrite(WriteLease(host: SessionLock.thisHost, pid: getpid(), started: secondsNow())) }
        lock.withLock { lease = id }
    }

    public func endReceiving() {
        if let id = lock.withLock({ () -> Int64? in defer { lease = nil }; return lease }) { try? repo.metadata.endWrite(id) }
    }

    public func apply(_ records: SyncRecords, caller: UInt32) throws(AetherError) {
        let policy = try repo.policy()
        for b in records.branches { try repo.mayCommit(caller, rule: policy.rule(for: b.name), branch: b.name) }
        // What the records name is here (and, the store being closed, all below it), durably.
        var roots: [ObjectID] = []
        for s in records.sessions { roots += try ([s.baseRoot] + s.checkpoints.map(\.root)).map(Self.id) }
        for b in records.branches { roots += try b.commits.map(\.root).map(Self.id) }
        if let absent = try missing(roots).first { throw .invalid("root \(absent.hex) is not here: send its objects first") }
        try domain { try repo.objects.sync() }
        for s in records.sessions {
            if let held = try domain({ try repo.metadata.session(named: s.name) }), repo.holder(of: held) != nil {
                throw .busy("session \(s.name) is in use on the receiver; unmount it first")
            }
        }
        try domain {
            try repo.transaction(durable: true) {
                for s in records.sessions { try receiveSession(s, force: records.force, caller: caller) }
                for b in records.branches { try receiveBranch(b, force: records.force, caller: caller) }
            }
        }
    }

    // MARK: receiving, inside the transaction

    private func receiveBranch(_ b: SyncBranch, force: Bool, caller: UInt32) throws {
        try Repository.validateName(b.name, what: "branch")
        let current = try repo.metadata.branch(b.name)
        let currentSid = try current.flatMap { try repo.metadata.snapshot(id: $0) }?.sid
        if currentSid != b.expected && !force {
            throw AetherError.branchMoved("branch \(b.name) is at \(currentSid ?? "nothing") here, not \(b.expected ?? "nothing") as the sender saw it: pull first, or --force")
        }
        for c in b.commits where try record(c.sid) == nil { _ = try insert(c, session: nil) }
        guard let head = try record(b.head) else { throw AetherError.invalid("branch \(b.name)'s head \(b.head) did not arrive") }
        if let current, !force {
            // A fast-forward: the new head descends from the current one.
            var at: SnapshotRecord? = head
            while let s = at, s.id != current { at = try s.parent.flatMap { try repo.metadata.snapshot(id: $0) } }
            guard at != nil else { throw AetherError.branchMoved("branch \(b.name): \(b.head) does not descend from \(currentSid ?? "") here; --force replaces it") }
        }
        if let current {
            guard try repo.metadata.moveBranch(b.name, from: current, to: head.id) else { throw AetherError.branchMoved("branch \(b.name) moved meanwhile") }
        } else {
            try repo.metadata.createBranch(b.name, head: head.id)
        }
        try repo.metadata.audit(uid: caller, action: "sync", session: "", detail: "branch \(b.name) \(currentSid ?? "-") -> \(b.head)\(force ? " --force" : "")")
    }

    private func receiveSession(_ s: SyncSession, force: Bool, caller: UInt32) throws {
        try Repository.validateName(s.name, what: "session")
        let baseRoot = try Self.id(s.baseRoot)
        var session: SessionRecord
        if let existing = try repo.metadata.session(named: s.name) {
            let incoming = Set(s.checkpoints.map(\.sid))
            let own = try repo.metadata.checkpoints(session: existing.id)
            if !force, let extra = own.first(where: { !incoming.contains($0.sid) }) {
                throw AetherError.exists("session \(s.name) here has checkpoint \(extra.name) (\(extra.sid)) the sender lacks: it diverged; --force replaces it")
            }
            if !force && existing.baseRoot != own.last?.root && existing.baseRoot != baseRoot && !own.isEmpty {
                throw AetherError.exists("session \(s.name) here has work of its own since its last checkpoint; --force replaces it")
            }
            session = existing
        } else {
            let parent = try s.parent.flatMap { try repo.metadata.session(named: $0) }?.id
            session = SessionRecord(name: s.name, baseRoot: baseRoot, baseSnapshot: nil, parentSession: parent, owner: s.owner,
                                    state: s.state, created: s.created)
            session.id = try repo.metadata.insertSession(session)
        }
        for c in s.checkpoints where try record(c.sid) == nil { _ = try insert(c, session: session.id) }
        try repo.working.clearWorkingLayer(session: session.id, base: baseRoot)
        try repo.metadata.updateSessionBase(session.id, baseRoot: baseRoot, baseSnapshot: try s.baseSnapshot.flatMap { try self.record($0) }?.id,
                                            head: try s.head.flatMap { try self.record($0) }?.id)
        try repo.metadata.setBaseCommit(session: session.id, try s.baseCommit.flatMap { try self.record($0) }?.id)
        if session.state != s.state { try repo.metadata.setSessionState(session.id, s.state) }
        try repo.metadata.audit(uid: caller, action: "sync", session: s.name, detail: "\(s.checkpoints.count) checkpoint(s), base \(s.baseRoot)")
    }

    private func insert(_ c: SyncSnapshot, session: Int64?) throws -> Int64 {
        guard let kind = SnapshotKind(rawValue: c.kind) else { throw AetherError.invalid("snapshot \(c.sid) has kind \"\(c.kind)\"") }
        guard c.sid.utf8.count == 16, c.sid.allSatisfy(\.isHexDigit) else { throw AetherError.invalid("snapshot id \"\(c.sid)\" is not 16 hex digits") }
        let parent = try c.parent.flatMap { try record($0) }?.id
        let owner = try session ?? c.session.flatMap { try repo.metadata.session(named: $0) }?.id ?? 0
        return try repo.metadata.insertSnapshot(SnapshotRecord(sid: c.sid, kind: kind, session: owner, name: c.name, root: try Self.id(c.root), parent: parent,
                                                               time: c.time, author: c.author, message: c.message, meta: c.meta,
                                                               filesChanged: c.filesChanged, bytesAdded: c.bytesAdded, branch: c.branch))
    }

    private func record(_ sid: String) throws(AetherError) -> SnapshotRecord? {
        try domain { try repo.metadata.snapshots(sidPrefix: sid) }.first { $0.sid == sid }
    }

    private func travelling(_ s: SnapshotRecord) throws(AetherError) -> SyncSnapshot {
        SyncSnapshot(sid: s.sid, kind: s.kind.rawValue, name: s.name, root: s.root.hex,
                     parent: try s.parent.flatMap { (p) throws(AetherError) in try domain { try repo.metadata.snapshot(id: p) }?.sid },
                     time: s.time, author: s.author, message: s.message, meta: s.meta, filesChanged: s.filesChanged,
                     bytesAdded: s.bytesAdded, branch: s.branch,
                     session: try domain { try repo.metadata.session(id: s.session) }?.name)
    }

    static func id(_ hex: String) throws(AetherError) -> ObjectID {
        guard let id = ObjectID(hex: hex) else { throw .invalid("\"\(hex)\" is not an object id") }
        return id
    }
}
