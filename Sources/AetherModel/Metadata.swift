#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The metadata that several hosts will share (later in PostgreSQL): sessions, snapshot records,
/// branches, which move only by compare-and-swap, and the audit log. A backend implements this and
/// passes the conformance tests; the core knows nothing else of it. Errors are `MetadataError`s or the
/// backend's own (which the core reports as I/O errors).
public protocol MetadataStore: AnyObject, Sendable {
    /// Runs `body` in one transaction: all of its changes or none. `durable` returns only once they are
    /// on disk. Transactions do not nest.
    func transaction<T>(durable: Bool, _ body: () throws -> T) throws -> T

    /// Adds a session (its `id` is ignored) and returns its id; a taken name is a `conflict`.
    func insertSession(_ s: SessionRecord) throws -> Int64
    func session(named name: String) throws -> SessionRecord?
    func session(id: Int64) throws -> SessionRecord?
    /// A session, read to be changed: inside a transaction, another host's change of it waits until
    /// this transaction ends (a base compared, then moved, is one step).
    func sessionForUpdate(id: Int64) throws -> SessionRecord?
    /// Every session, oldest first.
    func sessions() throws -> [SessionRecord]
    /// Points a session at a new base (a checkpoint or restore) and marks it used now.
    func updateSessionBase(_ id: Int64, baseRoot: ObjectID, baseSnapshot: Int64?, head: Int64?) throws
    /// The tree a session's working layer lies over.
    func setSessionRoot(_ id: Int64, baseRoot: ObjectID) throws
    func setNextIno(_ id: Int64, _ next: UInt64) throws
    func setBaseCommit(session: Int64, _ commit: Int64?) throws
    /// Marks a session used now.
    func touchSession(_ id: Int64) throws
    /// Sets a session's state (`active`, `won`, `retired`); the change marks it used now (retention
    /// counts a retired session's time from its retirement).
    func setSessionState(_ id: Int64, _ state: String) throws
    /// Removes a session's record; its snapshots stay.
    func deleteSession(_ id: Int64) throws

    /// Adds a snapshot (its `id` is ignored) and returns its id: ids only grow. A display id or a
    /// (session, kind, name) already taken is a `conflict`.
    func insertSnapshot(_ s: SnapshotRecord) throws -> Int64
    func snapshot(id: Int64) throws -> SnapshotRecord?
    /// The session's checkpoints, oldest first.
    func checkpoints(session: Int64) throws -> [SnapshotRecord]
    /// Every snapshot whose display id starts with `prefix`, oldest first.
    func snapshots(sidPrefix prefix: String) throws -> [SnapshotRecord]
    /// Snapshots of one kind, newest first.
    func snapshots(kind: SnapshotKind) throws -> [SnapshotRecord]
    /// Removes a snapshot's record (a deleted session's checkpoints; commits are never removed).
    func deleteSnapshot(_ id: Int64) throws
    /// Points a snapshot's parent elsewhere (nil: none), when the parent's record goes.
    func setSnapshotParent(_ id: Int64, _ parent: Int64?) throws
    /// Every snapshot's id, oldest first.
    func snapshotIDs() throws -> [Int64]
    /// Changes whenever a snapshot is added or a branch is created, moved or deleted.
    func snapshotsVersion() throws -> String

    /// Every branch, by name.
    func branches() throws -> [BranchRecord]
    func branch(_ name: String) throws -> Int64?
    /// A name already taken is a `conflict`.
    func createBranch(_ name: String, head: Int64) throws
    /// Moves a branch only if it still points at `expected`; returns whether it moved.
    func moveBranch(_ name: String, from expected: Int64, to head: Int64) throws -> Bool
    /// Returns whether there was such a branch.
    func deleteBranch(_ name: String) throws -> Bool

    /// Takes the session's lease: stores `lease` unless another holder's stands and `stale` does not
    /// say it lapsed; returns nil when taken, else the standing lease. One atomic step.
    func takeLease(_ lease: LeaseRecord, replacing stale: (LeaseRecord) -> Bool) throws -> LeaseRecord?
    /// Stores a newer form of a lease its holder still holds (a later expiry, the mountpoint once the
    /// mount is up); false when another holder has it now.
    func renewLease(_ lease: LeaseRecord) throws -> Bool
    /// Drops the lease if `lease`'s holder still holds it.
    func releaseLease(_ lease: LeaseRecord) throws
    func lease(session: Int64) throws -> LeaseRecord?
    /// Every lease, by session.
    func leases() throws -> [LeaseRecord]

