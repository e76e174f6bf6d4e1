import CSQLite
#if canImport(Glibc)
import Glibc
#endif

/// The store's metadata database: sessions, snapshot records, each session's live nodes, the audit log.
///
/// Vocabulary: a *node* is one file, directory, symlink or FIFO of a session's working layer, numbered
/// by its inode number; a *dentry* is a name in a materialized directory. Only nodes that differ from
/// the session's base snapshot (or lie on the path to one) have rows. Since schema 3 a materialized
/// directory's dentries are *overrides* of its tree: a changed or new name points at its node, a row
/// with inode 0 hides a name of the tree (earlier stores list every name of a materialized directory).
public final class Catalog: @unchecked Sendable {
    /// The schema this code writes. Older databases are migrated; newer ones are refused.
    public static let schemaVersion = 4
    let db: Database

    public init(path: String) throws {
        db = try Database(path: path)
        try migrate()
    }

    private func migrate() throws {
        try db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        let found = try db.query("SELECT value FROM meta WHERE key='schema'").first?.first?.text.flatMap { Int($0) } ?? 0
        if found > Catalog.schemaVersion {
            throw DatabaseError(code: SQLITE_ERROR, message: "schema version \(found) is newer than this aetherfs (\(Catalog.schemaVersion)); upgrade aetherfs")
        }
        if found < 1 {
            try db.transaction {
                try db.execute("""
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
                INSERT OR REPLACE INTO meta(key, value) VALUES('schema', '1');
                """)
            }
        }
        if found < 2 {
            try db.transaction {
                try db.execute("""
                ALTER TABLE sessions ADD COLUMN base_commit INTEGER;
                CREATE TABLE branches(name TEXT PRIMARY KEY, head INTEGER NOT NULL, created REAL NOT NULL);
                CREATE INDEX snapshots_kind ON snapshots(kind, id);
                INSERT OR REPLACE INTO meta(key, value) VALUES('schema', '2');
                """)
            }
        }
        if found < 3 {
            // Overlay dentries (materialized = 2); rows of earlier schemas keep their meaning.
            try db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('schema', '3')")
        }
        if found < 4 {
            // A live node's extended attributes, one row each, so that setting one costs one row. Node rows
            // of earlier schemas keep theirs in `nodes.xattrs` until the node is saved again.
            try db.transaction {
                try db.execute("""
                CREATE TABLE xattrs(
                  session INTEGER NOT NULL, ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
                  PRIMARY KEY(session, ino, name)) WITHOUT ROWID;
                INSERT OR REPLACE INTO meta(key, value) VALUES('schema', '4');
                """)
            }
        }
    }

    /// Runs `body` in one transaction; `durable` waits for the disk before returning.
    public func transaction<T>(durable: Bool = false, _ body: () throws -> T) throws -> T {
        try db.transaction(durable: durable, body)
    }

    // MARK: sessions

    public func insertSession(_ s: SessionRecord) throws -> Int64 {
        try db.run("""
            INSERT INTO sessions(name, base_root, base_snapshot, parent_session, owner, state, created, last_used, next_ino, head, base_commit)
            VALUES(?,?,?,?,?,?,?,?,?,?,?)
            """, .text(s.name), .blob(s.baseRoot), s.baseSnapshot.map { .int($0) } ?? .null,
            s.parentSession.map { .int($0) } ?? .null, .int(Int64(s.owner)), .text(s.state),
            .real(s.created), .real(s.lastUsed), .int(Int64(s.nextIno)), s.head.map { .int($0) } ?? .null,
            s.baseCommit.map { .int($0) } ?? .null)
        return db.lastInsertRowID
    }

    private static let sessionColumns = "id, name, base_root, base_snapshot, parent_session, owner, state, created, last_used, next_ino, head, base_commit"

    private static func session(_ r: [SQLValue]) -> SessionRecord {
        SessionRecord(id: r[0].int!, name: r[1].text ?? "", baseRoot: r[2].blob ?? [], baseSnapshot: r[3].int,
                      parentSession: r[4].int, owner: UInt32(r[5].int ?? 0), state: r[6].text ?? "active",
                      created: r[7].real ?? 0, lastUsed: r[8].real ?? 0, nextIno: UInt64(r[9].int ?? 2), head: r[10].int,
                      baseCommit: r[11].int)
    }

    public func session(named name: String) throws -> SessionRecord? {
        try db.query("SELECT \(Catalog.sessionColumns) FROM sessions WHERE name=?", .text(name)).first.map(Catalog.session)
    }

    public func session(id: Int64) throws -> SessionRecord? {
        try db.query("SELECT \(Catalog.sessionColumns) FROM sessions WHERE id=?", .int(id)).first.map(Catalog.session)
    }

    public func sessions() throws -> [SessionRecord] {
        try db.query("SELECT \(Catalog.sessionColumns) FROM sessions ORDER BY id").map(Catalog.session)
    }

    public func updateSessionBase(_ id: Int64, baseRoot: [UInt8], baseSnapshot: Int64?, head: Int64?) throws {
        try db.run("UPDATE sessions SET base_root=?, base_snapshot=?, head=?, last_used=? WHERE id=?",
                   .blob(baseRoot), baseSnapshot.map { .int($0) } ?? .null, head.map { .int($0) } ?? .null,
                   .real(now()), .int(id))
    }

