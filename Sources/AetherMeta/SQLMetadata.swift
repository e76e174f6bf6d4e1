import AetherModel

/// One connection to a SQL database, as the metadata uses it: statements with `?` placeholders and
/// `SQLValue`s, in SQL both SQLite and PostgreSQL read (`ON CONFLICT` upserts, double-quoted names).
/// Calls block their thread; a transaction holds the connection for its body on its thread.
public protocol SQLConnection: AnyObject, Sendable {
    func execute(_ sql: String) throws
    /// Runs one statement that returns no rows; returns the number of rows changed.
    @discardableResult func run(_ sql: String, _ values: [SQLValue]) throws -> Int
    /// Runs one INSERT into a table whose key is `id` and returns the new row's id.
    func insert(_ sql: String, _ values: [SQLValue]) throws -> Int64
    func forEach(_ sql: String, _ values: [SQLValue], _ body: ([SQLValue]) throws -> Void) throws
    /// Runs `body` in the transaction this thread is in, or in one of its own.
    func atomically<T>(_ body: () throws -> T) throws -> T
    /// Runs `body` in one transaction; `durable` makes the commit wait for the disk.
    func transaction<T>(durable: Bool, _ body: () throws -> T) throws -> T
    /// Inside a transaction: waits until no other transaction that named `key` is open, and keeps
    /// every later one waiting until this one ends — a read-then-write step (a lease taken, an audit
    /// entry chained after the last) is then one step for every host. (SQLite's transactions are
    /// serialized whole already.)
    func serialize(_ key: Int64) throws
    /// What ends a SELECT that locks the rows it reads until the transaction ends (` FOR UPDATE`), or
    /// nothing where transactions are serialized whole (SQLite).
    var lockingRead: String { get }
}

/// What `SQLConnection.serialize` is asked to serialize.
enum SerialKey {
    static let leases: Int64 = 0x4145_5448_4c45_4153 // "AETHLEAS"
    static let audit: Int64 = 0x4145_5448_4155_4454  // "AETHAUDT"
}

extension SQLConnection {
    @discardableResult public func run(_ sql: String, _ values: SQLValue...) throws -> Int { try run(sql, values) }
    public func insert(_ sql: String, _ values: SQLValue...) throws -> Int64 { try insert(sql, values) }
    public func query(_ sql: String, _ values: SQLValue...) throws -> [[SQLValue]] { try query(sql, values) }
    public func query(_ sql: String, _ values: [SQLValue]) throws -> [[SQLValue]] {
        var rows: [[SQLValue]] = []
        try forEach(sql, values) { rows.append($0) }
        return rows
    }
}

/// The metadata several hosts share (`MetadataStore`) and a packed store's index (`PackIndex`) over
/// any `SQLConnection`: the statements and the decoding of rows, once, for SQLite (`Catalog`, which
/// adds the working layer and `meta.db`'s migrations) and PostgreSQL (AetherMetaPostgres, which makes
/// the same tables in its own types).
open class SQLMetadata: MetadataStore, PackIndex, @unchecked Sendable {
    public let connection: any SQLConnection

    public init(connection: any SQLConnection) {
        self.connection = connection
    }

    /// Runs `body` in one transaction; `durable` waits for the disk before returning.
    public func transaction<T>(durable: Bool = false, _ body: () throws -> T) throws -> T {
        try connection.transaction(durable: durable, body)
    }

    /// The database's own check: problems found, or `["ok"]`.
    open func integrityCheck() throws -> [String] { ["ok"] }

    // MARK: sessions

