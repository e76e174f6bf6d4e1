import AetherModel
import CSQLite
#if canImport(Glibc)
import Glibc
#endif

/// The store's metadata database in SQLite: the shared metadata (sessions, snapshot records, branches,
/// the audit log) and every session's working layer (live nodes) in one file, so that one transaction
/// covers both.
///
/// Vocabulary: a *node* is one file, directory, symlink or FIFO of a session's working layer, numbered
/// by its inode number; a *dentry* is a name in a materialized directory. Only nodes that differ from
/// the session's base snapshot (or lie on the path to one) have rows. Since schema 3 a materialized
/// directory's dentries are *overrides* of its tree: a changed or new name points at its node, a row
/// with inode 0 hides a name of the tree (earlier stores list every name of a materialized directory).
public final class Catalog: MetadataStore, WorkingLayerStore, @unchecked Sendable {
    /// The schema this code writes. Older databases are migrated; newer ones are refused.
    public static var schemaVersion: Int { migrations.count }
    let db: Database

    public init(path: String) throws {
        db = try Database(path: path)
        try migrate()
    }

    /// Each schema's step from the one before, in order: a database of schema N runs the steps after N,
    /// each in a transaction of its own with its new number. A step that has shipped never changes.
    private static let migrations: [String] = [
        // 1: sessions, snapshots, working layers, the audit log.
        """
        CREATE TABLE sessions(
          id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, base_root BLOB NOT NULL,
          base_snapshot INTEGER, parent_session INTEGER, owner INTEGER NOT NULL,
          state TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL,
          next_ino INTEGER NOT NULL, head INTEGER);
        CREATE TABLE snapshots(
          id INTEGER PRIMARY KEY, sid TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
          session INTEGER NOT NULL, name TEXT NOT NULL, root BLOB NOT NULL, parent INTEGER,
          time REAL NOT NULL, author INTEGER NOT NULL, message TEXT NOT NULL, meta TEXT NOT NULL,
          files_changed INTEGER NOT NULL, bytes_added INTEGER NOT NULL,
          UNIQUE(session, kind, name));
        CREATE TABLE nodes(
          session INTEGER NOT NULL, ino INTEGER NOT NULL, kind INTEGER NOT NULL, mode INTEGER NOT NULL,
          uid INTEGER NOT NULL, gid INTEGER NOT NULL, size INTEGER NOT NULL,
          atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
          nlink INTEGER NOT NULL, rdev INTEGER NOT NULL, target BLOB NOT NULL, content BLOB,
          upper INTEGER NOT NULL, materialized INTEGER NOT NULL, dirty INTEGER NOT NULL,
          link_group INTEGER NOT NULL, xattrs BLOB NOT NULL,
          PRIMARY KEY(session, ino)) WITHOUT ROWID;
        CREATE TABLE dentries(
          session INTEGER NOT NULL, parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL,
          PRIMARY KEY(session, parent, name)) WITHOUT ROWID;
        CREATE TABLE audit(
          id INTEGER PRIMARY KEY, time REAL NOT NULL, uid INTEGER NOT NULL, action TEXT NOT NULL,
          session TEXT NOT NULL, detail TEXT NOT NULL);
        """,
        // 2: branches, and the commit a session builds on.
        """
        ALTER TABLE sessions ADD COLUMN base_commit INTEGER;
        CREATE TABLE branches(name TEXT PRIMARY KEY, head INTEGER NOT NULL, created REAL NOT NULL);
        CREATE INDEX snapshots_kind ON snapshots(kind, id);
        """,
        // 3: Overlay dentries (materialized = 2); rows of earlier schemas keep their meaning.
        "",
        // 4: A live node's extended attributes, one row each, so that setting one costs one row. Node
        // rows of earlier schemas keep theirs in `nodes.xattrs` until the node is saved again.
        """
        CREATE TABLE xattrs(
          session INTEGER NOT NULL, ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
          PRIMARY KEY(session, ino, name)) WITHOUT ROWID;
        """,
        // 5: Leases replace the sessions/ID.mount files: who serves a session, where, until when.
        """
        CREATE TABLE leases(
          session INTEGER PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, mountpoint TEXT,
          acquired REAL NOT NULL, expires REAL NOT NULL);
        """,
        // 6: A commit's branch is a column of its own; earlier commits are named BRANCH/ID.
        """
        ALTER TABLE snapshots ADD COLUMN branch TEXT;
        UPDATE snapshots SET branch = substr(name, 1, instr(name, '/') - 1) WHERE kind = 'commit' AND instr(name, '/') > 1;
        """,
        // 7: The audit log is hash-chained (earlier entries are sealed in order when the database is
        // opened); proposals, reviews, the uids that wrote to each session, the store's policy (in meta).
        """
        ALTER TABLE audit ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE audit ADD COLUMN result TEXT NOT NULL DEFAULT 'ok';
        ALTER TABLE audit ADD COLUMN prev TEXT;
        ALTER TABLE audit ADD COLUMN hash TEXT;
        CREATE TABLE proposals(
          id INTEGER PRIMARY KEY, pid TEXT NOT NULL UNIQUE, session INTEGER NOT NULL, author INTEGER NOT NULL,
          branch TEXT NOT NULL, root BLOB NOT NULL, snapshot INTEGER NOT NULL, base_commit INTEGER,
          title TEXT NOT NULL, message TEXT NOT NULL, meta TEXT NOT NULL, state TEXT NOT NULL,
          created REAL NOT NULL, writers TEXT NOT NULL);
        CREATE TABLE reviews(
          id INTEGER PRIMARY KEY, proposal INTEGER NOT NULL, reviewer INTEGER NOT NULL, time REAL NOT NULL,
          verdict TEXT NOT NULL, comment TEXT NOT NULL, root BLOB NOT NULL, envelope TEXT NOT NULL DEFAULT '');
        CREATE INDEX reviews_proposal ON reviews(proposal, id);
        CREATE TABLE writers(session INTEGER NOT NULL, uid INTEGER NOT NULL, PRIMARY KEY(session, uid)) WITHOUT ROWID;
        """,
        // 8: Writes in flight (checkpoints, imports): garbage collection keeps what they may reference.
        """
        CREATE TABLE writes(id INTEGER PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL);
        """,
        // 9: Tokens of the service surface: only their secrets' hashes.
        """
        CREATE TABLE tokens(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, uid INTEGER NOT NULL,
          hash TEXT NOT NULL UNIQUE, created REAL NOT NULL, revoked REAL);
        """,
        // 10: The index of a packed store (objects on S3-compatible storage): packs and where each object is.
        """
        CREATE TABLE packs(name TEXT PRIMARY KEY, bytes INTEGER NOT NULL, created REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE pack_objects(id BLOB PRIMARY KEY, pack TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
          written REAL NOT NULL, condemned REAL) WITHOUT ROWID;
        CREATE INDEX pack_objects_pack ON pack_objects(pack, offset);
        """,
    ]