    /// The tree a session's working layer lies over.
    public func setSessionRoot(_ id: Int64, baseRoot: [UInt8]) throws {
        try db.run("UPDATE sessions SET base_root=? WHERE id=?", .blob(baseRoot), .int(id))
    }

    public func setNextIno(_ id: Int64, _ next: UInt64) throws {
        try db.run("UPDATE sessions SET next_ino=? WHERE id=?", .int(Int64(next)), .int(id))
    }

    public func touchSession(_ id: Int64) throws {
        try db.run("UPDATE sessions SET last_used=? WHERE id=?", .real(now()), .int(id))
    }

    /// Deletes a session with its live nodes; its snapshots stay until pruned.
    public func deleteSession(_ id: Int64) throws {
        try clearWorkingLayer(session: id)
        try db.run("DELETE FROM sessions WHERE id=?", .int(id))
    }

    // MARK: snapshots

    public func insertSnapshot(_ s: SnapshotRecord) throws -> Int64 {
        try db.run("""
            INSERT INTO snapshots(sid, kind, session, name, root, parent, time, author, message, meta, files_changed, bytes_added)
            VALUES(?,?,?,?,?,?,?,?,?,?,?,?)
            """, .text(s.sid), .text(s.kind), .int(s.session), .text(s.name), .blob(s.root),
            s.parent.map { .int($0) } ?? .null, .real(s.time), .int(Int64(s.author)), .text(s.message),
            .text(s.meta), .int(s.filesChanged), .int(s.bytesAdded))
        return db.lastInsertRowID
    }

    private static let snapshotColumns = "id, sid, kind, session, name, root, parent, time, author, message, meta, files_changed, bytes_added"

    private static func snapshot(_ r: [SQLValue]) -> SnapshotRecord {
        SnapshotRecord(id: r[0].int!, sid: r[1].text ?? "", kind: r[2].text ?? "", session: r[3].int ?? 0,
                       name: r[4].text ?? "", root: r[5].blob ?? [], parent: r[6].int, time: r[7].real ?? 0,
                       author: UInt32(r[8].int ?? 0), message: r[9].text ?? "", meta: r[10].text ?? "{}",
                       filesChanged: r[11].int ?? 0, bytesAdded: r[12].int ?? 0)
    }

    public func snapshot(id: Int64) throws -> SnapshotRecord? {
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE id=?", .int(id)).first.map(Catalog.snapshot)
    }

    /// The session's checkpoints, oldest first.
    public func checkpoints(session: Int64) throws -> [SnapshotRecord] {
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE session=? AND kind='checkpoint' ORDER BY id", .int(session)).map(Catalog.snapshot)
    }

