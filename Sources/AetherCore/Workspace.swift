#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore
import Logging

/// A session's live tree: a copy-on-write working layer over its base snapshot.
///
/// Directories load lazily from their trees; a node gets a catalog row only when it, or something
/// below it, changes, and then every directory above it is *materialized* (its names become dentry
/// rows). File bytes written since the last checkpoint live in the session's upper files; a checkpoint
/// cuts them into the chunk store and writes trees only for the directories on changed paths.
///
/// Its parts, one job to a file: loading and saving the working layer (here), the POSIX operations
/// (`+Operations`), freezing the tree into a checkpoint (`+Checkpoint`), restoring one (`+Restore`),
/// history — fork, and commit as a freeze and a compare-and-swap of the branch (`+History`,
/// `Repository.publish`) — and the one entry for requests (`SessionRequest`, `perform`). The kernel's
/// references are the VFS's (`InodeHolders`).
///
/// Not thread-safe: the caller serializes every call (the VFS holds one lock per session).
public final class Workspace {
    public static let rootIno: UInt64 = 1
    public static let maxNameLength = 255
    /// The name in every session's root that the control surface takes (`.aether`): no tree holds it.
    public static let controlDirectoryName = Array(".aether".utf8)
    public static let maxXattrValue = 65536
    /// The most bytes a file's attribute names take in a listxattr reply (each with its NUL): the
    /// kernel's list is 64 KiB; some room is left for the names it adds.
    public static let maxXattrList = 60 * 1024

    public let repo: Repository
    public internal(set) var session: SessionRecord
    let logger: Logger
    var nodes: [UInt64: Node] = [:]
    var nextIno: UInt64
    var reservedIno: UInt64
    var linkGroups: [UInt64: UInt64] = [:]
    /// The uids already recorded as writers of this session (`noteWriter`).
    var writersNoted = Set<UInt32>()
    /// Writers whose recording failed (the shared metadata could not be reached); see `noteWriter`.
    var writersUnrecorded = Set<UInt32>()
    var modeChangedByWrites: [UInt64] = []
    /// The nodes with a row in the catalog (`persisted`), so that dropping the rows visits only them.
    var rowed = Set<UInt64>()
    /// Nodes that were given a second name in this session (pruned by `hasHardLinks`).
    var linked = Set<UInt64>()
    let upper: UpperFiles
    /// Who else holds inodes of this tree: the kernel through a mount, whose lookup counts the VFS
    /// keeps (`InodeTable`). A node without a name lives while it is held or open. None when the CLI
    /// opened the workspace alone.
    public weak var holders: (any InodeHolders)?
    var metadata: any MetadataStore { repo.metadata }
    var working: any WorkingLayerStore { repo.working }
    /// Runs a checkpoint's data work (cutting, hashing, compressing and storing written files) without
    /// the caller's lock while changes wait, so reads, lookups and opens go on beside it. Set by the VFS,
    /// which owns the lock; a workspace the CLI opened alone runs the work in place.
    public var outsideLock: (() -> Void) -> Void = { $0() }
    /// Hears how far a checkpoint's data work is (bytes read, bytes to read); what it throws (such as
    /// `.cancelled`) ends the checkpoint, which then changes nothing.
    public var progress: ((_ done: UInt64, _ total: UInt64) throws(AetherError) -> Void)?

    /// Opens the session's working layer as the catalog and the upper files left it.
    public init(repo: Repository, session: SessionRecord) throws(AetherError) {
        self.repo = repo
        self.session = session
        self.logger = repo.logger
        try Workspace.keepStaleLayer(repo, session)
        upper = try UpperFiles(directory: repo.sessionDirectory(session.id) + "/upper")
        repo.headroom.addWaiter { [weak upper] in upper?.settle() }
        nextIno = max(session.nextIno, 2)
        reservedIno = nextIno
        try load()
        // Opened for work (a mount, or the CLI acting on it): the session was used now.
        try domain { try metadata.touchSession(session.id) }
    }

    deinit {
        for node in nodes.values where node.fd >= 0 { close(node.fd) }
    }