    public func insertSession(_ s: SessionRecord) throws -> Int64 {
        try connection.insert("""
            INSERT INTO sessions(name, base_root, base_snapshot, parent_session, owner, state, created, last_used, next_ino, head, base_commit)
            VALUES(?,?,?,?,?,?,?,?,?,?,?)
            """, .text(s.name), .blob(s.baseRoot.bytes), s.baseSnapshot.map { .int($0) } ?? .null,
            s.parentSession.map { .int($0) } ?? .null, .int(Int64(s.owner)), .text(s.state),
            .real(s.created), .real(s.lastUsed), .int(Int64(s.nextIno)), s.head.map { .int($0) } ?? .null,
            s.baseCommit.map { .int($0) } ?? .null)
    }

    private static let sessionColumns = "id, name, base_root, base_snapshot, parent_session, owner, state, created, last_used, next_ino, head, base_commit"

    /// A stored value that does not decode.
    static func damaged(_ what: String) -> MetadataError { MetadataError(.damaged, what) }

    private static func session(_ r: [SQLValue]) throws -> SessionRecord {
        guard let id = r[0].int, let root = r[2].blob.flatMap({ ObjectID(bytes: $0) }) else {
            throw damaged("session \(r[1].text ?? "?") has no valid root id")
        }
        return SessionRecord(id: id, name: r[1].text ?? "", baseRoot: root, baseSnapshot: r[3].int,
                      parentSession: r[4].int, owner: UInt32(r[5].int ?? 0), state: r[6].text ?? "active",
                      created: r[7].real ?? 0, lastUsed: r[8].real ?? 0, nextIno: UInt64(r[9].int ?? 2), head: r[10].int,
                      baseCommit: r[11].int)
    }

    public func session(named name: String) throws -> SessionRecord? {
        try connection.query("SELECT \(SQLMetadata.sessionColumns) FROM sessions WHERE name=?", .text(name)).first.map { try SQLMetadata.session($0) }
    }

    public func session(id: Int64) throws -> SessionRecord? {
        try connection.query("SELECT \(SQLMetadata.sessionColumns) FROM sessions WHERE id=?", .int(id)).first.map { try SQLMetadata.session($0) }
    }

    public func sessionForUpdate(id: Int64) throws -> SessionRecord? {
        try connection.query("SELECT \(SQLMetadata.sessionColumns) FROM sessions WHERE id=?" + connection.lockingRead, .int(id)).first.map { try SQLMetadata.session($0) }
    }

    public func sessions() throws -> [SessionRecord] {
        try connection.query("SELECT \(SQLMetadata.sessionColumns) FROM sessions ORDER BY id").map { try SQLMetadata.session($0) }
    }

    public func updateSessionBase(_ id: Int64, baseRoot: ObjectID, baseSnapshot: Int64?, head: Int64?) throws {
        try connection.run("UPDATE sessions SET base_root=?, base_snapshot=?, head=?, last_used=? WHERE id=?",
                   .blob(baseRoot.bytes), baseSnapshot.map { .int($0) } ?? .null, head.map { .int($0) } ?? .null,
                   .real(secondsNow()), .int(id))
    }

    public func setSessionRoot(_ id: Int64, baseRoot: ObjectID) throws {
        try connection.run("UPDATE sessions SET base_root=? WHERE id=?", .blob(baseRoot.bytes), .int(id))
    }

    public func setNextIno(_ id: Int64, _ next: UInt64) throws {
        try connection.run("UPDATE sessions SET next_ino=? WHERE id=?", .int(Int64(next)), .int(id))
    }

    public func touchSession(_ id: Int64) throws {
        try connection.run("UPDATE sessions SET last_used=? WHERE id=?", .real(secondsNow()), .int(id))
    }

    public func setSessionState(_ id: Int64, _ state: String) throws {
        try connection.run("UPDATE sessions SET state=?, last_used=? WHERE id=?", .text(state), .real(secondsNow()), .int(id))
    }

    public func deleteSession(_ id: Int64) throws {
        try connection.run("DELETE FROM sessions WHERE id=?", .int(id))
    }

    // MARK: snapshots

