#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore
import Logging
import Dispatch
import Synchronization

/// The file system of a session's mount: the session's workspace, the `.aether` control surface, open
/// handles, and the translation of domain errors into errno; `.aether/checkpoints` and `commits` are a
/// `SnapshotFileSystem` over the same lock, to which requests on its inodes go. Kernel-free: the FUSE
/// adapter calls one method per request, and kernel invalidations leave through its `KernelNotifier`.
///
/// Lock order: `lock` guards the workspace and the handle table; it is never held while the
/// notifier runs. A checkpoint (fork, commit) lets `lock` go while it cuts written files into the
/// store (`frozen`): reads, lookups, opens and closes go on, and every request that changes the tree
/// or reads it whole waits on `thawed` (`change`).
public final class SessionFileSystem: MountedFileSystem, @unchecked Sendable {
    /// The session served.
    let workspace: Workspace
    /// The session's snapshot views (sharing `lock`): every inode with the top bit set is theirs.
    let snapshots: SnapshotFileSystem
    var views: SnapshotViews { snapshots.views }
    /// The uid owning the session: the control files are its.
    let sessionOwner: UInt32
    let options: MountOptions
    let logger: Logger
    let lock = Lock()
    var handles: [UInt64: Handle] = [:]
    var nextHandle: UInt64 = 1
    var lastResults: [UInt32: String] = [:]
    let usageCache = UsageCache()
    /// The kernel's references to the workspace's inodes. Guarded by `lock`.
    let inodes = InodeTable()
    /// The kernel's side: attached by the FUSE adapter while the session runs; none in unit tests.
    private let notifier = Mutex<(any KernelNotifier)?>(nil)
    public var writebackCache: Bool { options.writebackCache }
    /// Whether the kernel can do without opendir (set by the FUSE adapter from the connection's
    /// capabilities): it then keeps every listing, as `opendir` explains.
    public var kernelSkipsOpendir = false

    /// A checkpoint is working outside `lock`; changes wait on `thawed`. Guarded by `lock`.
    var frozen = false
    let thawed = Condition()

    /// Open files whose size and time are being set again through the mount after a restore.
    var resizing = Set<UInt64>()

    /// Sends invalidations to the kernel (never under `lock`). The `setattr`s that `.resize` causes
    /// change nothing here: the node already holds the restored size and time.
    func send(_ items: [Invalidation]) {
        guard !items.isEmpty, let kernel = notifier.withLock({ $0 }) else { return }
        let inos = items.compactMap { item -> UInt64? in if case .resize(let ino, _, _, _) = item { ino } else { nil } }
        if !inos.isEmpty { lock.withLock { resizing.formUnion(inos) } }
        kernel.invalidate(items)
        if !inos.isEmpty { lock.withLock { resizing.subtract(inos) } }
    }

    /// Connects the kernel's side (nil detaches it, at the end of the session).
    public func attach(_ kernel: (any KernelNotifier)?) { notifier.withLock { $0 = kernel } }

    /// Sends what a request's answer left for after the reply (`write`, `setxattr`): the kernel held
    /// locks until it had the answer that these invalidations need.
    public func afterReply(_ items: [Invalidation]) { send(items) }

    /// Before anything reads the tree behind the kernel (checkpoints, forks, commits, restores, states
    /// and digests), the writes the kernel still holds must be ours: with the writeback cache every
    /// written page, without it the pages of shared writable mappings (mmap).
    func flushKernel() {
        notifier.withLock { $0 }?.flushWrites()
    }
    public let mountpoint: String

    public init(workspace: Workspace, mountpoint: String, options: MountOptions = MountOptions(), logger: Logger = Logger(label: "aetherfs.vfs")) {
        self.workspace = workspace
        self.snapshots = SnapshotFileSystem(views: SnapshotViews(repo: workspace.repo) { workspace.session }, lock: lock,
                                            options: options, logger: logger)
        self.sessionOwner = workspace.session.owner
        self.options = options
        self.logger = logger
        self.mountpoint = mountpoint
        workspace.holders = inodes
        // Called with `lock` held, from a request that waited for no other freeze (`change`).
        workspace.outsideLock = { [unowned self] body in
            frozen = true
            lock.unlocked(body)
            frozen = false
            thawed.broadcast()
        }
    }

    public var sessionName: String { lock.withLock { workspace.session.name } }

