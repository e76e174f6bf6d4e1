#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

extension Workspace {
    /// Makes the session's tree that of `snapshot`, in place: names that exist in both keep their inode
    /// numbers (so open files read the restored bytes), the rest come and go. Returns what the kernel
    /// must forget. Cost follows the directories the kernel has loaded, not the tree's size.
    public func restore(to snapshot: SnapshotRecord, caller: UInt32) throws(AetherError) -> [Invalidation] {
        try authorize(caller, "restore")
        return try reset(to: snapshot.root) { () throws(AetherError) in
            try domain { try metadata.audit(uid: caller, action: "restore", session: session.name, detail: "\(snapshot.name) \(snapshot.sid)") }
            return snapshot
        }
    }

    /// Makes the tree `request.root` (already in the store) a new checkpoint of the session and the
    /// session's tree, as a restore to it would. Changes since the last checkpoint are checkpointed
    /// first ("before import: …"), so nothing written is lost.
    func adopt(_ request: ImportRequest, caller: UInt32) throws(AetherError) -> (SnapshotRecord, [Invalidation]) {
        try authorize(caller, "import")
        let message = try Workspace.validateRecord(message: request.message, meta: request.meta, what: "an import")
        guard let root = ObjectID(hex: request.root) else { throw .invalid("an import's \"root\" is a tree id: 64 hex digits") }
        guard try domain({ try repo.objects.contains(root) }) else { throw .notFound("tree \(request.root) in the store") }
        _ = try domain { try repo.content.treeHead(root) }
        if try node(Workspace.rootIno).rec.dirty {
            _ = try checkpoint(CheckpointRequest(message: "before import: \(message)"), author: caller)
        }
        var made = SnapshotRecord(sid: Workspace.newSnapshotID(), kind: .checkpoint, session: session.id, name: try checkpointName(request.name),
                                  root: root, parent: session.head, time: secondsNow(), author: caller, message: message,
                                  meta: request.meta, filesChanged: 0, bytesAdded: 0)
        let invalidations = try reset(to: root) { () throws(AetherError) in
            try domain {
                made.id = try metadata.insertSnapshot(made)
                try metadata.audit(uid: caller, action: "import", session: session.name, detail: "\(made.name) \(made.sid) \(root.hex)")
            }
            return made
        }
        return (made, invalidations)
    }

    /// Makes the session's tree `rootID`, in place, and the snapshot `record` returns (inside the
    /// durable transaction that changes the session) its base and head.
    func reset(to rootID: ObjectID, recording record: () throws(AetherError) -> SnapshotRecord) throws(AetherError) -> [Invalidation] {
        let tree = try domain { try repo.content.treeHead(rootID) }
        let root = try node(Workspace.rootIno)
        // The catalog changes first: if it fails, nothing changed; once it commits, the working layer
        // is the snapshot's, whatever happens to this process.
        var rootRecord = root.rec
        rootRecord.mode = tree.mode; rootRecord.uid = tree.uid; rootRecord.gid = tree.gid
        rootRecord.mtime = tree.mtime; rootRecord.ctime = tree.mtime; rootRecord.atime = tree.mtime
        rootRecord.content = rootID; rootRecord.dirty = false; rootRecord.materialized = false; rootRecord.overlay = false
        let snapshot = try changeAndRecord(durable: true) { () throws(AetherError) -> SnapshotRecord in
            let snapshot = try record()
            try domain {
                try working.clearWorkingLayer(session: session.id, base: rootID)
                try working.upsertNode(session: session.id, rootRecord)
                try saveXattrs(Workspace.rootIno, tree.xattrs)
                try metadata.updateSessionBase(session.id, baseRoot: rootID, baseSnapshot: snapshot.id, head: snapshot.id)
            }
            return snapshot
        }
        session.baseRoot = rootID
        session.baseSnapshot = snapshot.id
        session.head = snapshot.id
        // Hard links tie names in different directories together: with any, every loaded name is
        // visited (their nodes are made anew); without, unchanged directories and names are skipped.
        let thorough = !linkGroups.isEmpty || hasHardLinks()
        forgetWorkingLayerRows()
        var invalidations: [Invalidation] = []
        var detached: [Node] = []
        linkGroups = [:]
        do {
            try reconcile(root, with: rootID, thorough: thorough, invalidations: &invalidations, detached: &detached)
        } catch {
            // The record is restored; a tree that cannot be read now is reloaded lazily (and fails there).
            logger.error("restore could not reload every open directory: \(error)")
        }
        for n in detached where n.links.isEmpty { try? releaseIfUnreferenced(n) }
        return invalidations
    }

    /// A directory's path from the root ("" for the root), through the names the workspace has loaded.
    func path(of ino: UInt64) -> [UInt8]? {
        var parts: [[UInt8]] = []
        var at = ino
        while at != Workspace.rootIno {
            guard let link = nodes[at]?.links.first else { return nil }
            parts.append(link.name)
            at = link.parent
            if parts.count > 4096 { return nil }
        }
        return parts.reversed().reduce([]) { $0 + [47] + $1 }.dropFirst().map { $0 }
    }