    public func insertSnapshot(_ s: SnapshotRecord) throws -> Int64 {
        try connection.insert("""
            INSERT INTO snapshots(sid, kind, session, name, root, parent, time, author, message, meta, files_changed, bytes_added, branch)
            VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)
            """, .text(s.sid), .text(s.kind.rawValue), .int(s.session), .text(s.name), .blob(s.root.bytes),
            s.parent.map { .int($0) } ?? .null, .real(s.time), .int(Int64(s.author)), .text(s.message),
            .text(JSONText.encode(s.meta)), .int(s.filesChanged), .int(s.bytesAdded),
            s.branch.map { .text($0) } ?? .null)
    }

    private static let snapshotColumns = "id, sid, kind, session, name, root, parent, time, author, message, meta, files_changed, bytes_added, branch"

    private static func snapshot(_ r: [SQLValue]) throws -> SnapshotRecord {
        let sid = r[1].text ?? "?"
        guard let id = r[0].int, let kind = r[2].text.flatMap(SnapshotKind.init(rawValue:)) else {
            throw damaged("snapshot \(sid) has an unknown kind \"\(r[2].text ?? "")\"")
        }
        guard let root = r[5].blob.flatMap({ ObjectID(bytes: $0) }) else { throw damaged("\(kind.rawValue) \(sid) has no valid root id") }
        // Most records carry no metadata: "{}" costs no JSON decoder (listing a session's checkpoints
        // decodes every one of them).
        let text = r[10].text ?? "{}"
        guard let meta = text == "{}" ? [:] : JSONText.decoded([String: String].self, text) else {
            throw damaged("\(kind.rawValue) \(sid) has metadata that is not a JSON object of strings")
        }
        return SnapshotRecord(id: id, sid: sid, kind: kind, session: r[3].int ?? 0, name: r[4].text ?? "", root: root,
                              parent: r[6].int, time: r[7].real ?? 0, author: UInt32(r[8].int ?? 0), message: r[9].text ?? "",
                              meta: meta, filesChanged: r[11].int ?? 0, bytesAdded: r[12].int ?? 0, branch: r[13].text)
    }

    public func snapshot(id: Int64) throws -> SnapshotRecord? {
        try connection.query("SELECT \(SQLMetadata.snapshotColumns) FROM snapshots WHERE id=?", .int(id)).first.map { try SQLMetadata.snapshot($0) }
    }

    /// The session's checkpoints, oldest first.
    public func checkpoints(session: Int64) throws -> [SnapshotRecord] {
        try connection.query("SELECT \(SQLMetadata.snapshotColumns) FROM snapshots WHERE session=? AND kind='checkpoint' ORDER BY id", .int(session)).map { try SQLMetadata.snapshot($0) }
    }

    /// Every snapshot whose display id starts with `prefix`.
    public func snapshots(sidPrefix prefix: String) throws -> [SnapshotRecord] {
        try connection.query("SELECT \(SQLMetadata.snapshotColumns) FROM snapshots WHERE substr(sid, 1, length(?)) = ? ORDER BY id",
                     .text(prefix), .text(prefix)).map { try SQLMetadata.snapshot($0) }
    }

    public func setBaseCommit(session: Int64, _ commit: Int64?) throws {
        try connection.run("UPDATE sessions SET base_commit=? WHERE id=?", commit.map { .int($0) } ?? .null, .int(session))
    }

    /// Snapshots of one kind, newest first.
    public func deleteSnapshot(_ id: Int64) throws {
        _ = try connection.run("DELETE FROM snapshots WHERE id=?", .int(id))
    }

    public func setSnapshotParent(_ id: Int64, _ parent: Int64?) throws {
        _ = try connection.run("UPDATE snapshots SET parent=? WHERE id=?", parent.map { .int($0) } ?? .null, .int(id))
    }

    public func snapshots(kind: SnapshotKind) throws -> [SnapshotRecord] {
        try connection.query("SELECT \(SQLMetadata.snapshotColumns) FROM snapshots WHERE kind=? ORDER BY id DESC", .text(kind.rawValue)).map { try SQLMetadata.snapshot($0) }
    }