    private func migrate() throws {
        try db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        let found = try db.query("SELECT value FROM meta WHERE key='schema'").first?.first?.text.flatMap { Int($0) } ?? 0
        if found > Catalog.schemaVersion {
            throw DatabaseError(code: SQLITE_ERROR, message: "schema version \(found) is newer than this aetherfs (\(Catalog.schemaVersion)); upgrade aetherfs")
        }
        for (i, sql) in Catalog.migrations.enumerated() where found < i + 1 {
            try db.transaction {
                if !sql.isEmpty { try db.execute(sql) }
                try db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('schema', '\(i + 1)')")
                if i + 1 == 7 { try sealEarlierAudit() }
            }
        }
    }

    /// Seals the audit entries written before schema 7, in order, as the first links of the chain.
    private func sealEarlierAudit() throws {
        var prev = AuditRecord.genesis
        for r in try db.query("SELECT \(Catalog.auditColumns) FROM audit ORDER BY id") {
            let sealed = try Catalog.auditRecord(r).sealed(id: r[0].int ?? 0, after: prev)
            _ = try db.run("UPDATE audit SET prev=?, hash=? WHERE id=?", .text(sealed.prev), .text(sealed.hash), .int(sealed.id))
            prev = sealed.hash
        }
    }

    /// Runs `body` in one transaction; `durable` waits for the disk before returning.
    public func transaction<T>(durable: Bool = false, _ body: () throws -> T) throws -> T {
        try db.transaction(durable: durable, body)
    }

