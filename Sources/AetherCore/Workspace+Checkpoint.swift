#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

extension Workspace {
    /// Records the session's current tree as a durable checkpoint.
    ///
    /// Only directories on changed paths get new trees and only files written since the last checkpoint
    /// are cut into chunks, so the cost follows the change, not the session's size. `also` records what
    /// else comes with it (a proposal) in the same transaction. The checkpoint is
    /// durable when this returns: objects are synced before the record commits.
    public func checkpoint(_ request: CheckpointRequest, author: UInt32,
                           also: ((SnapshotRecord) throws(AetherError) -> Void)? = nil) throws(AetherError) -> SnapshotRecord {
        try authorize(author, also == nil ? "checkpoint" : "propose")
        let message = try Workspace.validateRecord(message: request.message, meta: request.meta, what: "a checkpoint")
        let name = try checkpointName(request.name)

        let sid = Workspace.newSnapshotID(), time = secondsNow(), parent = session.head
        var made: SnapshotRecord?
        _ = try freeze { (root, stats) throws(AetherError) in
            var record = SnapshotRecord(sid: sid, kind: .checkpoint, session: session.id, name: name, root: root,
                                        parent: parent, time: time, author: author, message: message, meta: request.meta,
                                        filesChanged: stats.files, bytesAdded: stats.bytes)
            try domain {
                record.id = try metadata.insertSnapshot(record)
                try metadata.updateSessionBase(session.id, baseRoot: root, baseSnapshot: record.id, head: record.id)
                try metadata.audit(uid: author, action: "checkpoint", session: session.name, detail: "\(name) \(record.sid)")
            }
            try also?(record)
            session.head = record.id
            session.baseSnapshot = record.id
            made = record
        }
        guard let made else { throw .failed("checkpoint \(name): the freeze wrote no record") }
        return made
    }

    /// The name a new checkpoint takes: `requested`, unless the session has one by that name, or the
    /// next free `cp-N`.
    func checkpointName(_ requested: String?) throws(AetherError) -> String {
        let existing = try domain { try metadata.checkpoints(session: session.id) }
        let taken = Set(existing.map(\.name))
        var name = requested ?? "cp-\(existing.count + 1)"
        if requested == nil {
            var n = existing.count + 1
            while taken.contains(name) { n += 1; name = "cp-\(n)" }
        }
        try Repository.validateName(name, what: "checkpoint")
        if taken.contains(name) { throw .exists("checkpoint \(name) in session \(session.name)") }
        return name
    }

    /// Writes the current tree into the store and returns its root. Only changed paths are re-hashed and
    /// only written files are cut into chunks, so the cost follows the change. `record` runs inside the
    /// durable transaction that makes the root the session's base and drops the working layer's rows
    /// (everything is in the tree now), after every object is synced: what it records is durable when
    /// `freeze` returns, and refers only to durable objects.
    func freeze(_ record: (ObjectID, (files: Int64, bytes: Int64)) throws(AetherError) -> Void) throws(AetherError) -> ObjectID {
        // A write in flight until its record commits: garbage collection keeps what it may reference.
        try repo.writing { () throws(AetherError) in try freezeWriting(record) }
    }

    private func freezeWriting(_ record: (ObjectID, (files: Int64, bytes: Int64)) throws(AetherError) -> Void) throws(AetherError) -> ObjectID {
        try repo.ensureRoom(for: 0)
        var stats = (files: Int64(0), bytes: Int64(0))
        var cleaned: [Node] = []
        let saved = session
        let root: ObjectID
        do {
            try assignLinkGroups()
            let ingested = try ingestWrittenFiles()
            root = try snapshotDirectory(try node(Workspace.rootIno), stats: &stats, cleaned: &cleaned, ingested: ingested)
            try domain { try repo.objects.sync() }
            let rootNode = try node(Workspace.rootIno)
            var rootRecord = rootNode.rec
            rootRecord.materialized = false
            rootRecord.overlay = false
            try changeAndRecord(durable: true) { () throws(AetherError) in
                try record(root, stats)
                try domain {
                    try metadata.setSessionRoot(session.id, baseRoot: root)
                    try working.clearWorkingLayer(session: session.id, base: root)
                    try working.upsertNode(session: session.id, rootRecord)
                    try saveXattrs(Workspace.rootIno, rootNode.xattrs)
                }
            }
            forgetWorkingLayerRows()
        } catch {
            // What this attempt cleaned is changed again; the next one writes those directories whole.
            session = saved
            for n in cleaned {
                n.rec.dirty = true
                if n.kind == .directory { n.changedNames = nil }
            }
            throw error
        }
        session.baseRoot = root
        // Files nobody holds open leave the working layer: their bytes are in the chunk store now.
        // (One held open keeps its upper file, without a row: a restart would find it stray and drop
        // it, losing nothing, as it holds what the tree holds until it is written again.)
        for n in cleaned where n.kind == .file && n.rec.upper && n.opens == 0 && n.rec.content != nil {
            if n.fd >= 0 { close(n.fd); n.fd = -1 }
            n.rec.upper = false
            upper.remove(n.rec.ino)
        }
        return root
    }