    /// Changes whenever a snapshot is added or a branch is created, moved or deleted (snapshots are never
    /// deleted, so the newest id tells whether one came).
    public func snapshotsVersion() throws -> String {
        let newest = try connection.query("SELECT max(id) FROM snapshots").first?.first?.int ?? 0
        return "\(newest) " + (try branches()).map { "\($0.name):\($0.head)" }.joined(separator: "/")
    }

    // MARK: branches

    public func branches() throws -> [BranchRecord] {
        try connection.query("SELECT name, head FROM branches ORDER BY name").map { BranchRecord(name: $0[0].text ?? "", head: $0[1].int ?? 0) }
    }

    public func branch(_ name: String) throws -> Int64? {
        try connection.query("SELECT head FROM branches WHERE name=?", .text(name)).first?.first?.int
    }

    public func createBranch(_ name: String, head: Int64) throws {
        try connection.run("INSERT INTO branches(name, head, created) VALUES(?,?,?)", .text(name), .int(head), .real(secondsNow()))
    }

    /// Moves a branch only if it still points at `expected`; returns whether it moved.
    public func moveBranch(_ name: String, from expected: Int64, to head: Int64) throws -> Bool {
        try connection.run("UPDATE branches SET head=? WHERE name=? AND head=?", .int(head), .text(name), .int(expected)) == 1
    }

    public func deleteBranch(_ name: String) throws -> Bool {
        try connection.run("DELETE FROM branches WHERE name=?", .text(name)) == 1
    }

    /// Every snapshot record's id, oldest first.
    public func snapshotIDs() throws -> [Int64] {
        try connection.query("SELECT id FROM snapshots ORDER BY id").compactMap { $0.first?.int }
    }

    // MARK: leases

    private static let leaseColumns = "session, host, pid, mountpoint, acquired, expires"

    private static func lease(_ r: [SQLValue]) -> LeaseRecord {
        LeaseRecord(session: r[0].int ?? 0, host: r[1].text ?? "", pid: Int32(truncatingIfNeeded: r[2].int ?? 0),
                    mountpoint: r[3].text, acquired: r[4].real ?? 0, expires: r[5].real ?? 0)
    }

    private func store(_ l: LeaseRecord) throws {
        try connection.run("INSERT INTO leases(\(SQLMetadata.leaseColumns)) VALUES(?,?,?,?,?,?) ON CONFLICT(session) DO UPDATE SET host=excluded.host, pid=excluded.pid, mountpoint=excluded.mountpoint, acquired=excluded.acquired, expires=excluded.expires", .int(l.session), .text(l.host),
                   .int(Int64(l.pid)), l.mountpoint.map { .text($0) } ?? .null, .real(l.acquired), .real(l.expires))
    }

    public func takeLease(_ lease: LeaseRecord, replacing stale: (LeaseRecord) -> Bool) throws -> LeaseRecord? {
        try connection.transaction(durable: true) {
            try connection.serialize(SerialKey.leases)
            if let standing = try self.lease(session: lease.session), !standing.sameHolder(lease), !stale(standing) { return standing }
            try store(lease)
            return nil
        }
    }

    /// One conditional UPDATE (a round trip, no transaction): every mounted session renews every 10 s.
    public func renewLease(_ lease: LeaseRecord) throws -> Bool {
        try connection.run("UPDATE leases SET mountpoint=?, acquired=?, expires=? WHERE session=? AND host=? AND pid=?",
                           lease.mountpoint.map { .text($0) } ?? .null, .real(lease.acquired), .real(lease.expires),
                           .int(lease.session), .text(lease.host), .int(Int64(lease.pid))) == 1
    }

    public func releaseLease(_ lease: LeaseRecord) throws {
        try connection.run("DELETE FROM leases WHERE session=? AND host=? AND pid=?", .int(lease.session), .text(lease.host), .int(Int64(lease.pid)))
    }