    // MARK: sessions

    public func insertSession(_ s: SessionRecord) throws -> Int64 {
        try db.insert("""
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
        try db.query("SELECT \(Catalog.sessionColumns) FROM sessions WHERE name=?", .text(name)).first.map { try Catalog.session($0) }
    }

    public func session(id: Int64) throws -> SessionRecord? {
        try db.query("SELECT \(Catalog.sessionColumns) FROM sessions WHERE id=?", .int(id)).first.map { try Catalog.session($0) }
    }

    public func sessions() throws -> [SessionRecord] {
        try db.query("SELECT \(Catalog.sessionColumns) FROM sessions ORDER BY id").map { try Catalog.session($0) }
    }

    public func updateSessionBase(_ id: Int64, baseRoot: ObjectID, baseSnapshot: Int64?, head: Int64?) throws {
        try db.run("UPDATE sessions SET base_root=?, base_snapshot=?, head=?, last_used=? WHERE id=?",
                   .blob(baseRoot.bytes), baseSnapshot.map { .int($0) } ?? .null, head.map { .int($0) } ?? .null,
                   .real(secondsNow()), .int(id))
    }

    public func setSessionRoot(_ id: Int64, baseRoot: ObjectID) throws {
        try db.run("UPDATE sessions SET base_root=? WHERE id=?", .blob(baseRoot.bytes), .int(id))
    }

    public func setNextIno(_ id: Int64, _ next: UInt64) throws {
        try db.run("UPDATE sessions SET next_ino=? WHERE id=?", .int(Int64(next)), .int(id))
    }

    public func touchSession(_ id: Int64) throws {
        try db.run("UPDATE sessions SET last_used=? WHERE id=?", .real(secondsNow()), .int(id))
    }

    public func setSessionState(_ id: Int64, _ state: String) throws {
        try db.run("UPDATE sessions SET state=?, last_used=? WHERE id=?", .text(state), .real(secondsNow()), .int(id))
    }

    public func deleteSession(_ id: Int64) throws {
        try db.run("DELETE FROM sessions WHERE id=?", .int(id))
    }

    // MARK: snapshots

    public func insertSnapshot(_ s: SnapshotRecord) throws -> Int64 {
        try db.insert("""
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
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE id=?", .int(id)).first.map { try Catalog.snapshot($0) }
    }

    /// The session's checkpoints, oldest first.
    public func checkpoints(session: Int64) throws -> [SnapshotRecord] {
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE session=? AND kind='checkpoint' ORDER BY id", .int(session)).map { try Catalog.snapshot($0) }
    }

    /// Every snapshot whose display id starts with `prefix`.
    public func snapshots(sidPrefix prefix: String) throws -> [SnapshotRecord] {
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE substr(sid, 1, ?)=? ORDER BY id",
                     .int(Int64(prefix.count)), .text(prefix)).map { try Catalog.snapshot($0) }
    }

    public func setBaseCommit(session: Int64, _ commit: Int64?) throws {
        try db.run("UPDATE sessions SET base_commit=? WHERE id=?", commit.map { .int($0) } ?? .null, .int(session))
    }

    /// Snapshots of one kind, newest first.
    public func deleteSnapshot(_ id: Int64) throws {
        _ = try db.run("DELETE FROM snapshots WHERE id=?", .int(id))
    }

    public func setSnapshotParent(_ id: Int64, _ parent: Int64?) throws {
        _ = try db.run("UPDATE snapshots SET parent=? WHERE id=?", parent.map { .int($0) } ?? .null, .int(id))
    }

    public func snapshots(kind: SnapshotKind) throws -> [SnapshotRecord] {
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE kind=? ORDER BY id DESC", .text(kind.rawValue)).map { try Catalog.snapshot($0) }
    }

    /// Changes whenever a snapshot is added or a branch is created, moved or deleted (snapshots are never
    /// deleted, so the newest id tells whether one came).
    public func snapshotsVersion() throws -> String {
        let r = try db.query("SELECT (SELECT max(id) FROM snapshots), (SELECT group_concat(name || ':' || head, '/') FROM branches)").first
        return "\(r?[0].int ?? 0) \(r?[1].text ?? "")"
    }