    /// Whether an inode is a read-only snapshot view (served by `snapshots`).
    func isView(_ ino: UInt64) -> Bool { SnapshotViews.owns(ino) }

    enum Handle {
        case file(UInt64)
        case control(ControlHandle)
    }

    /// An open control file: what a read shows, and for a writer the request being written.
    struct ControlHandle {
        var file: ControlFile
        var content: [UInt8]
        var writing: Bool
        /// Bytes of a request written so far and not yet run (see `write`).
        var pending: [UInt8] = []
        /// Whether this open carried its request (run, or refused).
        var done = false
    }

    /// Runs a request under the lock, mapping domain errors to errno.
    func run<T>(_ body: () throws(AetherError) -> T) throws(FSFailure) -> T {
        try mappingErrors { () throws(AetherError) -> T in try lock.withLock { () throws(AetherError) -> T in try body() } }
    }

    /// Runs a request that changes the tree, or reads it whole, under the lock once no checkpoint is
    /// working outside it.
    func change<T>(_ body: () throws(AetherError) -> T) throws(FSFailure) -> T {
        try mappingErrors { () throws(AetherError) -> T in
            try lock.withLock { () throws(AetherError) -> T in
                waitUntilThawed()
                return try body()
            }
        }
    }

    /// A request of `caller` that changes the session's files: the caller is noted as one of its
    /// writers (who may not review its proposals).
    func change<T>(by caller: Caller, _ body: () throws(AetherError) -> T) throws(FSFailure) -> T {
        try change { () throws(AetherError) -> T in
            try workspace.noteWriter(caller.uid)
            return try body()
        }
    }

    /// Under `lock`: waits while a checkpoint works outside it.
    func waitUntilThawed() {
        while frozen { lock.wait(thawed) }
    }

    /// Runs `body` (without the lock), mapping domain errors to errno and logging the serious ones.
    func mappingErrors<T>(_ body: () throws(AetherError) -> T) throws(FSFailure) -> T {
        try AetherVFS.mappingErrors(logger, body)
    }

    /// An entry the kernel counts (lookup, create, mkdir, mknod, symlink, link, tmpfile): one more
    /// reference it holds, until it forgets it. Under `lock`.
    func entry(_ a: Attributes) -> EntryReply {
        inodes.hold(a.ino)
        return reply(a)
    }

    func reply(_ a: Attributes) -> EntryReply {
        EntryReply(attributes: a, entryTimeout: options.cacheTimeout, attrTimeout: options.cacheTimeout)
    }

    // MARK: names

    /// The corresponding FUSE operation is `lookup`. Errors: ENOENT, ENOTDIR, ENAMETOOLONG, EIO.
    public func lookup(parent: UInt64, name: [UInt8]) throws(FSFailure) -> EntryReply {
        if isView(parent) { return try snapshots.lookup(parent: parent, name: name) }
        if let control = try controlLookup(parent: parent, name: name) { return control }
        return try run { () throws(AetherError) in entry(try workspace.lookup(parent: parent, name: name)) }
    }

    /// The corresponding FUSE operation is `forget` (and `forget_multi`).
    public func forget(_ ino: UInt64, count: UInt64) {
        if ControlFile.isVirtual(ino) || isView(ino) { return }
        lock.withLock { if inodes.forget(ino, count) { workspace.forgotten(ino) } }
    }

    /// The corresponding FUSE operation is `getattr`.
    public func getattr(_ ino: UInt64) throws(FSFailure) -> EntryReply {
        if let a = controlAttributes(ino) { return EntryReply(attributes: a, entryTimeout: 0, attrTimeout: 0) }
        if isView(ino) { return try snapshots.getattr(ino) }
        return try run { () throws(AetherError) in reply(try workspace.attributes(ino)) }
    }

    /// The corresponding FUSE operation is `setattr`. Errors: EISDIR, EINVAL, ENOSPC, EIO.
    public func setattr(_ ino: UInt64, _ change: AttributeChange, caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) -> EntryReply {
        if let a = controlAttributes(ino) { return EntryReply(attributes: a, entryTimeout: 0, attrTimeout: 0) }
        if isView(ino) { throw .readOnly }
        return try self.change(by: caller) { () throws(AetherError) in
            if resizing.contains(ino) { return reply(try workspace.attributes(ino)) }
            return reply(try workspace.setAttributes(ino, change))
        }
    }