    /// Cuts every written file on a changed path into the chunk store, outside the session lock
    /// (`outsideLock`: changes wait meanwhile, so the files stay as they were when this started).
    /// Returns each file's manifest and new bytes by inode.
    private func ingestWrittenFiles() throws(AetherError) -> [UInt64: ContentStore.Ingested] {
        // Upper files are opened one at a time by path (a session may have written more files than a
        // process may hold open); with changes waiting, none is renamed or removed meanwhile.
        var work: [(ino: UInt64, path: String, size: UInt64)] = []
        var seen = Set<UInt64>()
        // The walk `snapshotDirectory` makes: changed directories, and in one whose changed names are
        // known, only those.
        func collect(_ dir: Node) throws(AetherError) {
            guard dir.rec.dirty || dir.contentID == nil else { return }
            try ensureLoaded(dir)
            let entries = dir.entries!
            let inos: [UInt64] = dir.contentID != nil && dir.changedNames != nil
                ? dir.changedNames!.compactMap { entries[$0] } : Array(entries.values)
            for ino in inos {
                guard let n = nodes[ino] else { continue }
                if n.kind == .directory { try collect(n); continue }
                guard n.rec.dirty, n.kind == .file, n.rec.upper, seen.insert(ino).inserted else { continue }
                work.append((ino, upper.path(ino), n.rec.size))
            }
        }
        try collect(try node(Workspace.rootIno))
        guard !work.isEmpty else { return [:] }
        var results: [UInt64: ContentStore.Ingested] = [:]
        var failure: AetherError?
        let content = repo.content
        let total = work.reduce(UInt64(0)) { $0 + $1.size }
        let progress = self.progress
        outsideLock {
            var before: UInt64 = 0
            for w in work {
                do {
                    try progress?(before, total)
                    let fd = try FileIO.open(w.path, O_RDONLY | O_CLOEXEC)
                    defer { close(fd) }
                    results[w.ino] = try content.ingest(FileBytes(fd: fd), size: w.size) { (done) throws(AetherError) in try progress?(before + done, total) }
                } catch {
                    failure = AetherError.from(error)
                    return
                }
                before += w.size
            }
        }
        if let failure { throw failure }
        return results
    }

    /// Whether a node of this session has more than one name now (git, for one, links and unlinks).
    func hasHardLinks() -> Bool {
        linked = linked.filter { (nodes[$0]?.rec.nlink ?? 0) > 1 }
        return !linked.isEmpty
    }

    /// In memory, after the working layer's rows were dropped: no node has a row or name rows.
    /// (Only nodes with rows can have pending metadata, a name listing or overrides.)
    func forgetWorkingLayerRows() {
        for ino in rowed {
            guard let n = nodes[ino] else { continue }
            n.persisted = false
            n.xattrRowsSaved = false
            n.linksRecorded = false
            n.metaPending = false
            if n.kind == .directory { n.rec.materialized = false; n.rec.overlay = false; n.overrides = [:] }
        }
        rowed = [Workspace.rootIno]
        nodes[Workspace.rootIno]?.persisted = true
    }

    static func newSnapshotID() -> String {
        let digits = Array("0123456789abcdef")
        return String((0..<16).map { _ in digits[Int.random(in: 0..<16)] })
    }

    /// Writes the tree of a directory that changed (recursing only into changed children); returns its id.
    /// When the directory's names changed since its last tree are known (`changedNames`: names added,
    /// removed or whose node changed), only their entries are written over that tree (of a paged tree,
    /// only the pages holding them).
    private func snapshotDirectory(_ dir: Node, stats: inout (files: Int64, bytes: Int64), cleaned: inout [Node],
                                   ingested: [UInt64: ContentStore.Ingested]) throws(AetherError) -> ObjectID {
        if !dir.rec.dirty, let id = dir.contentID { return id }
        try ensureLoaded(dir)
        let entries = dir.entries!
        var tree = Tree(mode: dir.rec.mode, uid: dir.rec.uid, gid: dir.rec.gid, mtime: dir.rec.mtime, xattrs: dir.xattrs, entries: [])
        let id: ObjectID
        if let base = dir.contentID, let names = dir.changedNames {
            var changes: [TreeChange] = []
            changes.reserveCapacity(names.count)
            for name in names.sorted(by: bytesPrecede) {
                if let ino = entries[name] {
                    changes.append((name, try entry(for: try node(ino), name: name, stats: &stats, cleaned: &cleaned, ingested: ingested)))
                } else {
                    changes.append((name, nil))
                }
            }
            id = try domain { try repo.content.putTree(tree, base: base, changes: changes) }
        } else {
            tree.entries.reserveCapacity(entries.count)
            for (name, ino) in entries {
                tree.entries.append(try entry(for: try node(ino), name: name, stats: &stats, cleaned: &cleaned, ingested: ingested))
            }
            tree.entries.sort { bytesPrecede($0.name, $1.name) }
            id = try domain { try repo.content.putTree(tree) }
        }
        dir.rec.content = id
        dir.rec.dirty = false
        dir.changedNames = []
        cleaned.append(dir)
        return id
    }