    public func lease(session: Int64) throws -> LeaseRecord? {
        try connection.query("SELECT \(SQLMetadata.leaseColumns) FROM leases WHERE session=?", .int(session)).first.map(SQLMetadata.lease)
    }

    public func leases() throws -> [LeaseRecord] {
        try connection.query("SELECT \(SQLMetadata.leaseColumns) FROM leases ORDER BY session").map(SQLMetadata.lease)
    }

    // MARK: audit

    static let auditColumns = "id, time, uid, pid, action, session, detail, result, prev, hash"

    static func auditRecord(_ r: [SQLValue]) throws -> AuditRecord {
        AuditRecord(id: r[0].int ?? 0, time: r[1].real ?? 0, uid: UInt32(r[2].int ?? 0), pid: Int32(truncatingIfNeeded: r[3].int ?? 0),
                    action: r[4].text ?? "", session: r[5].text ?? "", detail: r[6].text ?? "", result: r[7].text ?? "",
                    prev: r[8].text ?? "", hash: r[9].text ?? "")
    }

    @discardableResult
    public func appendAudit(_ entry: AuditRecord) throws -> AuditRecord {
        try connection.atomically {
            try connection.serialize(SerialKey.audit)
            let last = try connection.query("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").first
            let sealed = entry.sealed(id: (last?[0].int ?? 0) + 1, after: last?[1].text ?? AuditRecord.genesis)
            _ = try connection.run("INSERT INTO audit(id, time, uid, pid, action, session, detail, result, prev, hash) VALUES(?,?,?,?,?,?,?,?,?,?)",
                           .int(sealed.id), .real(sealed.time), .int(Int64(sealed.uid)), .int(Int64(sealed.pid)), .text(sealed.action),
                           .text(sealed.session), .text(sealed.detail), .text(sealed.result), .text(sealed.prev), .text(sealed.hash))
            return sealed
        }
    }

    public func auditRecords() throws -> [AuditRecord] {
        try connection.query("SELECT \(SQLMetadata.auditColumns) FROM audit ORDER BY id").map(SQLMetadata.auditRecord)
    }

    // MARK: proposals and reviews

    private static let proposalColumns = "id, pid, session, author, branch, root, snapshot, base_commit, title, message, meta, state, created, writers"

    private static func proposal(_ r: [SQLValue]) throws -> ProposalRecord {
        let pid = r[1].text ?? "?"
        guard let id = r[0].int, let root = r[5].blob.flatMap({ ObjectID(bytes: $0) }),
              let state = r[11].text.flatMap(ProposalState.init(rawValue:)) else {
            throw damaged("proposal \(pid) has no valid root or state")
        }
        guard let meta = JSONText.decoded([String: String].self, r[10].text ?? "{}") else {
            throw damaged("proposal \(pid) has metadata that is not a JSON object of strings")
        }
        let writers = (r[13].text ?? "").split(separator: ",").compactMap { UInt32($0) }
        return ProposalRecord(id: id, pid: pid, session: r[2].int ?? 0, author: UInt32(r[3].int ?? 0), branch: r[4].text ?? "",
                              root: root, snapshot: r[6].int ?? 0, baseCommit: r[7].int, title: r[8].text ?? "",
                              message: r[9].text ?? "", meta: meta, state: state, created: r[12].real ?? 0, writers: writers)
    }

    public func insertProposal(_ p: ProposalRecord) throws -> Int64 {
        if try !connection.query("SELECT 1 FROM proposals WHERE pid=?", .text(p.pid)).isEmpty {
            throw MetadataError(.conflict, "proposal \(p.pid) exists")
        }
        return try connection.insert("""
            INSERT INTO proposals(pid, session, author, branch, root, snapshot, base_commit, title, message, meta, state, created, writers)
            VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)
            """, .text(p.pid), .int(p.session), .int(Int64(p.author)), .text(p.branch), .blob(p.root.bytes), .int(p.snapshot),
            p.baseCommit.map { .int($0) } ?? .null, .text(p.title), .text(p.message), .text(JSONText.encode(p.meta)),
            .text(p.state.rawValue), .real(p.created), .text(p.writers.map(String.init).joined(separator: ",")))
    }