    /// Appends `entry` to the audit log, sealed after the last entry (`AuditRecord.sealed`): one
    /// atomic step, inside the caller's transaction when there is one. Returns it as stored.
    @discardableResult
    func appendAudit(_ entry: AuditRecord) throws -> AuditRecord
    /// The audit log, oldest first.
    func auditRecords() throws -> [AuditRecord]

    /// Adds a proposal (its `id` is ignored) and returns its id; a display id taken is a `conflict`.
    func insertProposal(_ p: ProposalRecord) throws -> Int64
    func proposal(id: Int64) throws -> ProposalRecord?
    /// Every proposal whose display id starts with `prefix`.
    func proposals(pidPrefix prefix: String) throws -> [ProposalRecord]
    /// Every proposal, oldest first.
    func proposals() throws -> [ProposalRecord]
    /// Moves a proposal from `expected` to `state`; returns whether it was in `expected`.
    func setProposalState(_ id: Int64, from expected: ProposalState, to state: ProposalState) throws -> Bool
    func insertReview(_ r: ReviewRecord) throws -> Int64
    /// A proposal's reviews, oldest first.
    func reviews(proposal: Int64) throws -> [ReviewRecord]

    /// The store's policy as its JSON text (nil when none was set).
    func policyText() throws -> String?
    func setPolicyText(_ text: String) throws

    /// A uid's public signing key (hex of its raw Ed25519 form), which its signed reviews are checked against.
    func setPublicKey(uid: UInt32, _ key: String) throws
    func publicKeys() throws -> [UInt32: String]

    /// Writes in flight (see `WriteLease`): begun before a writer's first object, ended once its record
    /// is committed (or it failed).
    func beginWrite(_ lease: WriteLease) throws -> Int64
    func endWrite(_ id: Int64) throws
    func writes() throws -> [WriteLease]

    /// Tokens of the service surface; a name is unique; `revokeToken` is false when none is live by that name.
    func insertToken(_ t: TokenRecord) throws -> Int64
    func tokens() throws -> [TokenRecord]
    func token(hash: String) throws -> TokenRecord?
    func revokeToken(name: String) throws -> Bool

    /// Notes that `uid` changed the session's files (once per uid); `resetWriters` forgets them all.
    func addWriter(session: Int64, uid: UInt32) throws
    func writers(session: Int64) throws -> [UInt32]
    func resetWriters(session: Int64) throws
    /// The backend's own consistency check: `["ok"]`, or the problems it found.
    func integrityCheck() throws -> [String]
}

extension MetadataStore {
    /// One host's backends serialize their transactions whole: a plain read is enough.
    public func sessionForUpdate(id: Int64) throws -> SessionRecord? { try session(id: id) }

    /// Records an action (or its refusal: `result` "refused: …") in the audit log.
    public func audit(uid: UInt32, action: String, session: String, detail: String, result: String = "ok") throws {
        try appendAudit(AuditRecord(uid: uid, action: action, session: session, detail: detail, result: result))
    }
}

/// The live part of each session (its nodes, names and extended attributes), written by every request
/// and kept on the host that serves the session.
public protocol WorkingLayerStore: AnyObject, Sendable {
    func transaction<T>(durable: Bool, _ body: () throws -> T) throws -> T
    func upsertNode(session: Int64, _ n: NodeRecord) throws
    /// Removes a node with its names (when a directory) and its extended attributes.
    func deleteNode(session: Int64, ino: UInt64) throws
    /// Sets (`value` non-nil) or removes one extended attribute of a live node.
    func setXattr(session: Int64, ino: UInt64, name: [UInt8], value: [UInt8]?) throws
    /// Replaces every extended attribute of a live node.
    func replaceXattrs(session: Int64, ino: UInt64, _ all: [(name: [UInt8], value: [UInt8])]) throws
    func xattrs(session: Int64) throws -> [(ino: UInt64, name: [UInt8], value: [UInt8])]
    func nodes(session: Int64) throws -> [NodeRecord]
    func setDentry(session: Int64, parent: UInt64, name: [UInt8], ino: UInt64) throws
    func removeDentry(session: Int64, parent: UInt64, name: [UInt8]) throws
    func dentries(session: Int64) throws -> [(parent: UInt64, name: [UInt8], ino: UInt64)]
    /// Drops a session's whole working layer; `base` is the tree the session lies over from now on
    /// (nil: the session is gone), which the layer records (see `layerBase`).
    func clearWorkingLayer(session: Int64, base: ObjectID?) throws
    /// The tree the session's working layer was made over, as this host last set it: when the session's
    /// base is another, another host moved it (it took the session over) and the rows here describe
    /// changes to an older tree.
    func layerBase(session: Int64) throws -> ObjectID?
    func setLayerBase(session: Int64, _ base: ObjectID) throws
    /// Gives a session's whole working layer (its rows and its recorded base) to another session.
    func moveWorkingLayer(from session: Int64, to other: Int64) throws
    func integrityCheck() throws -> [String]
}

