#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

/// Who asks: the uid and gid of the calling process.
public struct Caller: Sendable {
    public var uid: UInt32
    public var gid: UInt32
    /// The caller's umask, applied to a new node's mode unless its directory has a default ACL (the
    /// kernel leaves it to us when ACLs are on).
    public var umask: UInt32
    /// Whether the caller's writes and truncates keep setuid and setgid: it holds CAP_FSETID (root
    /// does), so the kernel did not ask for them to be cleared, as ext4 keeps them for it.
    public var keepsPrivilegeBits: Bool
    public init(uid: UInt32, gid: UInt32, umask: UInt32 = 0, keepsPrivilegeBits: Bool = false) {
        self.uid = uid; self.gid = gid; self.umask = umask; self.keepsPrivilegeBits = keepsPrivilegeBits
    }
}

/// Which attributes a `setattr` changes.
public struct AttributeChange: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atime: Int64?
    public var mtime: Int64?
    /// A truncate by a caller holding CAP_FSETID keeps setuid and setgid (see `Caller`).
    public var keepsPrivilegeBits = false
    public init() {}
}

/// How to answer a read: the bytes, or a range of a stored file to read from the content store.
public enum ReadPlan: Sendable {
    case bytes([UInt8])
    case stored(ObjectID, offset: UInt64, count: Int)
}

extension ContentStore {
    /// Carries out a read plan (outside any session lock: the content store is thread-safe).
    public func read(_ plan: ReadPlan) throws(AetherError) -> [UInt8] {
        switch plan {
        case .bytes(let b): return b
        case .stored(let id, let offset, let count):
            var out: [UInt8] = []
            out.reserveCapacity(count)
            try domain { try read(manifest: id, offset: offset, count: count, into: &out) }
            return out
        }
    }
}

extension Workspace {
    // MARK: names

    /// Finds `name` in `parent`.
    public func lookup(parent: UInt64, name: [UInt8]) throws(AetherError) -> Attributes {
        if name.count > Workspace.maxNameLength { throw .nameTooLong }
        let dir = try directory(parent)
        guard let ino = dir.entries![name], let child = nodes[ino] else { throw .notFound("name") }
        return reported(child)
    }

    /// The last holder of `ino` let go of it (the kernel forgot it): a node without a name is dropped
    /// now, unless it is open.
    public func forgotten(_ ino: UInt64) {
        guard let n = nodes[ino], n.links.isEmpty, ino != Workspace.rootIno else { return }
        try? releaseIfUnreferenced(n)
    }

    public func attributes(_ ino: UInt64) throws(AetherError) -> Attributes {
        reported(try node(ino))
    }

    /// A node's attributes with the blocks a file's data takes: an upper file's as its file system
    /// says, a large stored file's from its manifest.
    func reported(_ n: Node) -> Attributes {
        var a = n.attributes
        guard n.kind == .file else { return a }
        if n.rec.upper {
            var st = stat()
            if n.fd >= 0 ? fstat(n.fd, &st) == 0 : stat(upper.path(n.rec.ino), &st) == 0 { a.blocks = UInt64(st.st_blocks) }
        } else {
            a.blocks = repo.content.blocks(of: n.contentID, size: n.rec.size)
        }
        return a
    }

    /// The corresponding FUSE operation is `lseek` with SEEK_DATA (`data`) or SEEK_HOLE: where the next
    /// data or hole at or after `offset` begins. ENXIO at or past the end, or with no data after it.
    public func seek(_ ino: UInt64, offset: UInt64, data: Bool) throws(AetherError) -> UInt64 {
        let n = try node(ino)
        guard n.kind == .file else { throw n.kind == .directory ? .isDirectory : .invalid("seek in a special file") }
        let beyond = AetherError.noMoreData("no \(data ? "data" : "hole") at or after offset \(offset)")
        guard offset < n.rec.size else { throw beyond }
        if n.rec.upper {
            let fd = try upperDescriptor(n)
            defer { if n.opens == 0 { close(fd); n.fd = -1 } }
            let at = lseek(fd, off_t(offset), data ? FileIO.seekData : FileIO.seekHole)
            if at < 0 { throw errno == ENXIO ? beyond : AetherError.system(errno, "seek in the upper file of inode \(n.rec.ino)") }
            return min(UInt64(at), n.rec.size)
        }
        guard let at = try domain({ try repo.content.seek(in: n.contentID, size: n.rec.size, offset: offset, data: data) }) else { throw beyond }
        return at
    }