    // MARK: branches

    public func branches() throws -> [BranchRecord] {
        try db.query("SELECT name, head FROM branches ORDER BY name").map { BranchRecord(name: $0[0].text ?? "", head: $0[1].int ?? 0) }
    }

    public func branch(_ name: String) throws -> Int64? {
        try db.query("SELECT head FROM branches WHERE name=?", .text(name)).first?.first?.int
    }

    public func createBranch(_ name: String, head: Int64) throws {
        try db.run("INSERT INTO branches(name, head, created) VALUES(?,?,?)", .text(name), .int(head), .real(secondsNow()))
    }

    /// Moves a branch only if it still points at `expected`; returns whether it moved.
    public func moveBranch(_ name: String, from expected: Int64, to head: Int64) throws -> Bool {
        try db.run("UPDATE branches SET head=? WHERE name=? AND head=?", .int(head), .text(name), .int(expected)) == 1
    }

    public func deleteBranch(_ name: String) throws -> Bool {
        try db.run("DELETE FROM branches WHERE name=?", .text(name)) == 1
    }

    // MARK: live nodes

    public func upsertNode(session: Int64, _ n: NodeRecord) throws {
        try db.run("""
            INSERT OR REPLACE INTO nodes(session, ino, kind, mode, uid, gid, size, atime, mtime, ctime, nlink, rdev,
              target, content, upper, materialized, dirty, link_group, xattrs)
            VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
            """, .int(session), .int(Int64(bitPattern: n.ino)), .int(Int64(n.kind)), .int(Int64(n.mode)),
            .int(Int64(n.uid)), .int(Int64(n.gid)), .int(Int64(bitPattern: n.size)), .int(n.atime), .int(n.mtime),
            .int(n.ctime), .int(Int64(n.nlink)), .int(Int64(bitPattern: n.rdev)), .blob(n.target),
            n.content.map { .blob($0.bytes) } ?? .null, .int(n.upper ? 1 : 0), .int(n.materialized ? (n.overlay ? 2 : 1) : 0),
            .int(n.dirty ? 1 : 0), .int(Int64(bitPattern: n.linkGroup)), .blob(n.xattrs))
    }

    public func deleteNode(session: Int64, ino: UInt64) throws {
        try db.run("DELETE FROM nodes WHERE session=? AND ino=?", .int(session), .int(Int64(bitPattern: ino)))
        try db.run("DELETE FROM dentries WHERE session=? AND parent=?", .int(session), .int(Int64(bitPattern: ino)))
        try db.run("DELETE FROM xattrs WHERE session=? AND ino=?", .int(session), .int(Int64(bitPattern: ino)))
    }

    /// Sets (`value` non-nil) or removes one extended attribute of a live node.
    public func setXattr(session: Int64, ino: UInt64, name: [UInt8], value: [UInt8]?) throws {
        if let value {
            try db.run("INSERT OR REPLACE INTO xattrs(session, ino, name, value) VALUES(?,?,?,?)",
                       .int(session), .int(Int64(bitPattern: ino)), .blob(name), .blob(value))
        } else {
            try db.run("DELETE FROM xattrs WHERE session=? AND ino=? AND name=?",
                       .int(session), .int(Int64(bitPattern: ino)), .blob(name))
        }
    }

    /// Replaces every extended attribute row of a live node.
    public func replaceXattrs(session: Int64, ino: UInt64, _ all: [(name: [UInt8], value: [UInt8])]) throws {
        try db.run("DELETE FROM xattrs WHERE session=? AND ino=?", .int(session), .int(Int64(bitPattern: ino)))
        for x in all { try setXattr(session: session, ino: ino, name: x.name, value: x.value) }
    }

    /// Every extended attribute row of a session's live nodes.
    public func xattrs(session: Int64) throws -> [(ino: UInt64, name: [UInt8], value: [UInt8])] {
        var out: [(UInt64, [UInt8], [UInt8])] = []
        try db.forEach("SELECT ino, name, value FROM xattrs WHERE session=?", [.int(session)]) { r in
            out.append((UInt64(bitPattern: r[0].int ?? 0), r[1].blob ?? [], r[2].blob ?? []))
        }
        return out
    }