    public func proposal(id: Int64) throws -> ProposalRecord? {
        try connection.query("SELECT \(SQLMetadata.proposalColumns) FROM proposals WHERE id=?", .int(id)).first.map(SQLMetadata.proposal)
    }

    public func proposals(pidPrefix prefix: String) throws -> [ProposalRecord] {
        try connection.query("SELECT \(SQLMetadata.proposalColumns) FROM proposals WHERE substr(pid, 1, length(?)) = ? ORDER BY id",
                     .text(prefix), .text(prefix)).map(SQLMetadata.proposal)
    }

    public func proposals() throws -> [ProposalRecord] {
        try connection.query("SELECT \(SQLMetadata.proposalColumns) FROM proposals ORDER BY id").map(SQLMetadata.proposal)
    }

    public func setProposalState(_ id: Int64, from expected: ProposalState, to state: ProposalState) throws -> Bool {
        try connection.run("UPDATE proposals SET state=? WHERE id=? AND state=?", .text(state.rawValue), .int(id), .text(expected.rawValue)) == 1
    }

    public func insertReview(_ r: ReviewRecord) throws -> Int64 {
        try connection.insert("INSERT INTO reviews(proposal, reviewer, time, verdict, comment, root, envelope) VALUES(?,?,?,?,?,?,?)",
                      .int(r.proposal), .int(Int64(r.reviewer)), .real(r.time), .text(r.verdict.rawValue), .text(r.comment), .blob(r.root.bytes),
                      .text(r.envelope))
    }

    public func reviews(proposal: Int64) throws -> [ReviewRecord] {
        try connection.query("SELECT id, proposal, reviewer, time, verdict, comment, root, envelope FROM reviews WHERE proposal=? ORDER BY id", .int(proposal)).map { r in
            guard let verdict = r[4].text.flatMap(ReviewRecord.Verdict.init(rawValue:)), let root = r[6].blob.flatMap({ ObjectID(bytes: $0) }) else {
                throw SQLMetadata.damaged("review \(r[0].int ?? 0) has no valid verdict or root")
            }
            return ReviewRecord(id: r[0].int ?? 0, proposal: r[1].int ?? 0, reviewer: UInt32(r[2].int ?? 0), time: r[3].real ?? 0,
                                verdict: verdict, comment: r[5].text ?? "", root: root, envelope: r[7].text ?? "")
        }
    }

    // MARK: policy and writers

    public func policyText() throws -> String? {
        try connection.query("SELECT value FROM meta WHERE key='policy'").first?.first?.text
    }

    public func setPolicyText(_ text: String) throws {
        _ = try connection.run("INSERT INTO meta(key, value) VALUES('policy', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", .text(text))
    }

    // MARK: tokens

    public func insertToken(_ t: TokenRecord) throws -> Int64 {
        if try !connection.query("SELECT 1 FROM tokens WHERE name=?", .text(t.name)).isEmpty {
            throw MetadataError(.conflict, "token \(t.name) exists")
        }
        return try connection.insert("INSERT INTO tokens(name, scope, uid, hash, created, revoked) VALUES(?,?,?,?,?,?)",
                             .text(t.name), .text(t.scope.rawValue), .int(Int64(t.uid)), .text(t.hash), .real(t.created),
                             t.revoked.map { .real($0) } ?? .null)
    }