/// What a metadata backend reports in the domain's terms.
public struct MetadataError: Error, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// A unique name or id is taken.
        case conflict
        /// A stored record does not decode.
        case damaged
        /// A request the backend cannot take as given (a malformed address).
        case invalid
        /// The backend refused who we are (a wrong password, a user without rights).
        case accessDenied
        /// The backend cannot be reached now (a network or server failure): the request changed nothing.
        case unavailable
        /// The backend failed the request for a reason of its own (its message says which).
        case failed
    }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { "metadata: \(message)" }
}

/// Shared metadata in memory: the backend of unit tests and the reference the others' conformance
/// tests hold to. Writes and transactions are serialized; a transaction that throws rolls back.
public final class MemoryMetadataStore: MetadataStore, @unchecked Sendable {
    struct State {
        var sessions: [Int64: SessionRecord] = [:]
        var snapshots: [Int64: SnapshotRecord] = [:]
        var branches: [String: Int64] = [:]
        var leases: [Int64: LeaseRecord] = [:]
        var audit: [AuditRecord] = []
        var proposals: [Int64: ProposalRecord] = [:]
        var reviews: [ReviewRecord] = []
        var policy: String?
        var writers: [Int64: [UInt32]] = [:]
        var keys: [UInt32: String] = [:]
        var inFlight: [Int64: WriteLease] = [:]
        var tokens: [TokenRecord] = []
        var nextWrite: Int64 = 1
        var nextProposal: Int64 = 1
        var nextSession: Int64 = 1
        var nextSnapshot: Int64 = 1
    }
    private let state = Mutex(State())
    /// Held across a transaction and each write (recursive: a transaction's body writes on its thread),
    /// so that a rollback undoes only that transaction's changes.
    private let serial = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init() {
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(serial, &attr)
        pthread_mutexattr_destroy(&attr)
    }
    deinit { pthread_mutex_destroy(serial); serial.deallocate() }

    /// The audit log, oldest first (tests).
    public var auditLog: [(uid: UInt32, action: String, session: String, detail: String)] {
        state.withLock { $0.audit.map { ($0.uid, $0.action, $0.session, $0.detail) } }
    }

    /// Changes a stored audit entry in place (tests of the chain's verification).
    public func tamperAudit(_ index: Int, _ change: (inout AuditRecord) -> Void) { write { change(&$0.audit[index]) } }

    public func transaction<T>(durable: Bool, _ body: () throws -> T) throws -> T {
        pthread_mutex_lock(serial)
        defer { pthread_mutex_unlock(serial) }
        let before = state.withLock { $0 }
        do { return try body() } catch {
            state.withLock { $0 = before }
            throw error
        }
    }

    /// Changes the state, after any transaction of another thread.
    private func write<T, E: Error>(_ change: (inout State) throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(serial)
        defer { pthread_mutex_unlock(serial) }
        return try state.withLock { (st) throws(E) in try change(&st) }
    }

    public func insertSession(_ s: SessionRecord) throws -> Int64 {
        try write { (st) throws(MetadataError) in
            if st.sessions.values.contains(where: { $0.name == s.name }) { throw MetadataError(.conflict, "session \(s.name) exists") }
            var s = s
            s.id = st.nextSession
            st.nextSession += 1
            st.sessions[s.id] = s
            return s.id
        }
    }

    public func session(named name: String) throws -> SessionRecord? { state.withLock { $0.sessions.values.first { $0.name == name } } }
    public func session(id: Int64) throws -> SessionRecord? { state.withLock { $0.sessions[id] } }
    public func sessions() throws -> [SessionRecord] { state.withLock { $0.sessions.values.sorted { $0.id < $1.id } } }

    private func changeSession(_ id: Int64, _ change: (inout SessionRecord) -> Void) {
        write { st in if var s = st.sessions[id] { change(&s); st.sessions[id] = s } }
    }