    private func entry(for n: Node, name: [UInt8], stats: inout (files: Int64, bytes: Int64), cleaned: inout [Node],
                       ingested: [UInt64: ContentStore.Ingested]) throws(AetherError) -> TreeEntry {
        if n.kind == .directory {
            return TreeEntry(name: name, kind: .directory, content: try snapshotDirectory(n, stats: &stats, cleaned: &cleaned, ingested: ingested))
        }
        if n.rec.dirty {
            if n.kind == .file && n.rec.upper {
                let got: ContentStore.Ingested
                if let done = ingested[n.rec.ino] {
                    got = done
                } else {
                    let fd = try upperDescriptor(n)
                    defer { if n.opens == 0 { close(fd); n.fd = -1 } }
                    got = try domain { try repo.content.ingest(FileBytes(fd: fd), size: n.rec.size) }
                }
                n.rec.content = got.manifest
                stats.files += 1
                stats.bytes += got.newBytes
            } else if n.kind == .file && n.rec.content == nil {
                n.rec.content = try domain { try repo.content.emptyManifest() }
            }
            n.rec.dirty = false
            cleaned.append(n)
        }
        if n.rec.nlink > 1 && n.rec.linkGroup == 0 {
            n.rec.linkGroup = Workspace.newLinkGroup()
            linkGroups[n.rec.linkGroup] = n.rec.ino
        }
        let group = n.rec.nlink > 1 ? n.rec.linkGroup : 0
        return TreeEntry(name: name, kind: n.kind, mode: n.rec.mode, uid: n.rec.uid, gid: n.rec.gid, size: n.rec.size,
                         mtime: n.rec.mtime, nlink: n.rec.nlink, rdev: n.rec.rdev, linkGroup: group, target: n.rec.target,
                         content: n.contentID, xattrs: n.xattrs)
    }
}

extension Workspace {
    /// Gives hard-link groups formed since the last checkpoint their ids: from the path of the group's
    /// first name in the order a tree walk (and so an export) meets its names, as an import derives it,
    /// so that an exported snapshot imports back to the same tree. An id the session's tree or another
    /// group already has is not taken again: such a group gets a random one.
    func assignLinkGroups() throws(AetherError) {
        // Only nodes given a second name in this session can be new groups (not every loaded node:
        // a checkpoint's cost follows the change, not the tree).
        let fresh = linked.compactMap { nodes[$0] }.filter { $0.kind == .file && $0.rec.nlink > 1 && $0.rec.linkGroup == 0 && !$0.links.isEmpty }
        guard !fresh.isEmpty else { return }
        var taken = Set(linkGroups.keys)
        try domain { try Workspace.collectLinkGroups(session.baseRoot, repo.content, into: &taken) }
        for n in fresh.sorted(by: { $0.rec.ino < $1.rec.ino }) {
            let paths = n.links.compactMap { componentsPath(of: $0) }
            guard let first = paths.min(by: Workspace.walksBefore) else { continue }
            var id = Workspace.linkGroup(firstPath: first)
            if taken.contains(id) { id = Workspace.newLinkGroup() }
            n.rec.linkGroup = id
            taken.insert(id)
            linkGroups[id] = n.rec.ino
        }
    }

    /// The group id an import gives a hard-link group whose first entry is at `path`: its FNV-1a hash
    /// with the top bit set (as every group id).
    public static func linkGroup(firstPath path: [[UInt8]]) -> UInt64 {
        FNV1a.hash(Array(path.joined(separator: [47]))) | 1 << 63
    }

    /// Whether a tree walk (entries sorted by name, a directory's own entries right after its name)
    /// meets `a` before `b`.
    static func walksBefore(_ a: [[UInt8]], _ b: [[UInt8]]) -> Bool {
        for (x, y) in zip(a, b) where x != y { return bytesPrecede(x, y) }
        return a.count < b.count
    }

    /// A name's path from the root, by its parents' names; nil when a parent is not known.
    func componentsPath(of link: Link) -> [[UInt8]]? {
        var parts = [link.name]
        var at = link.parent
        while at != Workspace.rootIno {
            guard let dir = nodes[at], let up = dir.links.first else { return nil }
            parts.append(up.name)
            at = up.parent
        }
        return parts.reversed()
    }

    /// Every hard-link group id in the tree `root`.
    static func collectLinkGroups(_ root: ObjectID, _ content: ContentStore, into out: inout Set<UInt64>) throws {
        let head = try content.treeHead(root)
        var entries = head.entries
        for p in head.pages ?? [] { entries += try content.page(p) }
        for e in entries {
            if e.linkGroup != 0 { out.insert(e.linkGroup) }
            if e.kind == .directory, let c = e.content { try collectLinkGroups(c, content, into: &out) }
        }
    }

    /// A new hard-link group's id: random, with the top bit set. Unique in every tree it joins (a
    /// session's inode numbers are not: a fork numbers its inodes anew, so an inode number as the id
    /// could name a group its base already holds, and the two would become one file).
    static func newLinkGroup() -> UInt64 { UInt64.random(in: (1 << 63)...UInt64.max) }
}