    // MARK: loading

    /// A working layer this host made over another tree than the session's base: another host took the
    /// session over (its lease lapsed) and moved it on since. Those rows are changes this host had not
    /// checkpointed; they are not applied over the new base but kept as a session of their own,
    /// `NAME-unsaved-N` (over the tree they were made on, parent: this session), with their upper files.
    /// A layer that records no base yet (made before bases were recorded) lies over the session's.
    static func keepStaleLayer(_ repo: Repository, _ session: SessionRecord) throws(AetherError) {
        let id = session.id
        guard let made = try domain({ try repo.working.layerBase(session: id) }) else {
            try domain { try repo.working.setLayerBase(session: id, session.baseRoot) }
            return
        }
        guard made != session.baseRoot else { return }
        let rows = try domain { try repo.working.nodes(session: id) }
        // A layer of only its root, unchanged, holds no work: it is dropped.
        if rows.allSatisfy({ $0.ino == rootIno && !$0.dirty && !$0.materialized }) {
            try domain { try repo.working.clearWorkingLayer(session: id, base: session.baseRoot) }
            return
        }
        var n = 1
        while try domain({ try repo.metadata.session(named: "\(session.name)-unsaved-\(n)") }) != nil { n += 1 }
        let name = "\(session.name)-unsaved-\(n)"
        let nextIno = max(session.nextIno, (rows.map(\.ino).max() ?? 1) + 1)
        var kept = SessionRecord(name: name, baseRoot: made, baseSnapshot: nil, parentSession: id, owner: session.owner)
        kept.nextIno = nextIno
        let from = repo.sessionDirectory(id) + "/upper"
        var moved: String?
        defer { if let moved { Glibc.rename(moved, from) } }
        try domain {
            try repo.transaction(durable: true) {
                kept.id = try repo.metadata.insertSession(kept)
                try FileIO.makeDirectories(repo.sessionDirectory(kept.id))
                if FileIO.exists(from) {
                    guard Glibc.rename(from, repo.sessionDirectory(kept.id) + "/upper") == 0 else {
                        throw AetherError.system(errno, "cannot move \(from) to session \(name): \(String(cString: strerror(errno)))")
                    }
                    moved = repo.sessionDirectory(kept.id) + "/upper"
                }
                try repo.working.moveWorkingLayer(from: id, to: kept.id)
                try repo.working.setLayerBase(session: id, session.baseRoot)
                try repo.metadata.audit(uid: session.owner, action: "session-create", session: name,
                                        detail: "changes to \(session.name) over \(made.hex) this host had not checkpointed when another host moved it to \(session.baseRoot.hex)")
            }
            moved = nil
        }
        repo.logger.warning("session \(session.name): another host moved it on; the changes this host had not checkpointed are kept as session \(name)")
    }

    private func load() throws(AetherError) {
        let rows = try domain { try working.nodes(session: session.id) }
        if rows.isEmpty {
            try resetRoot(session.baseRoot)
        } else {
            for r in rows {
                guard let kind = NodeKind(rawValue: r.kind) else { throw .damaged("node \(r.ino) has unknown kind \(r.kind)") }
                let node = Node(rec: r, kind: kind)
                node.persisted = true
                // A row of schema 3 or earlier holds its xattrs itself; the next save makes them rows.
                node.xattrRowsSaved = r.xattrs.isEmpty
                node.linksRecorded = r.dirty
                rowed.insert(r.ino)
                if r.upper {
                    var st = stat()
                    if stat(upper.path(r.ino), &st) == 0 {
                        node.rec.size = UInt64(st.st_size)
                    } else {
                        logger.error("the upper file of inode \(r.ino) in session \(session.name) is missing; it reads as empty")
                        try upper.createEmpty(r.ino)
                        node.rec.size = 0
                    }
                }
                // A full listing (stores before catalog schema 3) is known only after a checkpoint.
                if kind == .directory && r.materialized && !r.overlay { node.entries = [:] }
                if kind == .directory && r.dirty && !r.overlay { node.changedNames = nil }
                if r.linkGroup != 0 { linkGroups[r.linkGroup] = r.ino }
                if kind != .directory && r.nlink > 1 { linked.insert(r.ino) }
                nodes[r.ino] = node
                nextIno = max(nextIno, r.ino + 1)
            }
            for x in try domain({ try working.xattrs(session: session.id) }) {
                nodes[x.ino]?.xattrs[String(decoding: x.name, as: UTF8.self)] = x.value
            }
            for d in try domain({ try working.dentries(session: session.id) }) {
                guard let parent = nodes[d.parent] else { continue }
                if parent.rec.overlay {
                    parent.overrides[d.name] = d.ino
                    if parent.rec.dirty { parent.changedNames?.insert(d.name) }
                } else {
                    parent.entries?[d.name] = d.ino
                }
                if let child = nodes[d.ino] { child.links.append(Link(parent: d.parent, name: d.name)) }
            }
            // Nodes that lost their last name before a crash.
            for (ino, node) in nodes where ino != Workspace.rootIno && node.links.isEmpty {
                try domain { try working.deleteNode(session: session.id, ino: ino) }
                upper.remove(ino)
                nodes[ino] = nil
            }
        }
        reservedIno = nextIno
        upper.removeStrays { nodes[$0]?.rec.upper == true }
    }