    /// Every snapshot whose display id starts with `prefix`.
    public func snapshots(sidPrefix prefix: String) throws -> [SnapshotRecord] {
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE substr(sid, 1, ?)=? ORDER BY id",
                     .int(Int64(prefix.count)), .text(prefix)).map(Catalog.snapshot)
    }

    public func allSnapshotRoots() throws -> [[UInt8]] {
        try db.query("SELECT root FROM snapshots UNION SELECT base_root FROM sessions").compactMap { $0[0].blob }
    }

    public func setBaseCommit(session: Int64, _ commit: Int64?) throws {
        try db.run("UPDATE sessions SET base_commit=? WHERE id=?", commit.map { .int($0) } ?? .null, .int(session))
    }

    /// Snapshots of one kind, newest first.
    public func snapshots(kind: String) throws -> [SnapshotRecord] {
        try db.query("SELECT \(Catalog.snapshotColumns) FROM snapshots WHERE kind=? ORDER BY id DESC", .text(kind)).map(Catalog.snapshot)
    }

    /// Changes whenever a snapshot is added or a branch is created, moved or deleted (snapshots are never
    /// deleted, so the newest id tells whether one came).
    public func snapshotsVersion() throws -> String {
        let r = try db.query("SELECT (SELECT max(id) FROM snapshots), (SELECT group_concat(name || ':' || head, '/') FROM branches)").first
        return "\(r?[0].int ?? 0) \(r?[1].text ?? "")"
    }

    // MARK: branches

    public func branches() throws -> [(name: String, head: Int64)] {
        try db.query("SELECT name, head FROM branches ORDER BY name").map { ($0[0].text ?? "", $0[1].int ?? 0) }
    }

    public func branch(_ name: String) throws -> Int64? {
        try db.query("SELECT head FROM branches WHERE name=?", .text(name)).first?.first?.int
    }

    public func createBranch(_ name: String, head: Int64) throws {
        try db.run("INSERT INTO branches(name, head, created) VALUES(?,?,?)", .text(name), .int(head), .real(now()))
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
            n.content.map { .blob($0) } ?? .null, .int(n.upper ? 1 : 0), .int(n.materialized ? (n.overlay ? 2 : 1) : 0),
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
            out.append(NodeRecord(
                ino: UInt64(bitPattern: r[0].int ?? 0), kind: UInt8(r[1].int ?? 0), mode: UInt32(r[2].int ?? 0),
                uid: UInt32(r[3].int ?? 0), gid: UInt32(r[4].int ?? 0), size: UInt64(bitPattern: r[5].int ?? 0),
                atime: r[6].int ?? 0, mtime: r[7].int ?? 0, ctime: r[8].int ?? 0, nlink: UInt32(r[9].int ?? 1),
                rdev: UInt64(bitPattern: r[10].int ?? 0), target: r[11].blob ?? [], content: r[12].blob,
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

    // MARK: audit

    public func audit(uid: UInt32, action: String, session: String, detail: String) throws {
        try db.run("INSERT INTO audit(time, uid, action, session, detail) VALUES(?,?,?,?,?)",
                   .real(now()), .int(Int64(uid)), .text(action), .text(session), .text(detail))
    }
}

/// Seconds since the epoch, as stored in records.
public func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

public struct SessionRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var baseRoot: [UInt8]
    public var baseSnapshot: Int64?
    public var parentSession: Int64?
    public var owner: UInt32
    public var state: String
    public var created: Double
    public var lastUsed: Double
    public var nextIno: UInt64
    public var head: Int64?
    /// The commit this session's work builds on; a commit to that commit's branch must fast-forward from it.
    public var baseCommit: Int64?

    public init(id: Int64 = 0, name: String, baseRoot: [UInt8], baseSnapshot: Int64?, parentSession: Int64?,
                owner: UInt32, state: String = "active", created: Double = now(), lastUsed: Double = now(),
                nextIno: UInt64 = 2, head: Int64? = nil, baseCommit: Int64? = nil) {
        self.baseCommit = baseCommit
        self.id = id; self.name = name; self.baseRoot = baseRoot; self.baseSnapshot = baseSnapshot
        self.parentSession = parentSession; self.owner = owner; self.state = state; self.created = created
        self.lastUsed = lastUsed; self.nextIno = nextIno; self.head = head
    }
}

public struct SnapshotRecord: Sendable, Equatable {
    public var id: Int64
    /// The display id: 16 hex digits, unique in the store.
    public var sid: String
    public var kind: String
    public var session: Int64
    public var name: String
    public var root: [UInt8]
    public var parent: Int64?
    public var time: Double
    public var author: UInt32
    public var message: String
    /// A JSON object of string keys and values.
    public var meta: String
    public var filesChanged: Int64
    public var bytesAdded: Int64

    public init(id: Int64 = 0, sid: String, kind: String, session: Int64, name: String, root: [UInt8], parent: Int64?,
                time: Double, author: UInt32, message: String, meta: String, filesChanged: Int64, bytesAdded: Int64) {
        self.id = id; self.sid = sid; self.kind = kind; self.session = session; self.name = name; self.root = root
        self.parent = parent; self.time = time; self.author = author; self.message = message; self.meta = meta
        self.filesChanged = filesChanged; self.bytesAdded = bytesAdded
    }
}

/// One node of a working layer as stored. Times are nanoseconds since the epoch.
public struct NodeRecord: Sendable, Equatable {
    public var ino: UInt64
    /// 1 file, 2 directory, 3 symlink, 4 FIFO, 5 character device, 6 block device, 7 socket.
    public var kind: UInt8
    /// Permission bits with setuid, setgid and sticky (no file type bits).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var atime: Int64
    public var mtime: Int64
    public var ctime: Int64
    public var nlink: UInt32
    public var rdev: UInt64
    public var target: [UInt8]
    /// The object holding the content as of the base or last checkpoint: a manifest or a tree.
    public var content: [UInt8]?
    /// The file's bytes live in the session's upper file, not (only) in `content`.
    public var upper: Bool
    /// The directory's names are in dentry rows: all of them, or (`overlay`) those that differ from its tree.
    public var materialized: Bool
    /// A materialized directory's dentry rows override its tree's names (inode 0 hides one).
    public var overlay: Bool
    /// Changed since the last checkpoint.
    public var dirty: Bool
    /// Ties hard links of a base snapshot together (0 for none).
    public var linkGroup: UInt64
    /// The encoded extended attributes.
    public var xattrs: [UInt8]

    public init(ino: UInt64, kind: UInt8, mode: UInt32, uid: UInt32, gid: UInt32, size: UInt64, atime: Int64,
                mtime: Int64, ctime: Int64, nlink: UInt32, rdev: UInt64 = 0, target: [UInt8] = [], content: [UInt8]? = nil,
                upper: Bool = false, materialized: Bool = false, overlay: Bool = false, dirty: Bool = false, linkGroup: UInt64 = 0, xattrs: [UInt8] = []) {
        self.ino = ino; self.kind = kind; self.mode = mode; self.uid = uid; self.gid = gid; self.size = size
        self.atime = atime; self.mtime = mtime; self.ctime = ctime; self.nlink = nlink; self.rdev = rdev
        self.target = target; self.content = content; self.upper = upper; self.materialized = materialized; self.overlay = overlay
        self.dirty = dirty; self.linkGroup = linkGroup; self.xattrs = xattrs
    }
}