    public func nodes(session: Int64) throws -> [NodeRecord] {
        var out: [NodeRecord] = []
        try db.forEach("""
            SELECT ino, kind, mode, uid, gid, size, atime, mtime, ctime, nlink, rdev, target, content, upper,
              materialized, dirty, link_group, xattrs FROM nodes WHERE session=?
            """, [.int(session)]) { r in
            let content = try r[12].blob.map { (b) throws(MetadataError) in
                guard let id = ObjectID(bytes: b) else { throw Catalog.damaged("inode \(r[0].int ?? 0) of session #\(session) has no valid content id") }
                return id
            }
            out.append(NodeRecord(
                ino: UInt64(bitPattern: r[0].int ?? 0), kind: UInt8(r[1].int ?? 0), mode: UInt32(r[2].int ?? 0),
                uid: UInt32(r[3].int ?? 0), gid: UInt32(r[4].int ?? 0), size: UInt64(bitPattern: r[5].int ?? 0),
                atime: r[6].int ?? 0, mtime: r[7].int ?? 0, ctime: r[8].int ?? 0, nlink: UInt32(r[9].int ?? 1),
                rdev: UInt64(bitPattern: r[10].int ?? 0), target: r[11].blob ?? [], content: content,
                upper: r[13].int == 1, materialized: (r[14].int ?? 0) != 0, overlay: r[14].int == 2, dirty: r[15].int == 1,
                linkGroup: UInt64(bitPattern: r[16].int ?? 0), xattrs: r[17].blob ?? []))
        }
        return out
    }

    public func setDentry(session: Int64, parent: UInt64, name: [UInt8], ino: UInt64) throws {
        try db.run("INSERT OR REPLACE INTO dentries(session, parent, name, ino) VALUES(?,?,?,?)",
                   .int(session), .int(Int64(bitPattern: parent)), .blob(name), .int(Int64(bitPattern: ino)))
    }

    public func removeDentry(session: Int64, parent: UInt64, name: [UInt8]) throws {
        try db.run("DELETE FROM dentries WHERE session=? AND parent=? AND name=?",
                   .int(session), .int(Int64(bitPattern: parent)), .blob(name))
    }

    public func dentries(session: Int64) throws -> [(parent: UInt64, name: [UInt8], ino: UInt64)] {
        var out: [(UInt64, [UInt8], UInt64)] = []
        try db.forEach("SELECT parent, name, ino FROM dentries WHERE session=?", [.int(session)]) { r in
            out.append((UInt64(bitPattern: r[0].int ?? 0), r[1].blob ?? [], UInt64(bitPattern: r[2].int ?? 0)))
        }
        return out
    }

    /// Drops a session's whole working layer (restore, or a fresh start on a new base).
    public func clearWorkingLayer(session: Int64) throws {
        try db.run("DELETE FROM dentries WHERE session=?", .int(session))
        try db.run("DELETE FROM nodes WHERE session=?", .int(session))
        try db.run("DELETE FROM xattrs WHERE session=?", .int(session))
    }

    // MARK: checks

    /// SQLite's own integrity check: `["ok"]`, or the problems it found.
    public func integrityCheck() throws -> [String] {
        try db.query("PRAGMA integrity_check").map { $0.first?.text ?? "" }
    }

    /// Every snapshot record's id, oldest first.
    public func snapshotIDs() throws -> [Int64] {
        try db.query("SELECT id FROM snapshots ORDER BY id").compactMap { $0.first?.int }
    }

    // MARK: leases

    private static let leaseColumns = "session, host, pid, mountpoint, acquired, expires"

    private static func lease(_ r: [SQLValue]) -> LeaseRecord {
        LeaseRecord(session: r[0].int ?? 0, host: r[1].text ?? "", pid: Int32(truncatingIfNeeded: r[2].int ?? 0),
                    mountpoint: r[3].text, acquired: r[4].real ?? 0, expires: r[5].real ?? 0)
    }

    private func store(_ l: LeaseRecord) throws {
        try db.run("INSERT OR REPLACE INTO leases(\(Catalog.leaseColumns)) VALUES(?,?,?,?,?,?)", .int(l.session), .text(l.host),
                   .int(Int64(l.pid)), l.mountpoint.map { .text($0) } ?? .null, .real(l.acquired), .real(l.expires))
    }