    /// Makes the root a clean, unloaded directory over `tree`, with a row of its own.
    private func resetRoot(_ tree: ObjectID) throws(AetherError) {
        let t = try domain { try repo.content.treeHead(tree) }
        let root = Node(rec: NodeRecord(ino: Workspace.rootIno, kind: NodeKind.directory.rawValue, mode: t.mode, uid: t.uid,
                                        gid: t.gid, size: 4096, atime: t.mtime, mtime: t.mtime, ctime: t.mtime,
                                        nlink: 2 + UInt32(t.subdirectoryCount),
                                        content: tree), kind: .directory)
        root.xattrs = t.xattrs
        nodes[Workspace.rootIno] = root
        try save(root)
    }

    func allocateIno() throws(AetherError) -> UInt64 {
        if nextIno >= reservedIno {
            reservedIno = nextIno + 4096
            // Only what the next mount starts from (numbers stay unique within a mount, and a mount
            // starts above its working layer's rows): a create does not fail for want of the shared
            // metadata.
            do { try metadata.setNextIno(session.id, reservedIno) } catch {
                logger.notice("session \(session.name): the next inode number is not recorded (\(error))")
            }
        }
        defer { nextIno += 1 }
        return nextIno
    }

    func node(_ ino: UInt64) throws(AetherError) -> Node {
        guard let n = nodes[ino] else { throw .notFound("inode \(ino)") }
        return n
    }

    func directory(_ ino: UInt64) throws(AetherError) -> Node {
        let n = try node(ino)
        guard n.kind == .directory else { throw .notDirectory }
        try ensureLoaded(n)
        return n
    }

    /// Gives a directory its names, from its tree (allocating inode numbers for them) and the dentry
    /// rows that override it.
    func ensureLoaded(_ dir: Node) throws(AetherError) {
        guard dir.entries == nil else { return }
        var entries: [[UInt8]: UInt64] = [:]
        if let id = dir.contentID {
            let tree = try domain { try repo.content.tree(id) }
            entries.reserveCapacity(tree.entries.count)
            for e in tree.entries where dir.overrides[e.name] == nil { entries[e.name] = try adopt(e, into: dir) }
        }
        for (name, ino) in dir.overrides where ino != 0 && nodes[ino] != nil { entries[name] = ino }
        dir.overrides = [:]
        dir.entries = entries
    }

    /// The node for a tree entry placed in `dir`: the node of a hard link already loaded when `canShare`
    /// allows, else a new node.
    func adopt(_ e: TreeEntry, into dir: Node, canShare: (UInt64, Node) -> Bool = { _, _ in true }) throws(AetherError) -> UInt64 {
        if e.linkGroup != 0, let ino = linkGroups[e.linkGroup], let existing = nodes[ino], canShare(ino, existing) {
            existing.links.append(Link(parent: dir.rec.ino, name: e.name))
            existing.linksRecorded = false
            return ino
        }
        let child = try makeNode(from: e)
        child.links = [Link(parent: dir.rec.ino, name: e.name)]
        nodes[child.rec.ino] = child
        if e.linkGroup != 0 { linkGroups[e.linkGroup] = child.rec.ino }
        return child.rec.ino
    }