    public func updateSessionBase(_ id: Int64, baseRoot: ObjectID, baseSnapshot: Int64?, head: Int64?) throws {
        let now = secondsNow()
        changeSession(id) { $0.baseRoot = baseRoot; $0.baseSnapshot = baseSnapshot; $0.head = head; $0.lastUsed = now }
    }
    public func setSessionRoot(_ id: Int64, baseRoot: ObjectID) throws { changeSession(id) { $0.baseRoot = baseRoot } }
    public func setNextIno(_ id: Int64, _ next: UInt64) throws { changeSession(id) { $0.nextIno = next } }
    public func setBaseCommit(session: Int64, _ commit: Int64?) throws { changeSession(session) { $0.baseCommit = commit } }
    public func touchSession(_ id: Int64) throws {
        let now = secondsNow()
        changeSession(id) { $0.lastUsed = now }
    }
    public func deleteSession(_ id: Int64) throws { _ = write { $0.sessions.removeValue(forKey: id) } }
    public func setSessionState(_ id: Int64, _ state: String) throws {
        let now = secondsNow()
        changeSession(id) { $0.state = state; $0.lastUsed = now }
    }

    public func insertSnapshot(_ s: SnapshotRecord) throws -> Int64 {
        try write { (st) throws(MetadataError) in
            if st.snapshots.values.contains(where: { $0.sid == s.sid || ($0.session == s.session && $0.kind == s.kind && $0.name == s.name) }) {
                throw MetadataError(.conflict, "\(s.kind.rawValue) \(s.name) (\(s.sid)) exists")
            }
            var s = s
            s.id = st.nextSnapshot
            st.nextSnapshot += 1
            st.snapshots[s.id] = s
            return s.id
        }
    }