    public func takeLease(_ lease: LeaseRecord, replacing stale: (LeaseRecord) -> Bool) throws -> LeaseRecord? {
        try db.transaction(durable: true) {
            if let standing = try self.lease(session: lease.session), !standing.sameHolder(lease), !stale(standing) { return standing }
            try store(lease)
            return nil
        }
    }

    public func renewLease(_ lease: LeaseRecord) throws -> Bool {
        try db.transaction {
            guard let standing = try self.lease(session: lease.session), standing.sameHolder(lease) else { return false }
            try store(lease)
            return true
        }
    }

    public func releaseLease(_ lease: LeaseRecord) throws {
        try db.run("DELETE FROM leases WHERE session=? AND host=? AND pid=?", .int(lease.session), .text(lease.host), .int(Int64(lease.pid)))
    }

    public func lease(session: Int64) throws -> LeaseRecord? {
        try db.query("SELECT \(Catalog.leaseColumns) FROM leases WHERE session=?", .int(session)).first.map(Catalog.lease)
    }

    public func leases() throws -> [LeaseRecord] {
        try db.query("SELECT \(Catalog.leaseColumns) FROM leases ORDER BY session").map(Catalog.lease)
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
        try db.atomically {
            let last = try db.query("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").first
            let sealed = entry.sealed(id: (last?[0].int ?? 0) + 1, after: last?[1].text ?? AuditRecord.genesis)
            _ = try db.run("INSERT INTO audit(id, time, uid, pid, action, session, detail, result, prev, hash) VALUES(?,?,?,?,?,?,?,?,?,?)",
                           .int(sealed.id), .real(sealed.time), .int(Int64(sealed.uid)), .int(Int64(sealed.pid)), .text(sealed.action),
                           .text(sealed.session), .text(sealed.detail), .text(sealed.result), .text(sealed.prev), .text(sealed.hash))
            return sealed
        }
    }

    public func auditRecords() throws -> [AuditRecord] {
        try db.query("SELECT \(Catalog.auditColumns) FROM audit ORDER BY id").map(Catalog.auditRecord)
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
        if try !db.query("SELECT 1 FROM proposals WHERE pid=?", .text(p.pid)).isEmpty {
            throw MetadataError(.conflict, "proposal \(p.pid) exists")
        }
        return try db.insert("""
            INSERT INTO proposals(pid, session, author, branch, root, snapshot, base_commit, title, message, meta, state, created, writers)
            VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)
            """, .text(p.pid), .int(p.session), .int(Int64(p.author)), .text(p.branch), .blob(p.root.bytes), .int(p.snapshot),
            p.baseCommit.map { .int($0) } ?? .null, .text(p.title), .text(p.message), .text(JSONText.encode(p.meta)),
            .text(p.state.rawValue), .real(p.created), .text(p.writers.map(String.init).joined(separator: ",")))
    }

    public func proposal(id: Int64) throws -> ProposalRecord? {
        try db.query("SELECT \(Catalog.proposalColumns) FROM proposals WHERE id=?", .int(id)).first.map(Catalog.proposal)
    }

    public func proposals(pidPrefix prefix: String) throws -> [ProposalRecord] {
        try db.query("SELECT \(Catalog.proposalColumns) FROM proposals WHERE substr(pid, 1, ?) = ? ORDER BY id",
                     .int(Int64(prefix.utf8.count)), .text(prefix)).map(Catalog.proposal)
    }

    public func proposals() throws -> [ProposalRecord] {
        try db.query("SELECT \(Catalog.proposalColumns) FROM proposals ORDER BY id").map(Catalog.proposal)
    }

    public func setProposalState(_ id: Int64, from expected: ProposalState, to state: ProposalState) throws -> Bool {
        try db.run("UPDATE proposals SET state=? WHERE id=? AND state=?", .text(state.rawValue), .int(id), .text(expected.rawValue)) == 1
    }

    public func insertReview(_ r: ReviewRecord) throws -> Int64 {
        try db.insert("INSERT INTO reviews(proposal, reviewer, time, verdict, comment, root, envelope) VALUES(?,?,?,?,?,?,?)",
                      .int(r.proposal), .int(Int64(r.reviewer)), .real(r.time), .text(r.verdict.rawValue), .text(r.comment), .blob(r.root.bytes),
                      .text(r.envelope))
    }