    func makeNode(from e: TreeEntry) throws(AetherError) -> Node {
        let ino = try allocateIno()
        if e.kind == .directory {
            guard let id = e.content else { throw .damaged("directory entry without a tree") }
            let t = try domain { try repo.content.treeHead(id) }
            let rec = NodeRecord(ino: ino, kind: NodeKind.directory.rawValue, mode: t.mode, uid: t.uid, gid: t.gid,
                                 size: 4096, atime: t.mtime, mtime: t.mtime, ctime: t.mtime,
                                 nlink: 2 + UInt32(t.subdirectoryCount), content: id)
            let n = Node(rec: rec, kind: .directory)
            n.xattrs = t.xattrs
            return n
        }
        let rec = NodeRecord(ino: ino, kind: e.kind.rawValue, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size,
                             atime: e.mtime, mtime: e.mtime, ctime: e.mtime, nlink: e.nlink, rdev: e.rdev,
                             target: e.target, content: e.content, linkGroup: e.linkGroup)
        let n = Node(rec: rec, kind: e.kind)
        n.xattrs = e.xattrs
        return n
    }

    // MARK: persistence of changes

    func save(_ node: Node) throws(AetherError) {
        try domain {
            try working.upsertNode(session: session.id, node.rec)
            if !node.xattrRowsSaved {
                if !node.xattrs.isEmpty { try saveXattrs(node.rec.ino, node.xattrs) }
            } else {
                for name in node.changedXattrs {
                    try working.setXattr(session: session.id, ino: node.rec.ino, name: Array(name.utf8), value: node.xattrs[name])
                }
            }
        }
        node.changedXattrs = []
        node.xattrRowsSaved = true
        node.persisted = true
        rowed.insert(node.rec.ino)
        node.metaPending = false
    }

    /// Writes every extended attribute of a node as its rows (replacing any it had).
    func saveXattrs(_ ino: UInt64, _ xattrs: XattrMap) throws {
        try working.replaceXattrs(session: session.id, ino: ino, xattrs.map { (Array($0.key.utf8), $0.value) })
    }

    /// Marks `node` changed since the last checkpoint and saves it, materializing every directory above
    /// it. A node changed again writes only its own row: its names were recorded the first time (a
    /// hard link's new name records itself), so N links cost N rows, not N².
    func touch(_ node: Node) throws(AetherError) {
        let recorded = node.rec.dirty && node.persisted && node.linksRecorded
        node.rec.dirty = true
        try save(node)
        if !recorded { try markNamesChanged(node) }
    }

    /// Marks a directory and its ancestors changed, each with a row; from now on its names that differ
    /// from its tree get dentry rows (an overlay: unchanged names get none, however many there are).
    func materialize(_ dir: Node) throws(AetherError) {
        if dir.rec.materialized && dir.rec.dirty && dir.persisted { return }
        if !dir.rec.materialized {
            dir.rec.materialized = true
            dir.rec.overlay = true
        }
        dir.rec.dirty = true
        try save(dir)
        try markNamesChanged(dir)
    }

    /// Records in each directory holding `node` that its entry there changed (with a dentry row, as a
    /// changed node is read back from its own row), and materializes them.
    private func markNamesChanged(_ node: Node) throws(AetherError) {
        for l in node.links {
            let parent = try self.node(l.parent)
            parent.changedNames?.insert(l.name)
            try materialize(parent)
            try domain { try working.setDentry(session: session.id, parent: l.parent, name: l.name, ino: node.rec.ino) }
        }
        node.linksRecorded = true
    }