    /// A directory's names, sorted by bytes, for one listing.
    /// A directory's entries, in no particular order (readdir orders them by its cookies).
    public func list(_ ino: UInt64) throws(AetherError) -> [DirectoryEntry] {
        let dir = try directory(ino)
        return dir.entries!.compactMap { name, child in nodes[child].map { DirectoryEntry(name: name, ino: child, kind: $0.kind) } }
    }

    /// Changes whenever the directory's names do: a listing taken under one stamp holds while it is current.
    public func listingStamp(_ ino: UInt64) throws(AetherError) -> UInt64 {
        try directory(ino).listingStamp
    }

    public func parentOf(_ ino: UInt64) -> UInt64 { nodes[ino]?.links.first?.parent ?? Workspace.rootIno }

    // MARK: creating

    private func newNode(in dir: Node, name: [UInt8], kind: NodeKind, mode: UInt32, caller: Caller,
                         rdev: UInt64 = 0, target: [UInt8] = []) throws(AetherError) -> Node {
        try Workspace.checkName(name)
        guard dir.entries![name] == nil else { throw .exists("name") }
        let node = try prepareNode(in: dir, kind: kind, mode: mode, caller: caller, rdev: rdev, target: target)
        do {
            try change { () throws(AetherError) in try place(node, in: dir, name: name) }
        } catch {
            nodes[node.rec.ino] = nil
            dir.entries![name] = nil
            if kind == .file { upper.remove(node.rec.ino) }
            throw error
        }
        return node
    }

    /// A new node's record as `caller` makes it in `dir` (owner, group, mode after the umask or the
    /// directory's default ACL), with its upper file; not yet named or saved (`place`).
    private func prepareNode(in dir: Node, kind: NodeKind, mode: UInt32, caller: Caller,
                             rdev: UInt64 = 0, target: [UInt8] = []) throws(AetherError) -> Node {
        let now = fileTimeNow()
        var gid = caller.gid
        var mode = mode & 0o7777
        if dir.rec.mode & 0o2000 != 0 {
            gid = dir.rec.gid
            if kind == .directory { mode |= 0o2000 }
        }
        // A directory's default ACL, where it has one, decides a new node's permissions (and becomes a
        // new directory's default ACL); else the umask does. Symlinks have neither.
        var xattrs = XattrMap()
        if kind != .symlink {
            if let inherited = dir.xattrs[PosixACL.defaultName], var acl = try? PosixACL(xattr: inherited), !acl.isEmpty {
                mode = mode & ~0o777 | acl.create(mode: mode)
                if !acl.isMinimal { xattrs[PosixACL.accessName] = acl.xattr }
                if kind == .directory { xattrs[PosixACL.defaultName] = inherited }
            } else {
                mode &= ~(caller.umask & 0o777)
            }
        }
        let rec = NodeRecord(ino: try allocateIno(), kind: kind.rawValue, mode: mode, uid: caller.uid, gid: gid,
                             size: kind == .directory ? 4096 : UInt64(target.count), atime: now, mtime: now, ctime: now,
                             nlink: kind == .directory ? 2 : 1, rdev: rdev, target: target,
                             upper: kind == .file, materialized: kind == .directory,
                             overlay: kind == .directory, dirty: true)
        let node = Node(rec: rec, kind: kind)
        node.xattrs = xattrs
        if kind == .directory { node.entries = [:] }
        if kind == .file { try upper.createEmpty(rec.ino) }
        nodes[rec.ino] = node
        return node
    }

    /// Names and saves a prepared node, inside the caller's `change`.
    private func place(_ node: Node, in dir: Node, name: [UInt8]) throws(AetherError) {
        try addEntry(dir, name, node)
        try save(node)
        if node.kind == .directory { dir.rec.nlink += 1 }
        stampChanged(dir)
        try save(dir)
    }

    /// Creates a regular file. The corresponding FUSE operation is `create` (and `mknod` for S_IFREG).
    public func create(parent: UInt64, name: [UInt8], mode: UInt32, caller: Caller) throws(AetherError) -> Attributes {
        try newNode(in: try directory(parent), name: name, kind: .file, mode: mode, caller: caller).attributes
    }