    private func snapshots(where keep: (SnapshotRecord) -> Bool) -> [SnapshotRecord] {
        state.withLock { $0.snapshots.values.filter(keep).sorted { $0.id < $1.id } }
    }
    public func snapshot(id: Int64) throws -> SnapshotRecord? { state.withLock { $0.snapshots[id] } }
    public func checkpoints(session: Int64) throws -> [SnapshotRecord] { snapshots { $0.session == session && $0.kind == .checkpoint } }
    public func snapshots(sidPrefix prefix: String) throws -> [SnapshotRecord] { snapshots { $0.sid.hasPrefix(prefix) } }
    public func snapshots(kind: SnapshotKind) throws -> [SnapshotRecord] { snapshots { $0.kind == kind }.reversed() }
    public func deleteSnapshot(_ id: Int64) throws { _ = write { $0.snapshots.removeValue(forKey: id) } }
    public func setSnapshotParent(_ id: Int64, _ parent: Int64?) throws { write { $0.snapshots[id]?.parent = parent } }
    public func snapshotIDs() throws -> [Int64] { state.withLock { $0.snapshots.keys.sorted() } }
    public func snapshotsVersion() throws -> String {
        state.withLock { st in
            "\(st.snapshots.keys.max() ?? 0) " + st.branches.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: "/")
        }
    }

    public func branches() throws -> [BranchRecord] {
        state.withLock { $0.branches.map { BranchRecord(name: $0.key, head: $0.value) }.sorted { $0.name < $1.name } }
    }
    public func branch(_ name: String) throws -> Int64? { state.withLock { $0.branches[name] } }
    public func createBranch(_ name: String, head: Int64) throws {
        try write { (st) throws(MetadataError) in
            if st.branches[name] != nil { throw MetadataError(.conflict, "branch \(name) exists") }
            st.branches[name] = head
        }
    }
    public func moveBranch(_ name: String, from expected: Int64, to head: Int64) throws -> Bool {
        write { st in
            guard st.branches[name] == expected else { return false }
            st.branches[name] = head
            return true
        }
    }
    public func deleteBranch(_ name: String) throws -> Bool { write { $0.branches.removeValue(forKey: name) != nil } }

    public func takeLease(_ lease: LeaseRecord, replacing stale: (LeaseRecord) -> Bool) throws -> LeaseRecord? {
        write { st in
            if let standing = st.leases[lease.session], !standing.sameHolder(lease), !stale(standing) { return standing }
            st.leases[lease.session] = lease
            return nil
        }
    }
    public func renewLease(_ lease: LeaseRecord) throws -> Bool {
        write { st in
            guard let standing = st.leases[lease.session], standing.sameHolder(lease) else { return false }
            st.leases[lease.session] = lease
            return true
        }
    }
    public func releaseLease(_ lease: LeaseRecord) throws {
        write { st in if let standing = st.leases[lease.session], standing.sameHolder(lease) { st.leases[lease.session] = nil } }
    }
    public func lease(session: Int64) throws -> LeaseRecord? { state.withLock { $0.leases[session] } }
    public func leases() throws -> [LeaseRecord] { state.withLock { $0.leases.values.sorted { $0.session < $1.session } } }

    @discardableResult
    public func appendAudit(_ entry: AuditRecord) throws -> AuditRecord {
        write { st in
            let sealed = entry.sealed(id: (st.audit.last?.id ?? 0) + 1, after: st.audit.last?.hash ?? AuditRecord.genesis)
            st.audit.append(sealed)
            return sealed
        }
    }
    public func auditRecords() throws -> [AuditRecord] { state.withLock { $0.audit } }

    public func insertProposal(_ p: ProposalRecord) throws -> Int64 {
        try write { (st) throws(MetadataError) in
            if st.proposals.values.contains(where: { $0.pid == p.pid }) { throw MetadataError(.conflict, "proposal \(p.pid) exists") }
            var p = p
            p.id = st.nextProposal
            st.nextProposal += 1
            st.proposals[p.id] = p
            return p.id
        }
    }
    public func proposal(id: Int64) throws -> ProposalRecord? { state.withLock { $0.proposals[id] } }
    public func proposals(pidPrefix prefix: String) throws -> [ProposalRecord] {
        state.withLock { $0.proposals.values.filter { $0.pid.hasPrefix(prefix) }.sorted { $0.id < $1.id } }
    }
    public func proposals() throws -> [ProposalRecord] { state.withLock { $0.proposals.values.sorted { $0.id < $1.id } } }
    public func setProposalState(_ id: Int64, from expected: ProposalState, to new: ProposalState) throws -> Bool {
        write { st in
            guard st.proposals[id]?.state == expected else { return false }
            st.proposals[id]?.state = new
            return true
        }
    }
    public func insertReview(_ r: ReviewRecord) throws -> Int64 {
        write { st in
            var r = r
            r.id = Int64(st.reviews.count + 1)
            st.reviews.append(r)
            return r.id
        }
    }
    public func reviews(proposal: Int64) throws -> [ReviewRecord] { state.withLock { $0.reviews.filter { $0.proposal == proposal } } }

    public func policyText() throws -> String? { state.withLock { $0.policy } }
    public func setPolicyText(_ text: String) throws { write { $0.policy = text } }

    public func setPublicKey(uid: UInt32, _ key: String) throws { write { $0.keys[uid] = key } }
    public func beginWrite(_ lease: WriteLease) throws -> Int64 {
        write { st in
            var l = lease
            l.id = st.nextWrite
            st.nextWrite += 1
            st.inFlight[l.id] = l
            return l.id
        }
    }
    public func endWrite(_ id: Int64) throws { _ = write { $0.inFlight.removeValue(forKey: id) } }
    public func insertToken(_ t: TokenRecord) throws -> Int64 {
        try write { (st) throws(MetadataError) -> Int64 in
            if st.tokens.contains(where: { $0.name == t.name }) { throw MetadataError(.conflict, "token \(t.name) exists") }
            var t = t
            t.id = Int64(st.tokens.count + 1)
            st.tokens.append(t)
            return t.id
        }
    }
    public func tokens() throws -> [TokenRecord] { state.withLock { $0.tokens } }
    public func token(hash: String) throws -> TokenRecord? { state.withLock { $0.tokens.first { $0.hash == hash } } }
    public func revokeToken(name: String) throws -> Bool {
        write { st in
            guard let i = st.tokens.firstIndex(where: { $0.name == name && $0.revoked == nil }) else { return false }
            st.tokens[i].revoked = secondsNow()
            return true
        }
    }
    public func writes() throws -> [WriteLease] { state.withLock { $0.inFlight.values.sorted { $0.id < $1.id } } }
    public func publicKeys() throws -> [UInt32: String] { state.withLock { $0.keys } }

    public func addWriter(session: Int64, uid: UInt32) throws {
        write { st in if !(st.writers[session] ?? []).contains(uid) { st.writers[session, default: []].append(uid) } }
    }
    public func writers(session: Int64) throws -> [UInt32] { state.withLock { ($0.writers[session] ?? []).sorted() } }
    public func resetWriters(session: Int64) throws { _ = write { $0.writers.removeValue(forKey: session) } }

    public func integrityCheck() throws -> [String] { ["ok"] }
}