    /// Brings a loaded directory (and the loaded directories below it) to the tree `id`. Unless
    /// `thorough`, a directory unchanged since its tree `id` is left as it is, and of a changed one only
    /// the names that differ are visited: those changed since its last tree, and those whose entries
    /// differ between that tree and `id` (of paged trees, only the pages that differ are compared).
    private func reconcile(_ dir: Node, with id: ObjectID, thorough: Bool, invalidations: inout [Invalidation], detached: inout [Node]) throws(AetherError) {
        if !thorough && !dir.rec.dirty && dir.contentID == id { return }
        let head = try domain { try repo.content.treeHead(id) }
        let previous = dir.contentID
        dir.rec.mode = head.mode; dir.rec.uid = head.uid; dir.rec.gid = head.gid
        dir.rec.mtime = head.mtime; dir.rec.ctime = head.mtime; dir.rec.atime = head.mtime
        dir.xattrs = head.xattrs
        dir.rec.content = id
        dir.rec.dirty = false
        dir.rec.materialized = false; dir.rec.overlay = false
        dir.rec.nlink = 2 + UInt32(head.subdirectoryCount)
        let changed = dir.changedNames
        dir.changedNames = []
        invalidations.append(.inode(dir.rec.ino))
        guard var current = dir.entries else { return }
        // The names to visit, and the snapshot's entries for them.
        var wanted: [[UInt8]: TreeEntry] = [:]
        var names = Set<[UInt8]>()
        if !thorough, let previous, let changed {
            names = changed
            let differing = try domain { try repo.content.differingEntries(previous, id) }
            for e in differing.old { names.insert(e.name) }
            for e in differing.new { names.insert(e.name); wanted[e.name] = e }
            for name in changed where wanted[name] == nil {
                if let e = try domain({ try repo.content.entry(named: name, in: id) }) { wanted[name] = e }
            }
        } else {
            for e in try domain({ try repo.content.tree(id) }).entries { names.insert(e.name); wanted[e.name] = e }
            for name in current.keys { names.insert(name) }
        }
        var kept = Set<UInt64>()
        for name in names.sorted(by: bytesPrecede) {
            let old = current[name]
            if let e = wanted[name] {
                if let ino = old, let n = nodes[ino], n.kind == e.kind, n.links.count == 1, e.linkGroup == 0, !kept.contains(ino) {
                    kept.insert(ino)
                    if e.kind == .directory {
                        try reconcile(n, with: e.content!, thorough: thorough, invalidations: &invalidations, detached: &detached)
                    } else {
                        let open = n.opens > 0
                        resetLeaf(n, to: e)
                        invalidations.append(.inode(ino))
                        if open && n.kind == .file, let dirPath = path(of: dir.rec.ino) {
                            let path = dirPath.isEmpty ? e.name : dirPath + [47] + e.name
                            invalidations.append(.resize(ino: ino, path: path, size: n.rec.size, mtime: n.rec.mtime))
                        }
                    }
                    invalidations.append(.entry(parent: dir.rec.ino, name: name))
                    continue
                }
                if let ino = old { unlink(name, ino, from: dir, detached: &detached) }
                // Hard links of the snapshot share one new node (the link-group map was cleared for this restore).
                current[name] = try adopt(e, into: dir)
            } else {
                guard let ino = old else { continue }
                unlink(name, ino, from: dir, detached: &detached)
                current[name] = nil
            }
            invalidations.append(.entry(parent: dir.rec.ino, name: name))
        }
        dir.entries = current
    }

    /// Takes `name` (naming `ino`) out of `dir` during a restore.
    private func unlink(_ name: [UInt8], _ ino: UInt64, from dir: Node, detached: inout [Node]) {
        guard let n = nodes[ino] else { return }
        n.links.removeAll { $0 == Link(parent: dir.rec.ino, name: name) }
        if n.links.isEmpty { n.rec.nlink = 0; detached.append(n) }
    }

    /// Gives a kept node the snapshot entry's content and attributes. A node no handle holds open gets a
    /// new generation, so the kernel drops what it cached of it; an open one keeps its inode for its
    /// readers (the caller has the kernel refresh its pages, size and time).
    private func resetLeaf(_ n: Node, to e: TreeEntry) {
        if n.opens == 0 { n.generation += 1 }
        if n.fd >= 0 { close(n.fd); n.fd = -1 }
        if n.rec.upper { upper.remove(n.rec.ino) }
        n.rec.mode = e.mode; n.rec.uid = e.uid; n.rec.gid = e.gid; n.rec.size = e.size
        n.rec.mtime = e.mtime; n.rec.atime = e.mtime; n.rec.ctime = e.mtime
        n.rec.nlink = e.nlink; n.rec.rdev = e.rdev; n.rec.target = e.target
        n.rec.content = e.content
        n.rec.upper = false; n.rec.dirty = false; n.rec.linkGroup = e.linkGroup
        n.metaPending = false
        n.xattrs = e.xattrs
    }
}