    public func reviews(proposal: Int64) throws -> [ReviewRecord] {
        try db.query("SELECT id, proposal, reviewer, time, verdict, comment, root, envelope FROM reviews WHERE proposal=? ORDER BY id", .int(proposal)).map { r in
            guard let verdict = r[4].text.flatMap(ReviewRecord.Verdict.init(rawValue:)), let root = r[6].blob.flatMap({ ObjectID(bytes: $0) }) else {
                throw Catalog.damaged("review \(r[0].int ?? 0) has no valid verdict or root")
            }
            return ReviewRecord(id: r[0].int ?? 0, proposal: r[1].int ?? 0, reviewer: UInt32(r[2].int ?? 0), time: r[3].real ?? 0,
                                verdict: verdict, comment: r[5].text ?? "", root: root, envelope: r[7].text ?? "")
        }
    }

    // MARK: policy and writers

    public func policyText() throws -> String? {
        try db.query("SELECT value FROM meta WHERE key='policy'").first?.first?.text
    }

    public func setPolicyText(_ text: String) throws {
        _ = try db.run("INSERT OR REPLACE INTO meta(key, value) VALUES('policy', ?)", .text(text))
    }

    // MARK: tokens

    public func insertToken(_ t: TokenRecord) throws -> Int64 {
        if try !db.query("SELECT 1 FROM tokens WHERE name=?", .text(t.name)).isEmpty {
            throw MetadataError(.conflict, "token \(t.name) exists")
        }
        return try db.insert("INSERT INTO tokens(name, scope, uid, hash, created, revoked) VALUES(?,?,?,?,?,?)",
                             .text(t.name), .text(t.scope.rawValue), .int(Int64(t.uid)), .text(t.hash), .real(t.created),
                             t.revoked.map { .real($0) } ?? .null)
    }

    private static func token(_ r: [SQLValue]) throws -> TokenRecord {
        guard let scope = r[2].text.flatMap(TokenScope.init(rawValue:)) else { throw MetadataError(.damaged, "token \(r[1].text ?? "?") has no scope") }
        return TokenRecord(id: r[0].int ?? 0, name: r[1].text ?? "", scope: scope, uid: UInt32(truncatingIfNeeded: r[3].int ?? 0),
                           hash: r[4].text ?? "", created: r[5].real ?? 0, revoked: r[6].real)
    }

    public func tokens() throws -> [TokenRecord] {
        try db.query("SELECT id, name, scope, uid, hash, created, revoked FROM tokens ORDER BY id").map(Catalog.token)
    }

    public func token(hash: String) throws -> TokenRecord? {
        try db.query("SELECT id, name, scope, uid, hash, created, revoked FROM tokens WHERE hash=?", .text(hash)).first.map(Catalog.token)
    }

    public func revokeToken(name: String) throws -> Bool {
        try db.run("UPDATE tokens SET revoked=? WHERE name=? AND revoked IS NULL", .real(secondsNow()), .text(name)) > 0
    }

    public func beginWrite(_ lease: WriteLease) throws -> Int64 {
        try db.atomically {
            try db.insert("INSERT INTO writes(host, pid, started) VALUES(?,?,?)", .text(lease.host), .int(Int64(lease.pid)), .real(lease.started))
        }
    }

    public func endWrite(_ id: Int64) throws {
        _ = try db.run("DELETE FROM writes WHERE id=?", .int(id))
    }

    public func writes() throws -> [WriteLease] {
        try db.query("SELECT id, host, pid, started FROM writes ORDER BY id").map {
            WriteLease(id: $0[0].int ?? 0, host: $0[1].text ?? "", pid: Int32(truncatingIfNeeded: $0[2].int ?? 0), started: $0[3].real ?? 0)
        }
    }

    public func setPublicKey(uid: UInt32, _ key: String) throws {
        _ = try db.run("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", .text("pubkey:\(uid)"), .text(key))
    }