    private static func token(_ r: [SQLValue]) throws -> TokenRecord {
        guard let scope = r[2].text.flatMap(TokenScope.init(rawValue:)) else { throw MetadataError(.damaged, "token \(r[1].text ?? "?") has no scope") }
        return TokenRecord(id: r[0].int ?? 0, name: r[1].text ?? "", scope: scope, uid: UInt32(truncatingIfNeeded: r[3].int ?? 0),
                           hash: r[4].text ?? "", created: r[5].real ?? 0, revoked: r[6].real)
    }

    public func tokens() throws -> [TokenRecord] {
        try connection.query("SELECT id, name, scope, uid, hash, created, revoked FROM tokens ORDER BY id").map(SQLMetadata.token)
    }

    public func token(hash: String) throws -> TokenRecord? {
        try connection.query("SELECT id, name, scope, uid, hash, created, revoked FROM tokens WHERE hash=?", .text(hash)).first.map(SQLMetadata.token)
    }

    public func revokeToken(name: String) throws -> Bool {
        try connection.run("UPDATE tokens SET revoked=? WHERE name=? AND revoked IS NULL", .real(secondsNow()), .text(name)) > 0
    }

    public func beginWrite(_ lease: WriteLease) throws -> Int64 {
        try connection.atomically {
            try connection.insert("INSERT INTO writes(host, pid, started) VALUES(?,?,?)", .text(lease.host), .int(Int64(lease.pid)), .real(lease.started))
        }
    }

    public func endWrite(_ id: Int64) throws {
        _ = try connection.run("DELETE FROM writes WHERE id=?", .int(id))
    }

    public func writes() throws -> [WriteLease] {
        try connection.query("SELECT id, host, pid, started FROM writes ORDER BY id").map {
            WriteLease(id: $0[0].int ?? 0, host: $0[1].text ?? "", pid: Int32(truncatingIfNeeded: $0[2].int ?? 0), started: $0[3].real ?? 0)
        }
    }

    public func setPublicKey(uid: UInt32, _ key: String) throws {
        _ = try connection.run("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", .text("pubkey:\(uid)"), .text(key))
    }

    public func publicKeys() throws -> [UInt32: String] {
        var out: [UInt32: String] = [:]
        for r in try connection.query("SELECT key, value FROM meta WHERE key LIKE 'pubkey:%'") {
            if let uid = (r[0].text?.dropFirst(7)).flatMap({ UInt32($0) }), let v = r[1].text { out[uid] = v }
        }
        return out
    }

    public func addWriter(session: Int64, uid: UInt32) throws {
        _ = try connection.run("INSERT INTO writers(session, uid) VALUES(?,?) ON CONFLICT DO NOTHING", .int(session), .int(Int64(uid)))
    }

    public func writers(session: Int64) throws -> [UInt32] {
        try connection.query("SELECT uid FROM writers WHERE session=? ORDER BY uid", .int(session)).map { UInt32($0[0].int ?? 0) }
    }

    public func resetWriters(session: Int64) throws {
        _ = try connection.run("DELETE FROM writers WHERE session=?", .int(session))
    }

    // MARK: the pack index of a packed store

    static let packColumns = "id, pack, \"offset\", length, written, condemned"

    static func packedObject(_ r: [SQLValue]) throws -> PackedObject {
        guard let id = r[0].blob.flatMap({ ObjectID(bytes: $0) }), let pack = r[1].text, let offset = r[2].int, let length = r[3].int else {
            throw damaged("a pack index entry does not decode")
        }
        return PackedObject(id: id, pack: pack, offset: offset, length: length, written: r[4].real ?? 0, condemned: r[5].real)
    }

    public func locate(_ ids: [ObjectID]) throws -> [ObjectID: PackedObject] {
        var out: [ObjectID: PackedObject] = [:]
        var start = 0
        while start < ids.count {
            let part = ids[start..<min(ids.count, start + 500)]
            start += part.count
            let marks = Array(repeating: "?", count: part.count).joined(separator: ",")
            try connection.forEach("SELECT \(SQLMetadata.packColumns) FROM pack_objects WHERE id IN (\(marks))", part.map { .blob($0.bytes) }) {
                let o = try SQLMetadata.packedObject($0)
                out[o.id] = o
            }
        }
        return out
    }