    /// An unnamed regular file in `parent` (O_TMPFILE): it lives while it is open, `link` gives it a
    /// name, and otherwise it leaves nothing behind (after a crash too, as a file unlinked while open).
    public func tmpfile(parent: UInt64, mode: UInt32, caller: Caller) throws(AetherError) -> Attributes {
        let node = try prepareNode(in: try directory(parent), kind: .file, mode: mode, caller: caller)
        node.rec.nlink = 0
        return node.attributes
    }

    public func mkdir(parent: UInt64, name: [UInt8], mode: UInt32, caller: Caller) throws(AetherError) -> Attributes {
        try newNode(in: try directory(parent), name: name, kind: .directory, mode: mode, caller: caller).attributes
    }

    /// Creates a FIFO, socket, device or regular file from a full mode with type bits.
    public func mknod(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, caller: Caller) throws(AetherError) -> Attributes {
        guard let kind = NodeKind(typeBits: mode), kind != .directory, kind != .symlink else { throw .invalid("mknod of this type") }
        return try newNode(in: try directory(parent), name: name, kind: kind, mode: mode, caller: caller, rdev: rdev).attributes
    }

    public func symlink(parent: UInt64, name: [UInt8], target: [UInt8], caller: Caller) throws(AetherError) -> Attributes {
        guard !target.isEmpty, target.count < 4096 else { throw target.isEmpty ? .invalid("empty symlink target") : .nameTooLong }
        return try newNode(in: try directory(parent), name: name, kind: .symlink, mode: 0o777, caller: caller, target: target).attributes
    }

    public func readlink(_ ino: UInt64) throws(AetherError) -> [UInt8] {
        let n = try node(ino)
        guard n.kind == .symlink else { throw .invalid("not a symlink") }
        return n.rec.target
    }

    /// Gives `ino` one more name. Directories cannot be linked.
    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(AetherError) -> Attributes {
        let n = try node(ino)
        guard n.kind != .directory else { throw .notPermitted("hard links to directories") }
        let dir = try directory(newParent)
        try Workspace.checkName(newName)
        guard dir.entries![newName] == nil else { throw .exists("name") }
        linked.insert(ino)
        try change { () throws(AetherError) in
            try addEntry(dir, newName, n)
            n.rec.nlink += 1
            n.rec.ctime = fileTimeNow()
            try touch(n)
            stampChanged(dir)
            try save(dir)
        }
        return reported(n)
    }

    // MARK: removing

    public func unlink(parent: UInt64, name: [UInt8]) throws(AetherError) {
        let dir = try directory(parent)
        guard let ino = dir.entries![name], let n = nodes[ino] else { throw .notFound("name") }
        guard n.kind != .directory else { throw .isDirectory }
        try change { () throws(AetherError) in
            try removeEntry(dir, name, n)
            n.rec.nlink -= 1
            n.rec.ctime = fileTimeNow()
            stampChanged(dir)
            try save(dir)
            if n.links.isEmpty { try releaseIfUnreferenced(n) } else { try touch(n) }
        }
    }

    public func rmdir(parent: UInt64, name: [UInt8]) throws(AetherError) {
        let dir = try directory(parent)
        guard let ino = dir.entries![name], let n = nodes[ino] else { throw .notFound("name") }
        guard n.kind == .directory else { throw .notDirectory }
        try ensureLoaded(n)
        guard n.entries!.isEmpty else { throw .notEmpty }
        try change { () throws(AetherError) in
            try removeEntry(dir, name, n)
            n.rec.nlink = 0
            dir.rec.nlink -= 1
            stampChanged(dir)
            try save(dir)
            try releaseIfUnreferenced(n)
        }
    }