    public func publicKeys() throws -> [UInt32: String] {
        var out: [UInt32: String] = [:]
        for r in try db.query("SELECT key, value FROM meta WHERE key LIKE 'pubkey:%'") {
            if let uid = (r[0].text?.dropFirst(7)).flatMap({ UInt32($0) }), let v = r[1].text { out[uid] = v }
        }
        return out
    }

    public func addWriter(session: Int64, uid: UInt32) throws {
        _ = try db.run("INSERT OR IGNORE INTO writers(session, uid) VALUES(?,?)", .int(session), .int(Int64(uid)))
    }

    public func writers(session: Int64) throws -> [UInt32] {
        try db.query("SELECT uid FROM writers WHERE session=? ORDER BY uid", .int(session)).map { UInt32($0[0].int ?? 0) }
    }

    public func resetWriters(session: Int64) throws {
        _ = try db.run("DELETE FROM writers WHERE session=?", .int(session))
    }
}

/// The pack index of a store whose objects are packed (`PackIndex`), in `meta.db`.
extension Catalog: PackIndex {
    static let packColumns = "id, pack, offset, length, written, condemned"

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
            try db.forEach("SELECT \(Catalog.packColumns) FROM pack_objects WHERE id IN (\(marks))", part.map { .blob($0.bytes) }) {
                let o = try Catalog.packedObject($0)
                out[o.id] = o
            }
        }
        return out
    }

    public func insertPack(_ pack: PackRecord, _ objects: [PackedObject]) throws {
        try db.atomically {
            _ = try db.run("INSERT OR REPLACE INTO packs(name, bytes, created) VALUES(?,?,?)", .text(pack.name), .int(pack.bytes), .real(pack.created))
            for o in objects {
                // A condemned object written again is stored again: its new copy replaces the entry.
                _ = try db.run("""
                    INSERT INTO pack_objects(\(Catalog.packColumns)) VALUES(?,?,?,?,?,NULL)
                    ON CONFLICT(id) DO UPDATE SET pack=excluded.pack, offset=excluded.offset, length=excluded.length,
                      written=excluded.written, condemned=NULL WHERE condemned IS NOT NULL
                    """, .blob(o.id.bytes), .text(o.pack), .int(o.offset), .int(o.length), .real(o.written))
            }
        }
    }

    public func forEachObject(_ body: (PackedObject) throws -> Void) throws {
        // Collected first: `body` may call back into the index (the database's lock is not reentrant
        // across statements of one query).
        var all: [PackedObject] = []
        try db.forEach("SELECT \(Catalog.packColumns) FROM pack_objects", []) { all.append(try Catalog.packedObject($0)) }
        for o in all { try body(o) }
    }

    public func objects(inPack pack: String) throws -> [PackedObject] {
        try db.query("SELECT \(Catalog.packColumns) FROM pack_objects WHERE pack=? ORDER BY offset", .text(pack)).map(Catalog.packedObject)
    }

    public func packs() throws -> [(pack: PackRecord, liveBytes: Int64, liveObjects: Int)] {
        try db.query("""
            SELECT p.name, p.bytes, p.created, COALESCE(SUM(o.length), 0), COUNT(o.id)
            FROM packs p LEFT JOIN pack_objects o ON o.pack = p.name GROUP BY p.name ORDER BY p.name
            """).map { r in
            (PackRecord(name: r[0].text ?? "", bytes: r[1].int ?? 0, created: r[2].real ?? 0), r[3].int ?? 0, Int(r[4].int ?? 0))
        }
    }

    public func setCondemned(_ id: ObjectID, at: Double?) throws {
        _ = try db.run("UPDATE pack_objects SET condemned=? WHERE id=?", at.map { .real($0) } ?? .null, .blob(id.bytes))
    }

    public func removeObject(_ id: ObjectID) throws {
        _ = try db.run("DELETE FROM pack_objects WHERE id=?", .blob(id.bytes))
    }

    public func moveObjects(_ objects: [PackedObject]) throws {
        try db.atomically {
            for o in objects {
                _ = try db.run("UPDATE pack_objects SET pack=?, offset=?, length=? WHERE id=?", .text(o.pack), .int(o.offset), .int(o.length), .blob(o.id.bytes))
            }
        }
    }

    public func removePack(_ name: String) throws {
        _ = try db.run("DELETE FROM packs WHERE name=?", .text(name))
    }
}