    public func insertPack(_ pack: PackRecord, _ objects: [PackedObject]) throws {
        // One statement per 200 entries (each a round trip to a remote database); an id given twice
        // keeps its first place (a statement may not change a row twice).
        var seen = Set<ObjectID>()
        let unique = objects.filter { seen.insert($0.id).inserted }
        try connection.atomically {
            _ = try connection.run("INSERT INTO packs(name, bytes, created) VALUES(?,?,?) ON CONFLICT(name) DO UPDATE SET bytes=excluded.bytes, created=excluded.created", .text(pack.name), .int(pack.bytes), .real(pack.created))
            var start = 0
            while start < unique.count {
                let part = unique[start..<min(unique.count, start + 200)]
                start += part.count
                let rows = Array(repeating: "(?,?,?,?,?,NULL)", count: part.count).joined(separator: ",")
                // A condemned object written again is stored again: its new copy replaces the entry.
                _ = try connection.run("""
                    INSERT INTO pack_objects(\(SQLMetadata.packColumns)) VALUES \(rows)
                    ON CONFLICT(id) DO UPDATE SET pack=excluded.pack, "offset"=excluded."offset", length=excluded.length,
                      written=excluded.written, condemned=NULL WHERE pack_objects.condemned IS NOT NULL
                    """, part.flatMap { o -> [SQLValue] in [.blob(o.id.bytes), .text(o.pack), .int(o.offset), .int(o.length), .real(o.written)] })
            }
        }
    }

    public func forEachObject(_ body: (PackedObject) throws -> Void) throws {
        // Collected first: `body` may call back into the index (the database's lock is not reentrant
        // across statements of one query).
        var all: [PackedObject] = []
        try connection.forEach("SELECT \(SQLMetadata.packColumns) FROM pack_objects", []) { all.append(try SQLMetadata.packedObject($0)) }
        for o in all { try body(o) }
    }

    public func objects(inPack pack: String) throws -> [PackedObject] {
        try connection.query("SELECT \(SQLMetadata.packColumns) FROM pack_objects WHERE pack=? ORDER BY \"offset\"", .text(pack)).map(SQLMetadata.packedObject)
    }

    public func packs() throws -> [(pack: PackRecord, liveBytes: Int64, liveObjects: Int)] {
        try connection.query("""
            SELECT p.name, p.bytes, p.created, CAST(COALESCE(SUM(o.length), 0) AS BIGINT), COUNT(o.id)
            FROM packs p LEFT JOIN pack_objects o ON o.pack = p.name GROUP BY p.name ORDER BY p.name
            """).map { r in
            (PackRecord(name: r[0].text ?? "", bytes: r[1].int ?? 0, created: r[2].real ?? 0), r[3].int ?? 0, Int(r[4].int ?? 0))
        }
    }

    public func setCondemned(_ id: ObjectID, at: Double?) throws {
        _ = try connection.run("UPDATE pack_objects SET condemned=? WHERE id=?", at.map { .real($0) } ?? .null, .blob(id.bytes))
    }

    public func removeObject(_ id: ObjectID) throws {
        _ = try connection.run("DELETE FROM pack_objects WHERE id=?", .blob(id.bytes))
    }

    public func moveObjects(_ objects: [PackedObject]) throws {
        try connection.atomically {
            for o in objects {
                _ = try connection.run("UPDATE pack_objects SET pack=?, \"offset\"=?, length=? WHERE id=?", .text(o.pack), .int(o.offset), .int(o.length), .blob(o.id.bytes))
            }
        }
    }

    public func removePack(_ name: String) throws {
        _ = try connection.run("DELETE FROM packs WHERE name=?", .text(name))
    }
}
