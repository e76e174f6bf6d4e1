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
public final class Catalog: SQLMetadata, WorkingLayerStore, @unchecked Sendable {
    /// The schema this code writes. Older databases are migrated; newer ones are refused.
    public static var schemaVersion: Int { migrations.count }
    let db: Database

    public init(path: String) throws {
        let db = try Database(path: path)
        self.db = db
        super.init(connection: db)
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
    public func clearWorkingLayer(session: Int64, base: ObjectID?) throws {
        try db.run("DELETE FROM dentries WHERE session=?", .int(session))
        try db.run("DELETE FROM nodes WHERE session=?", .int(session))
        try db.run("DELETE FROM xattrs WHERE session=?", .int(session))
        if let base {
            try setLayerBase(session: session, base)
        } else {
            try db.run("DELETE FROM meta WHERE key=?", .text("layer:\(session)"))
        }
    }

    public func layerBase(session: Int64) throws -> ObjectID? {
        try db.query("SELECT value FROM meta WHERE key=?", .text("layer:\(session)")).first?.first?.text.flatMap { ObjectID(hex: $0) }
    }

    public func setLayerBase(session: Int64, _ base: ObjectID) throws {
        try db.run("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", .text("layer:\(session)"), .text(base.hex))
    }

    public func moveWorkingLayer(from session: Int64, to other: Int64) throws {
        try db.atomically {
            for table in ["dentries", "nodes", "xattrs"] {
                try db.run("UPDATE \(table) SET session=? WHERE session=?", .int(other), .int(session))
            }
            try db.run("UPDATE meta SET key=? WHERE key=?", .text("layer:\(other)"), .text("layer:\(session)"))
        }
    }

    // MARK: checks

    /// SQLite's own integrity check: `["ok"]`, or the problems it found.
    override public func integrityCheck() throws -> [String] {
        try db.query("PRAGMA integrity_check").map { $0.first?.text ?? "" }
    }

}