    /// Flags of `rename`.
    public struct RenameFlags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let noReplace = RenameFlags(rawValue: 1)
        public static let exchange = RenameFlags(rawValue: 2)
        /// Leaves a whiteout (a character device 0:0, mode 0, the caller's) at the old name, in the same
        /// step: overlayfs over a mount needs it.
        public static let whiteout = RenameFlags(rawValue: 4)
    }

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: RenameFlags,
                       caller: Caller = Caller(uid: 0, gid: 0)) throws(AetherError) {
        let from = try directory(parent)
        let to = try directory(newParent)
        try Workspace.checkName(newName)
        guard let srcIno = from.entries![name], let src = nodes[srcIno] else { throw .notFound("name") }
        let dstIno = to.entries![newName]
        let dst = dstIno.flatMap { nodes[$0] }
        if flags.contains(.exchange) && !flags.isDisjoint(with: [.noReplace, .whiteout]) {
            throw .invalid("RENAME_EXCHANGE with RENAME_NOREPLACE or RENAME_WHITEOUT")
        }
        if flags.contains(.noReplace) && dst != nil { throw .exists("name") }
        if flags.contains(.exchange) {
            guard let dst else { throw .notFound("name") }
            try change { () throws(AetherError) in
                try removeEntry(from, name, src)
                try removeEntry(to, newName, dst)
                try addEntry(from, name, dst)
                try addEntry(to, newName, src)
                if from !== to && src.kind != dst.kind {
                    let delta: Int32 = src.kind == .directory ? 1 : -1
                    to.rec.nlink = UInt32(Int32(to.rec.nlink) + delta)
                    from.rec.nlink = UInt32(Int32(from.rec.nlink) - delta)
                }
                let now = fileTimeNow()
                src.rec.ctime = now; dst.rec.ctime = now
                stampChanged(from); stampChanged(to)
                try touch(src); try touch(dst); try save(from); try save(to)
            }
            return
        }
        if let dst {
            if dst === src { return }
            if src.kind == .directory {
                guard dst.kind == .directory else { throw .notDirectory }
                try ensureLoaded(dst)
                guard dst.entries!.isEmpty else { throw .notEmpty }
            } else if dst.kind == .directory {
                throw .isDirectory
            }
        }
        if src.kind == .directory && isAncestor(srcIno, of: to) { throw .invalid("a directory cannot move below itself") }
        try change { () throws(AetherError) in
            if let dst {
                try removeEntry(to, newName, dst)
                if dst.kind == .directory { dst.rec.nlink = 0; to.rec.nlink -= 1 } else { dst.rec.nlink -= 1 }
                dst.rec.ctime = fileTimeNow()
                if dst.links.isEmpty { try releaseIfUnreferenced(dst) } else { try touch(dst) }
            }
            try removeEntry(from, name, src)
            try addEntry(to, newName, src)
            if src.kind == .directory && from !== to { from.rec.nlink -= 1; to.rec.nlink += 1 }
            src.rec.ctime = fileTimeNow()
            stampChanged(from); stampChanged(to)
            try touch(src)
            try save(from)
            if from !== to { try save(to) }
            if flags.contains(.whiteout) {
                let whiteout = try prepareNode(in: from, kind: .charDevice, mode: 0, caller: caller)
                whiteout.rec.mode = 0
                whiteout.xattrs = [:]
                try place(whiteout, in: from, name: name)
            }
        }
    }

    private func isAncestor(_ ino: UInt64, of dir: Node) -> Bool {
        var current: Node? = dir
        var steps = 0
        while let c = current, steps < 10_000 {
            if c.rec.ino == ino { return true }
            guard let p = c.links.first?.parent else { return false }
            current = nodes[p]
            steps += 1
        }
        return false
    }

    // MARK: attributes

    public func setAttributes(_ ino: UInt64, _ change: AttributeChange) throws(AetherError) -> Attributes {
        let n = try node(ino)
        // Under writeback caching the kernel keeps a file's times itself and, after every link and unlink
        // of it (also the last one of `rm`), hands them back: the mtime it had from us and a ctime of its
        // own. That changes nothing here (the link or unlink set the ctime) and costs no catalog write.
        // (Setting only an mtime equal to the current one therefore leaves the ctime as it was.)
        // (An empty change is chown(f, -1, -1): it sets the ctime alone, as on ext4.)
        if change.mode == nil && change.uid == nil && change.gid == nil && change.size == nil && change.atime == nil
            && change.mtime != nil && change.mtime == n.rec.mtime {
            return reported(n)
        }
        let now = fileTimeNow()
        if let size = change.size {
            guard n.kind == .file else { throw n.kind == .directory ? .isDirectory : .invalid("truncate of a special file") }
            try truncate(n, to: size)
            n.rec.mtime = now
            if !change.keepsPrivilegeBits { n.dropPrivilegeBits() }
        }
        if let m = change.mode {
            n.rec.mode = m & 0o7777
            // The access ACL follows a chmod (its owner, mask and other entries), as on ext4.
            if let value = n.xattrs[PosixACL.accessName], var acl = try? PosixACL(xattr: value) {
                acl.chmod(m)
                n.setXattr(PosixACL.accessName, acl.xattr)
            }
        }
        if let u = change.uid { n.rec.uid = u }
        if let g = change.gid { n.rec.gid = g }
        if change.uid != nil || change.gid != nil, n.kind != .directory, change.mode == nil {
            // chown clears setuid, and setgid where the group may execute (else it marks mandatory
            // locking and stays), as on ext4
            _ = n.dropPrivilegeBits()
        }
        if let a = change.atime { n.rec.atime = a }
        if let m = change.mtime { n.rec.mtime = m }
        n.rec.ctime = now
        if n.rec.dirty && n.persisted && n.opens > 0 {
            // An open file changed since the last checkpoint, whose row and names are in the catalog
            // already: the row is saved when it is flushed, fsynced or closed, as writes' sizes are.
            n.metaPending = true
        } else {
            try self.change { () throws(AetherError) in try touch(n) }
        }
        return reported(n)
    }

    /// Sets a file's size, copying it up from the chunk store first when it keeps bytes.
    private func truncate(_ n: Node, to size: UInt64) throws(AetherError) {
        if !n.rec.upper {
            if size == 0 {
                try makeEmptyUpper(n)
            } else {
                try copyUp(n)
            }
        }
        let fd = try upperDescriptor(n)
        defer { if n.opens == 0 { close(fd); n.fd = -1 } }
        if ftruncate(fd, off_t(size)) != 0 { throw AetherError.from(StoreError.fromErrno("truncate")) }
        n.rec.size = size
    }

    private func makeEmptyUpper(_ n: Node) throws(AetherError) {
        try upper.createEmpty(n.rec.ino)
        n.rec.upper = true
    }

    /// Moves a file's bytes from the chunk store into its upper file, so it can be written.
    private func copyUp(_ n: Node) throws(AetherError) {
        try repo.ensureRoom(for: Int(min(n.rec.size, UInt64(Int32.max))))
        let fd = try upper.createEmpty(n.rec.ino, open: true)
        defer { close(fd) }
        do {
            if let id = n.contentID { try repo.content.copy(manifest: id, to: FileBytes(fd: fd)) }
            if ftruncate(fd, off_t(n.rec.size)) != 0 { throw StoreError.fromErrno("truncate upper file") }
        } catch {
            upper.remove(n.rec.ino)
            throw AetherError.from(error)
        }
        n.rec.upper = true
    }

    func upperDescriptor(_ n: Node) throws(AetherError) -> Int32 {
        if n.fd >= 0 { return n.fd }
        let fd = Glibc.open(upper.path(n.rec.ino), O_RDWR | O_CLOEXEC)
        if fd < 0 { throw AetherError.from(StoreError.fromErrno("open upper file of inode \(n.rec.ino)")) }
        n.fd = fd
        return fd
    }

    // MARK: file data

    public func open(_ ino: UInt64) throws(AetherError) {
        let n = try node(ino)
        n.opens += 1
    }

    /// Nodes whose setuid/setgid bits writes cleared since the last call: the kernel, which caches
    /// attributes and does not see a write's effect on the mode, must forget theirs.
    public func takeModesChangedByWrites() -> [UInt64] {
        defer { modeChangedByWrites.removeAll() }
        return modeChangedByWrites
    }

    /// The last handle closed: saves what writes changed and lets go of the descriptor.
    public func release(_ ino: UInt64) throws(AetherError) {
        guard let n = nodes[ino] else { return }
        n.opens = max(0, n.opens - 1)
        defer {
            if n.opens == 0 && n.fd >= 0 { close(n.fd); n.fd = -1 }
            if n.links.isEmpty { try? releaseIfUnreferenced(n) }
        }
        try flush(ino)
    }

    /// Saves the size and times that writes changed.
    public func flush(_ ino: UInt64) throws(AetherError) {
        guard let n = nodes[ino], n.metaPending, n.persisted else { return }
        try save(n)
    }

    /// Makes the file's bytes and attributes durable.
    public func fsync(_ ino: UInt64, dataOnly: Bool) throws(AetherError) {
        let n = try node(ino)
        if n.kind == .file && n.rec.upper {
            let fd = try upperDescriptor(n)
            if Glibc.fsync(fd) != 0 { throw AetherError.from(StoreError.fromErrno("fsync")) }
            if n.opens == 0 { close(fd); n.fd = -1 }
        }
        if n.persisted || n.rec.dirty {
            try change(durable: true) { () throws(AetherError) in try save(n) }
        }
    }

    /// Makes every change of the working layer durable (fsyncdir, and before answering a checkpoint).
    public func syncAll() throws(AetherError) {
        try change(durable: true) { () throws(AetherError) in
            for n in nodes.values where n.metaPending && n.persisted { try save(n) }
        }
    }

    /// What a read needs: bytes of the working layer (read under the caller's lock, since the upper
    /// file's descriptor is the session's), or a range of a stored file, which the content store can
    /// read, decompress and verify outside the lock, beside other reads.
    public func read(_ ino: UInt64, offset: UInt64, count: Int) throws(AetherError) -> ReadPlan {
        let n = try node(ino)
        guard n.kind == .file else { throw n.kind == .directory ? .isDirectory : .invalid("read of a special file") }
        guard offset < n.rec.size, count > 0 else { return .bytes([]) }
        let want = Int(min(UInt64(count), n.rec.size - offset))
        if n.rec.upper {
            let fd = try upperDescriptor(n)
            defer { if n.opens == 0 { close(fd); n.fd = -1 } }
            var out = [UInt8](repeating: 0, count: want)
            let got = try domain { try out.withUnsafeMutableBytes { try FileIO.pread(fd, into: $0, at: Int64(offset), "read") } }
            if got < want { out.replaceSubrange(got..., with: repeatElement(0, count: want - got)) }
            return .bytes(out)
        }
        guard let id = n.contentID else { return .bytes([UInt8](repeating: 0, count: want)) }
        return .stored(id, offset: offset, count: want)
    }

    public func write(_ ino: UInt64, offset: UInt64, data: UnsafeRawBufferPointer, keepsPrivilegeBits: Bool = false) throws(AetherError) -> Int {
        let n = try node(ino)
        guard n.kind == .file else { throw n.kind == .directory ? .isDirectory : .invalid("write to a special file") }
        guard offset <= UInt64(Int64.max) - UInt64(data.count) else { throw .tooBig }
        try repo.ensureRoom(for: data.count)
        let first = !n.rec.upper || !n.rec.dirty
        if !n.rec.upper { try copyUp(n) }
        let fd = try upperDescriptor(n)
        defer { if n.opens == 0 { close(fd); n.fd = -1 } }
        try domain { try FileIO.pwriteAll(fd, data, at: Int64(offset), "write") }
        n.rec.size = max(n.rec.size, offset + UInt64(data.count))
        let now = fileTimeNow()
        n.rec.mtime = now
        n.rec.ctime = now
        if !keepsPrivilegeBits && n.dropPrivilegeBits() { modeChangedByWrites.append(n.rec.ino) }
        if first {
            try change { () throws(AetherError) in try touch(n) }
        } else {
            n.metaPending = true
        }
        return data.count
    }

    /// Allocates, keeps or punches space of a file (fallocate(2)): mode 0 (allocate, growing the
    /// file), KEEP_SIZE (allocate only), PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE (with or without
    /// KEEP_SIZE). Other modes are `.notSupported` (EOPNOTSUPP), so programs fall back to writing.
    public func fallocate(_ ino: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws(AetherError) {
        let keepSize: Int32 = 0x01, punchHole: Int32 = 0x02, zeroRange: Int32 = 0x10
        guard [0, keepSize, punchHole | keepSize, zeroRange, zeroRange | keepSize].contains(mode) else {
            throw .notSupported("fallocate mode \(mode)")
        }
        let n = try node(ino)
        guard n.kind == .file else { throw n.kind == .directory ? .isDirectory : .notSupported("fallocate of a special file") }
        guard length > 0, offset <= UInt64(Int64.max) - length else { throw .invalid("fallocate range") }
        if mode & punchHole == 0 { try repo.ensureRoom(for: Int(min(length, UInt64(Int.max)))) }
        if !n.rec.upper { try copyUp(n) }
        let fd = try upperDescriptor(n)
        defer { if n.opens == 0 { close(fd); n.fd = -1 } }
        try domain { try FileIO.fallocate(fd, mode: mode, offset: offset, length: length, "fallocate of inode \(ino)") }
        let now = fileTimeNow()
        if mode & keepSize == 0 && offset + length > n.rec.size { n.rec.size = offset + length }
        if mode & (punchHole | zeroRange) != 0 || mode & keepSize == 0 { n.rec.mtime = now }
        n.rec.ctime = now
        try change { () throws(AetherError) in try touch(n) }
    }

    // MARK: extended attributes

    public func getXattr(_ ino: UInt64, name: String) throws(AetherError) -> [UInt8] {
        guard let v = try node(ino).xattrs[name] else { throw .noAttribute }
        return v
    }

    public func listXattrs(_ ino: UInt64) throws(AetherError) -> [String] {
        try node(ino).xattrs.keys.sorted()
    }

    /// Sets an attribute; `create` fails when it exists, `replace` when it does not.
    ///
    /// An access ACL sets the mode's permission bits, and is kept only when it says more than they do
    /// (ext4 keeps no minimal ACL: `cp -p` and `sed -i` set one on every file they write); setting it
    /// clears setgid when the caller is neither in the file's group nor root. A default ACL is kept on
    /// directories only.
    public func setXattr(_ ino: UInt64, name: String, value: [UInt8], create: Bool, replace: Bool,
                         caller: Caller = Caller(uid: 0, gid: 0)) throws(AetherError) {
        guard !name.isEmpty else { throw .invalid("empty attribute name") }
        guard name.utf8.count <= 255 else { throw .range }
        guard value.count <= Workspace.maxXattrValue else { throw .tooBig }
        let n = try node(ino)
        let exists = n.xattrs[name] != nil
        if create && exists { throw .exists("attribute \(name)") }
        if replace && !exists { throw .noAttribute }
        // ext4 refuses an attribute that does not fit (ENOSPC) long before the kernel's 64 KiB list of
        // names overflows; past that, getfattr -d, cp -a and rsync -X would fail with E2BIG.
        if !exists {
            let list = n.xattrs.keys.reduce(name.utf8.count + 1) { $0 + $1.utf8.count + 1 }
            guard list <= Workspace.maxXattrList else {
                throw .attributesFull("the names of a file's extended attributes fit in \(Workspace.maxXattrList) bytes")
            }
        }
        if PosixACL.isACL(name) {
            let acl = try PosixACL(xattr: value)
            guard n.kind != .symlink else { throw .notSupported("ACLs on symlinks") }
            if name == PosixACL.accessName {
                guard !acl.isEmpty else { throw .invalid("an access ACL needs entries") }
                n.rec.mode = n.rec.mode & ~0o777 | acl.modeBits
                if caller.uid != 0 && caller.gid != n.rec.gid { n.rec.mode &= ~0o2000 }
                n.setXattr(name, acl.isMinimal ? nil : acl.xattr)
            } else {
                guard n.kind == .directory else { throw .accessDenied("only directories have default ACLs") }
                n.setXattr(name, acl.isEmpty ? nil : acl.xattr)
            }
        } else {
            n.setXattr(name, value)
        }
        n.rec.ctime = fileTimeNow()
        try change { () throws(AetherError) in try touch(n) }
    }

    public func removeXattr(_ ino: UInt64, name: String) throws(AetherError) {
        let n = try node(ino)
        guard n.xattrs[name] != nil else { throw .noAttribute }
        n.setXattr(name, nil)
        n.rec.ctime = fileTimeNow()
        try change { () throws(AetherError) in try touch(n) }
    }

    // MARK: state

    /// How many nodes changed since the last checkpoint.
    public var dirtyCount: Int { nodes.values.reduce(0) { $0 + ($1.rec.dirty && $1.kind != .directory ? 1 : 0) } }
}