    /// Runs one change of the working layer atomically (a file operation: the shared metadata is not
    /// part of it, so a file's change costs no round trip to a shared database).
    func change<T>(durable: Bool = false, _ body: () throws(AetherError) -> T) throws(AetherError) -> T {
        do {
            return try working.transaction(durable: durable) { () throws -> T in try body() }
        } catch {
            throw AetherError.from(error)
        }
    }

    /// Runs one change of the working layer and the shared metadata atomically (a checkpoint, restore,
    /// commit: `Repository.transaction`), only while the session's base is still the one this workspace
    /// works over: on a shared store another host may have taken the session over (after this host's
    /// lease lapsed, the database out of reach) and moved it on; this host's changes are then refused
    /// (`busy`), not recorded over that host's, and stay in its working layer (`keepStaleLayer` keeps
    /// them as a session of their own when it opens the session again).
    func changeAndRecord<T>(durable: Bool = true, _ body: () throws(AetherError) -> T) throws(AetherError) -> T {
        do {
            return try repo.transaction(durable: durable) { () throws -> T in
                if let current = try metadata.sessionForUpdate(id: session.id), current.baseRoot != session.baseRoot {
                    throw AetherError.busy("session \(session.name) was moved on elsewhere (another host took it over?) since this mount loaded it; nothing was recorded, and the changes here are kept when the session is opened again")
                }
                return try body()
            }
        } catch {
            throw AetherError.from(error)
        }
    }

    func addEntry(_ dir: Node, _ name: [UInt8], _ child: Node) throws(AetherError) {
        try ensureLoaded(dir)
        try materialize(dir)
        dir.entries![name] = child.rec.ino
        dir.changedNames?.insert(name)
        child.links.append(Link(parent: dir.rec.ino, name: name))
        try domain { try working.setDentry(session: session.id, parent: dir.rec.ino, name: name, ino: child.rec.ino) }
    }

    func removeEntry(_ dir: Node, _ name: [UInt8], _ child: Node) throws(AetherError) {
        try ensureLoaded(dir)
        try materialize(dir)
        dir.entries![name] = nil
        dir.changedNames?.insert(name)
        child.links.removeAll { $0 == Link(parent: dir.rec.ino, name: name) }
        if dir.rec.overlay && dir.contentID != nil {
            // The name may be in the directory's tree: a row with inode 0 hides it.
            try domain { try working.setDentry(session: session.id, parent: dir.rec.ino, name: name, ino: 0) }
        } else {
            try domain { try working.removeDentry(session: session.id, parent: dir.rec.ino, name: name) }
        }
    }

    func stampChanged(_ dir: Node) {
        let now = fileTimeNow()
        dir.rec.mtime = now
        dir.rec.ctime = now
    }

    /// Drops a node that has no name left, once its holders (the kernel) and every handle let go of it.
    func releaseIfUnreferenced(_ node: Node) throws(AetherError) {
        guard node.rec.ino != Workspace.rootIno, node.links.isEmpty else { return }
        if node.persisted {
            try domain { try working.deleteNode(session: session.id, ino: node.rec.ino) }
            node.persisted = false
            node.xattrRowsSaved = false
            node.linksRecorded = false
            rowed.remove(node.rec.ino)
        }
        // Without a name or an open handle its bytes can never be read again: they go now, as on ext4
        // (the kernel's forget, which lets the node go, may come much later).
        guard node.opens == 0 else { return }
        if node.fd >= 0 { close(node.fd); node.fd = -1 }
        if node.rec.upper {
            upper.remove(node.rec.ino)
            node.rec.upper = false
        }
        if !(holders?.holds(node.rec.ino) ?? false) { nodes[node.rec.ino] = nil }
    }

    static func checkName(_ name: [UInt8]) throws(AetherError) {
        if name.count > maxNameLength { throw .nameTooLong }
        if name.isEmpty || name == [46] || name == [46, 46] || name.contains(47) || name.contains(0) {
            throw .invalid("bad file name")
        }
    }
}

/// Who holds inodes of a working tree besides its open handles: the kernel, whose references (lookup
/// counts) a mount's VFS keeps. Asked under the workspace's caller's lock.
public protocol InodeHolders: AnyObject {
    func holds(_ ino: UInt64) -> Bool
}