    public func readlink(_ ino: UInt64) throws(FSFailure) -> [UInt8] {
        if isView(ino) { return try snapshots.readlink(ino) }
        return try run { () throws(AetherError) in try workspace.readlink(ino) }
    }

    // MARK: creating and removing

    private func checkNotControl(_ parent: UInt64, _ name: [UInt8]) throws(FSFailure) {
        if isView(parent) { throw .readOnly }
        if ControlFile.isVirtual(parent) { throw FSFailure(.notPermitted("the control directory is not writable")) }
        if parent == Workspace.rootIno && name == ControlFile.directoryName {
            throw FSFailure(.exists(".aether is reserved for the control surface"))
        }
    }

    public func mknod(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, name)
        return try change(by: caller) { () throws(AetherError) in
            NodeKind(typeBits: mode) == .file || mode & 0o170000 == 0
                ? entry(try workspace.create(parent: parent, name: name, mode: mode, caller: caller))
                : entry(try workspace.mknod(parent: parent, name: name, mode: mode, rdev: rdev, caller: caller))
        }
    }

    /// The corresponding FUSE operation is `tmpfile` (O_TMPFILE): an unnamed file in `parent`.
    public func tmpfile(parent: UInt64, mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, [])
        return try change(by: caller) { () throws(AetherError) in entry(try workspace.tmpfile(parent: parent, mode: mode, caller: caller)) }
    }

    public func mkdir(parent: UInt64, name: [UInt8], mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, name)
        return try change(by: caller) { () throws(AetherError) in entry(try workspace.mkdir(parent: parent, name: name, mode: mode, caller: caller)) }
    }

    public func symlink(parent: UInt64, name: [UInt8], target: [UInt8], caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, name)
        return try change(by: caller) { () throws(AetherError) in entry(try workspace.symlink(parent: parent, name: name, target: target, caller: caller)) }
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8], caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) -> EntryReply {
        if ControlFile.isVirtual(ino) { throw FSFailure(.notPermitted("control files cannot be linked")) }
        if isView(ino) { throw .readOnly }
        try checkNotControl(newParent, newName)
        return try change(by: caller) { () throws(AetherError) in entry(try workspace.link(ino, newParent: newParent, newName: newName)) }
    }

    public func unlink(parent: UInt64, name: [UInt8], caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) {
        try checkNotControl(parent, name)
        try change(by: caller) { () throws(AetherError) in try workspace.unlink(parent: parent, name: name) }
    }

    public func rmdir(parent: UInt64, name: [UInt8], caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) {
        try checkNotControl(parent, name)
        try change(by: caller) { () throws(AetherError) in try workspace.rmdir(parent: parent, name: name) }
    }

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: Workspace.RenameFlags,
                       caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) {
        try checkNotControl(parent, name)
        try checkNotControl(newParent, newName)
        try change(by: caller) { () throws(AetherError) in
            try workspace.rename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags, caller: caller)
        }
    }

    // MARK: files

    /// The corresponding FUSE operations are `open` and `create` (after the node exists).
    /// Returns the handle and whether the kernel must bypass its page cache (control files).
    /// With `truncate` (O_TRUNC: libfuse asks the kernel for atomic O_TRUNC, so no setattr comes) the
    /// file is emptied here.
    public func open(_ ino: UInt64, writing: Bool, truncate: Bool = false, caller: Caller) throws(FSFailure) -> (handle: UInt64, direct: Bool) {
        if let control = ControlFile(ino: ino) {
            if writing && !control.writable { throw FSFailure(.accessDenied("\(control.name) is read-only")) }
            if !writing { flushKernel() }
            return lock.withLock {
                let content = writing ? [] : controlContent(control, caller: caller)
                return (addHandle(.control(ControlHandle(file: control, content: content, writing: writing))), true)
            }
        }
        if isView(ino) { return try snapshots.open(ino, writing: writing, truncate: truncate, caller: caller) }
        let open = { () throws(AetherError) -> (handle: UInt64, direct: Bool) in
            if truncate && writing {
                var change = AttributeChange()
                change.size = 0
                change.keepsPrivilegeBits = caller.keepsPrivilegeBits
                _ = try self.workspace.setAttributes(ino, change)
            }
            try self.workspace.open(ino)
            return (self.addHandle(.file(ino)), false)
        }
        return truncate && writing ? try change(open) : try run(open)
    }

    func addHandle(_ h: Handle) -> UInt64 {
        let id = nextHandle
        nextHandle += 1
        handles[id] = h
        return id
    }

    /// The corresponding FUSE operation is `lseek` (the kernel asks only for SEEK_DATA and SEEK_HOLE).
    /// Control files are all data, as the kernel's own answer would have them.
    public func seek(_ ino: UInt64, offset: UInt64, data: Bool) throws(FSFailure) -> UInt64 {
        if ControlFile(ino: ino) != nil {
            let size = try getattr(ino).attributes.size
            guard offset < size else { throw FSFailure(.noMoreData("seek past the end")) }
            return data ? offset : size
        }
        if isView(ino) { return try snapshots.seek(ino, offset: offset, data: data) }
        return try run { () throws(AetherError) in try workspace.seek(ino, offset: offset, data: data) }
    }

    /// The corresponding FUSE operation is `read`. Only the plan is made under the lock; stored bytes are
    /// read, decompressed and verified outside it, so reads of the chunk store run side by side.
    public func read(_ ino: UInt64, handle: UInt64, offset: UInt64, count: Int) throws(FSFailure) -> [UInt8] {
        if isView(ino) { return try snapshots.read(ino, handle: handle, offset: offset, count: count) }
        let plan = try run { () throws(AetherError) -> ReadPlan in
            if case .control(let h)? = handles[handle] {
                let content = h.content
                guard offset < UInt64(content.count) else { return .bytes([]) }
                return .bytes(Array(content[Int(offset)..<min(content.count, Int(offset) + count)]))
            }
            return try workspace.read(ino, offset: offset, count: count)
        }
        if case .bytes(let b) = plan { return b }
        return try mappingErrors { () throws(AetherError) in try views.repo.content.read(plan) }
    }

    public func write(_ ino: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer,
                      caller: Caller) throws(FSFailure) -> (count: Int, afterReply: [Invalidation]) {
        if let control = ControlFile(ino: ino) { return (try controlWrite(control, handle: handle, data: data, caller: caller), []) }
        if isView(ino) { throw .readOnly }
        let (count, modeChanged) = try change(by: caller) { () throws(AetherError) in
            (try workspace.write(ino, offset: offset, data: data, keepsPrivilegeBits: caller.keepsPrivilegeBits),
             workspace.takeModesChangedByWrites())
        }
        // A write that cleared setuid/setgid: the kernel forgets the mode after the reply (it may hold
        // this file's pages locked until the write returns).
        return (count, modeChanged.map { .attributes($0) })
    }

    /// The corresponding FUSE operation is `flush`: a control file opened for writing and closed
    /// without a request fails here with EINVAL, so an empty payload is an error too.
    public func flush(_ ino: UInt64, handle: UInt64, caller: Caller) throws(FSFailure) {
        if let control = ControlFile(ino: ino) { return try controlFlush(control, handle: handle, caller: caller) }
        if isView(ino) { return }
        try run { () throws(AetherError) in try workspace.flush(ino) }
    }

    public func release(_ ino: UInt64, handle: UInt64) throws(FSFailure) {
        if isView(ino) { return }
        try run { () throws(AetherError) in
            guard let h = handles.removeValue(forKey: handle) else { return }
            if case .file(let ino) = h { try workspace.release(ino) }
        }
    }

    /// The corresponding FUSE operation is `fallocate`. Errors: EOPNOTSUPP (other modes, control
    /// files), EROFS (views), ENOSPC, EISDIR, EINVAL.
    public func fallocate(_ ino: UInt64, mode: Int32, offset: UInt64, length: UInt64, caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) {
        if ControlFile.isVirtual(ino) { throw FSFailure(.notSupported("control files take no fallocate")) }
        if isView(ino) { throw .readOnly }
        try change(by: caller) { () throws(AetherError) in try workspace.fallocate(ino, mode: mode, offset: offset, length: length) }
    }

    public func fsync(_ ino: UInt64, dataOnly: Bool) throws(FSFailure) {
        if ControlFile.isVirtual(ino) || isView(ino) { return }
        try change { () throws(AetherError) in try workspace.fsync(ino, dataOnly: dataOnly) }
    }

    // MARK: directories

    /// The corresponding FUSE operation is `opendir`, sent only where the kernel cannot do without it
    /// (the adapter answers ENOSYS where it can: the kernel then caches every listing and sends neither
    /// opendir nor releasedir). Directories keep no handle: `readdir` is served from `listing`.
    /// `cacheable`: the kernel may keep the listing (it drops it itself when it changes a directory, and a
    /// restore invalidates the directories it changes); not so the control directory or a listing of
    /// snapshots, whose times change whenever they are asked for.
    public func opendir(_ ino: UInt64) throws(FSFailure) -> Bool {
        if ControlFile.isVirtual(ino) { return false }
        if isView(ino) { return try snapshots.opendir(ino) }
        return try run { () throws(AetherError) in _ = try workspace.listingStamp(ino); return true }
    }

    /// Listings taken of the workspace's directories and the control directory. Under `lock`.
    var listings = ListingCache()

    /// The listing of a directory, from `listings` while it holds. Under `lock`.
    func listing(_ ino: UInt64) throws(AetherError) -> Listing {
        if ino == ControlFile.directoryIno {
            return try listings.listing(ino, stamp: nil) {
                var out = ControlFile.allCases.map { DirectoryEntry(name: Array($0.name.utf8), ino: $0.ino, kind: .file) }
                for name in ["checkpoints", "commits"] {
                    if let v = self.viewListing(Array(name.utf8)) { out.append(DirectoryEntry(name: Array(name.utf8), ino: v.attributes.ino, kind: .directory)) }
                }
                return out
            }
        }
        return try listings.listing(ino, stamp: try workspace.listingStamp(ino)) { () throws(AetherError) in
            var out = try self.workspace.list(ino)
            if ino == Workspace.rootIno && self.options.showControl {
                out.append(DirectoryEntry(name: ControlFile.directoryName, ino: ControlFile.directoryIno, kind: .directory))
            }
            return out
        }
    }

    /// Entries of a directory after `offset` (see `Listing.serve`). With `plus`, each returned entry
    /// counts one lookup.
    public func readdir(_ ino: UInt64, offset: Int, plus: Bool,
                        accept: (_ name: [UInt8], _ entry: EntryReply, _ nextOffset: Int) -> Bool) throws(FSFailure) {
        if isView(ino) { return try snapshots.readdir(ino, offset: offset, plus: plus, accept: accept) }
        try run { () throws(AetherError) in
            let l = try listing(ino)
            let dots = [ino, ControlFile.isVirtual(ino) ? Workspace.rootIno : workspace.parentOf(ino)].map { target in
                EntryReply(attributes: (try? attributesForListing(target)) ?? controlAttributes(ControlFile.directoryIno)!,
                           entryTimeout: 0, attrTimeout: 0)
            }
            try l.serve(offset: offset, dots: dots, reply: { (e) throws(AetherError) in
                let attributes = try attributesForListing(e.ino)
                let cached = plus && !views.isListing(e.ino) && !ControlFile.isVirtual(e.ino)
                return EntryReply(attributes: attributes, entryTimeout: plus ? options.cacheTimeout : 0,
                                  attrTimeout: cached ? options.cacheTimeout : 0)
            }, returned: { (e) throws(AetherError) in
                if plus && !ControlFile.isVirtual(e.ino) && !isView(e.ino) { inodes.hold(e.ino) }
            }, accept: accept)
        }
    }

    /// Attributes of a listed entry. Under `lock`.
    private func attributesForListing(_ ino: UInt64) throws(AetherError) -> Attributes {
        if let a = controlAttributes(ino) { return a }
        if isView(ino) { return try views.view(ino).attributes }
        return try workspace.attributes(ino)
    }

    public func fsyncdir(_ ino: UInt64) throws(FSFailure) {
        try change { () throws(AetherError) in try workspace.syncAll() }
    }

    // MARK: extended attributes

    static let reservedPrefix = "user.aether."

    /// The corresponding FUSE operation is `getxattr`. Besides the user's attributes: on the root
    /// `user.aether.session`, `.head`, `.branch`, `.root` (the current tree's id); on every file
    /// `user.aether.state` and `.digest`.
    public func getxattr(_ ino: UInt64, name: String) throws(FSFailure) -> [UInt8] {
        if ControlFile.isVirtual(ino) { throw FSFailure(.noAttribute) }
        if isView(ino) { return try snapshots.getxattr(ino, name: name) }
        if name.hasPrefix(SessionFileSystem.reservedPrefix) { flushKernel() }
        // `root` and `digest` write the tree or a file into the store: they wait for a freeze, as changes do.
        return try change { () throws(AetherError) in
            guard name.hasPrefix(SessionFileSystem.reservedPrefix) else { return try workspace.getXattr(ino, name: name) }
            let key = String(name.dropFirst(SessionFileSystem.reservedPrefix.count))
            switch (key, ino == Workspace.rootIno) {
            case ("session", true): return Array(workspace.session.name.utf8)
            case ("head", true):
                guard let head = workspace.session.head, let s = try? workspace.repo.metadata.snapshot(id: head) else { throw .noAttribute }
                return Array(s.sid.utf8)
            case ("branch", true):
                guard let b = try workspace.baseBranch() else { throw .noAttribute }
                return Array(b.utf8)
            case ("root", true): return Array(try workspace.currentRoot().hex.utf8)
            case ("state", _): return Array(try workspace.state(ino).utf8)
            case ("digest", _): return Array(try workspace.digest(ino).hex.utf8)
            default: throw .noAttribute
            }
        }
    }

    public func listxattr(_ ino: UInt64) throws(FSFailure) -> [String] {
        if ControlFile.isVirtual(ino) { return [] }
        if isView(ino) { return try snapshots.listxattr(ino) }
        return try run { () throws(AetherError) in try workspace.listXattrs(ino) }
    }

    /// The corresponding FUSE operation is `setxattr`. On the root, `user.aether.checkpoint`, `.fork`,
    /// `.commit` and `.restore` run the control request in the value; any other `user.aether.` name is EPERM.
    /// Returns the invalidations to send after the reply (see `perform`).
    @discardableResult
    public func setxattr(_ ino: UInt64, name: String, value: [UInt8], create: Bool, replace: Bool,
                         caller: Caller) throws(FSFailure) -> [Invalidation] {
        if ControlFile.isVirtual(ino) { throw FSFailure(.notPermitted("control files have no attributes")) }
        if isView(ino) { throw .readOnly }
        if name.hasPrefix(SessionFileSystem.reservedPrefix) {
            let key = Array(name.dropFirst(SessionFileSystem.reservedPrefix.count).utf8)
            guard ino == Workspace.rootIno, let action = ControlFile(name: key), action.writable else {
                throw FSFailure(.notPermitted("the user.aether. prefix is reserved"))
            }
            return try perform(action, payload: value, caller: caller, deferRoot: true)
        }
        try change(by: caller) { () throws(AetherError) in try workspace.setXattr(ino, name: name, value: value, create: create, replace: replace, caller: caller) }
        return []
    }

    public func removexattr(_ ino: UInt64, name: String, caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) {
        if ControlFile.isVirtual(ino) { throw FSFailure(.noAttribute) }
        if isView(ino) { throw .readOnly }
        if name.hasPrefix(SessionFileSystem.reservedPrefix) { throw FSFailure(.notPermitted("the user.aether. prefix is reserved")) }
        try change(by: caller) { () throws(AetherError) in try workspace.removeXattr(ino, name: name) }
    }

    // MARK: the file system as a whole

    public func statfs() -> statvfs { snapshots.statfs() }

    /// Saves what is pending; called when the mount goes away.
    public func shutdown() {
        lock.withLock { try? workspace.syncAll() }
    }
}

/// The kernel's bookkeeping of a session's inodes: how many references (lookups) it holds of each.
/// A node that lost its last name stays while the kernel holds it (`InodeHolders`). Guarded by the
/// session file system's lock.
final class InodeTable: InodeHolders {
    private var lookups: [UInt64: UInt64] = [:]

    func hold(_ ino: UInt64) { lookups[ino, default: 0] += 1 }

    /// The kernel dropped `count` references; returns whether it holds none now.
    func forget(_ ino: UInt64, _ count: UInt64) -> Bool {
        guard let n = lookups[ino] else { return true }
        if n > count { lookups[ino] = n - count; return false }
        lookups[ino] = nil
        return true
    }

    func holds(_ ino: UInt64) -> Bool { lookups[ino] != nil }
}
