#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore
import Logging
import Dispatch
import Synchronization

/// What the kernel learns about a node: its attributes and how long it may cache them.
public struct EntryReply: Sendable {
    public var attributes: Attributes
    public var entryTimeout: Double
    public var attrTimeout: Double
}

/// Options of one mount.
public struct MountOptions: Sendable {
    /// List `.aether` in the root directory (it is reachable by name either way).
    public var showControl = false
    /// Seconds the kernel may trust names and attributes of the tree (changes come only through us).
    public var cacheTimeout: Double = 86400
    /// Let the kernel keep written pages and send them later in large writes (FUSE writeback cache).
    /// Off by default: the kernel then writes its pages back in any order, so a checkpoint taken while
    /// a program writes could hold a state that never existed (blocks of a later write without those of
    /// an earlier one). Without it every write(2) reaches the daemon before it returns, in order, and a
    /// checkpoint is the session's content at one instant.
    public var writebackCache = false
    public init() {}
}

/// The file system a mount serves: the session's workspace, the `.aether` control surface, open
/// handles, and the translation of domain errors into errno. Kernel-free: the FUSE adapter calls one
/// method per request, and kernel invalidations leave through its `KernelNotifier`.
///
/// Lock order: `lock` guards the workspace and the handle table; it is never held while the
/// notifier runs. A checkpoint (fork, commit) lets `lock` go while it cuts written files into the
/// store (`frozen`): reads, lookups, opens and closes go on, and every request that changes the tree
/// or reads it whole waits on `thawed` (`change`).
public final class VirtualFileSystem: @unchecked Sendable {
    /// The session served; nil in a snapshots-only mount, where every inode is a view.
    let workspace: Workspace!
    let views: SnapshotViews
    let snapshotsOnly: Bool
    /// The uid owning the session (root's in a snapshots-only mount): the control files are its.
    let sessionOwner: UInt32
    let options: MountOptions
    let logger: Logger
    let lock = Lock()
    var handles: [UInt64: Handle] = [:]
    var nextHandle: UInt64 = 1
    var lastResults: [UInt32: String] = [:]
    /// The kernel's side: attached by the FUSE adapter while the session runs; none in unit tests.
    private let notifier = Mutex<(any KernelNotifier)?>(nil)
    public var writebackCache: Bool { !snapshotsOnly && options.writebackCache }
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
        if !snapshotsOnly { notifier.withLock { $0 }?.flushWrites() }
    }
    public let mountpoint: String

    public init(workspace: Workspace, mountpoint: String, options: MountOptions = MountOptions(), logger: Logger = Logger(label: "aetherfs.vfs")) {
        self.workspace = workspace
        self.views = SnapshotViews(repo: workspace.repo) { workspace.session }
        self.snapshotsOnly = false
        self.sessionOwner = workspace.session.owner
        self.options = options
        self.logger = logger
        self.mountpoint = mountpoint
        // Called with `lock` held, from a request that waited for no other freeze (`change`).
        workspace.outsideLock = { [unowned self] body in
            frozen = true
            lock.unlocked(body)
            frozen = false
            thawed.broadcast()
        }
    }

    /// A read-only file system of a store's commits: `branches/BRANCH/{ID,latest}`, `by-id/ID`, `by-time/TIME-ID`.
    public init(snapshotsOf repo: Repository, mountpoint: String, options: MountOptions = MountOptions(), logger: Logger = Logger(label: "aetherfs.vfs")) {
        self.workspace = nil
        self.views = SnapshotViews(repo: repo) { nil }
        self.snapshotsOnly = true
        self.sessionOwner = 0
        self.options = options
        self.logger = logger
        self.mountpoint = mountpoint
        views.views[Workspace.rootIno] = views.listingView(.storeRoot, ino: Workspace.rootIno)
    }

    public var sessionName: String { snapshotsOnly ? "snapshots" : lock.withLock { workspace.session.name } }

    /// Whether an inode is a read-only snapshot view.
    func isView(_ ino: UInt64) -> Bool { snapshotsOnly || SnapshotViews.owns(ino) }

    static let readOnly = FSFailure(.readOnly)

    enum Handle {
        case file(UInt64)
        case control(ControlHandle)
        case view(UInt64)
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

    /// Under `lock`: waits while a checkpoint works outside it.
    func waitUntilThawed() {
        while frozen { lock.wait(thawed) }
    }

    /// Runs `body` (without the lock), mapping domain errors to errno and logging the serious ones.
    func mappingErrors<T>(_ body: () throws(AetherError) -> T) throws(FSFailure) -> T {
        do {
            return try body()
        } catch {
            switch error {
            case .notFound: break
            case .damaged, .noSpace, .system(EIO, _): logger.error("\(error.description)")
            default: logger.debug("request failed", metadata: ["error": "\(error)"])
            }
            throw FSFailure(error)
        }
    }

    func reply(_ a: Attributes) -> EntryReply {
        EntryReply(attributes: a, entryTimeout: options.cacheTimeout, attrTimeout: options.cacheTimeout)
    }

    /// A view's entry: a listing of snapshots has its attributes asked for every time (see
    /// `SnapshotViews.currentAttributes`). Under `lock`.
    func viewReply(_ a: Attributes) -> EntryReply {
        EntryReply(attributes: a, entryTimeout: options.cacheTimeout, attrTimeout: views.isListing(a.ino) ? 0 : options.cacheTimeout)
    }

    // MARK: names

    /// The corresponding FUSE operation is `lookup`. Errors: ENOENT, ENOTDIR, ENAMETOOLONG, EIO.
    public func lookup(parent: UInt64, name: [UInt8]) throws(FSFailure) -> EntryReply {
        if isView(parent) { return try run { () throws(AetherError) in viewReply(try views.lookup(parent, name)) } }
        if let control = try controlLookup(parent: parent, name: name) { return control }
        return try run { () throws(AetherError) in reply(try workspace.lookup(parent: parent, name: name)) }
    }

    /// The corresponding FUSE operation is `forget` (and `forget_multi`).
    public func forget(_ ino: UInt64, count: UInt64) {
        if ControlFile.isVirtual(ino) || isView(ino) { return }
        lock.withLock { workspace.forget(ino, count: count) }
    }

    /// The corresponding FUSE operation is `getattr`.
    public func getattr(_ ino: UInt64) throws(FSFailure) -> EntryReply {
        if let a = controlAttributes(ino) { return EntryReply(attributes: a, entryTimeout: 0, attrTimeout: 0) }
        if isView(ino) { return try run { () throws(AetherError) in viewReply(try views.currentAttributes(ino)) } }
        return try run { () throws(AetherError) in reply(try workspace.attributes(ino)) }
    }

    /// The corresponding FUSE operation is `setattr`. Errors: EISDIR, EINVAL, ENOSPC, EIO.
    public func setattr(_ ino: UInt64, _ change: AttributeChange) throws(FSFailure) -> EntryReply {
        if let a = controlAttributes(ino) { return EntryReply(attributes: a, entryTimeout: 0, attrTimeout: 0) }
        if isView(ino) { throw VirtualFileSystem.readOnly }
        return try self.change { () throws(AetherError) in
            if resizing.contains(ino) { return reply(try workspace.attributes(ino)) }
            return reply(try workspace.setAttributes(ino, change))
        }
    }

    public func readlink(_ ino: UInt64) throws(FSFailure) -> [UInt8] {
        try run { () throws(AetherError) in isView(ino) ? try views.readlink(ino) : try workspace.readlink(ino) }
    }

    // MARK: creating and removing

    private func checkNotControl(_ parent: UInt64, _ name: [UInt8]) throws(FSFailure) {
        if isView(parent) { throw VirtualFileSystem.readOnly }
        if ControlFile.isVirtual(parent) { throw FSFailure(.notPermitted("the control directory is not writable")) }
        if parent == Workspace.rootIno && name == ControlFile.directoryName {
            throw FSFailure(.exists(".aether is reserved for the control surface"))
        }
    }

    public func mknod(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, name)
        return try change { () throws(AetherError) in
            NodeKind(typeBits: mode) == .file || mode & 0o170000 == 0
                ? reply(try workspace.create(parent: parent, name: name, mode: mode, caller: caller))
                : reply(try workspace.mknod(parent: parent, name: name, mode: mode, rdev: rdev, caller: caller))
        }
    }

    /// The corresponding FUSE operation is `tmpfile` (O_TMPFILE): an unnamed file in `parent`.
    public func tmpfile(parent: UInt64, mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, [])
        return try change { () throws(AetherError) in reply(try workspace.tmpfile(parent: parent, mode: mode, caller: caller)) }
    }

    public func mkdir(parent: UInt64, name: [UInt8], mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, name)
        return try change { () throws(AetherError) in reply(try workspace.mkdir(parent: parent, name: name, mode: mode, caller: caller)) }
    }

    public func symlink(parent: UInt64, name: [UInt8], target: [UInt8], caller: Caller) throws(FSFailure) -> EntryReply {
        try checkNotControl(parent, name)
        return try change { () throws(AetherError) in reply(try workspace.symlink(parent: parent, name: name, target: target, caller: caller)) }
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8]) throws(FSFailure) -> EntryReply {
        if ControlFile.isVirtual(ino) { throw FSFailure(.notPermitted("control files cannot be linked")) }
        if isView(ino) { throw VirtualFileSystem.readOnly }
        try checkNotControl(newParent, newName)
        return try change { () throws(AetherError) in reply(try workspace.link(ino, newParent: newParent, newName: newName)) }
    }

    public func unlink(parent: UInt64, name: [UInt8]) throws(FSFailure) {
        try checkNotControl(parent, name)
        try change { () throws(AetherError) in try workspace.unlink(parent: parent, name: name) }
    }

    public func rmdir(parent: UInt64, name: [UInt8]) throws(FSFailure) {
        try checkNotControl(parent, name)
        try change { () throws(AetherError) in try workspace.rmdir(parent: parent, name: name) }
    }

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: Workspace.RenameFlags,
                       caller: Caller = Caller(uid: 0, gid: 0)) throws(FSFailure) {
        try checkNotControl(parent, name)
        try checkNotControl(newParent, newName)
        try change { () throws(AetherError) in
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
        if isView(ino) {
            if writing { throw VirtualFileSystem.readOnly }
            return try run { () throws(AetherError) in
                _ = try views.view(ino)
                return (addHandle(.view(ino)), false)
            }
        }
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
        if isView(ino) {
            return try run { () throws(AetherError) in
                guard let at = try views.seek(ino, offset: offset, data: data) else {
                    throw .noMoreData("no \(data ? "data" : "hole") at or after offset \(offset)")
                }
                return at
            }
        }
        return try run { () throws(AetherError) in try workspace.seek(ino, offset: offset, data: data) }
    }

    /// The corresponding FUSE operation is `read`. Only the plan is made under the lock; stored bytes are
    /// read, decompressed and verified outside it, so reads of the chunk store run side by side.
    public func read(_ ino: UInt64, handle: UInt64, offset: UInt64, count: Int) throws(FSFailure) -> [UInt8] {
        let plan = try run { () throws(AetherError) -> ReadPlan in
            if case .control(let h)? = handles[handle] {
                let content = h.content
                guard offset < UInt64(content.count) else { return .bytes([]) }
                return .bytes(Array(content[Int(offset)..<min(content.count, Int(offset) + count)]))
            }
            if case .view(let v)? = handles[handle] { return try views.read(v, offset: offset, count: count) }
            return try workspace.read(ino, offset: offset, count: count)
        }
        if case .bytes(let b) = plan { return b }
        return try mappingErrors { () throws(AetherError) in try views.repo.content.read(plan) }
    }

    public func write(_ ino: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer,
                      caller: Caller) throws(FSFailure) -> (count: Int, afterReply: [Invalidation]) {
        if let control = ControlFile(ino: ino) { return (try controlWrite(control, handle: handle, data: data, caller: caller), []) }
        if isView(ino) { throw VirtualFileSystem.readOnly }
        let (count, modeChanged) = try change { () throws(AetherError) in
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
        try run { () throws(AetherError) in
            guard let h = handles.removeValue(forKey: handle) else { return }
            if case .file(let ino) = h { try workspace.release(ino) }
        }
    }

    /// The corresponding FUSE operation is `fallocate`. Errors: EOPNOTSUPP (other modes, control
    /// files), EROFS (views), ENOSPC, EISDIR, EINVAL.
    public func fallocate(_ ino: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws(FSFailure) {
        if ControlFile.isVirtual(ino) { throw FSFailure(.notSupported("control files take no fallocate")) }
        if isView(ino) { throw VirtualFileSystem.readOnly }
        try change { () throws(AetherError) in try workspace.fallocate(ino, mode: mode, offset: offset, length: length) }
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
        if isView(ino) { return try run { () throws(AetherError) in _ = try views.view(ino); return !views.isListing(ino) } }
        return try run { () throws(AetherError) in _ = try workspace.listingStamp(ino); return true }
    }

    /// A directory's entries ordered by their cookies (the offsets readdir hands out), with the stamp
    /// under which they hold (nil: taken again each time).
    struct Listing {
        var stamp: UInt64?
        var entries: [DirectoryEntry]
        var cookies: [Int]
    }

    /// Listings taken, kept while their directories do not change: the kernel reads a long directory in
    /// many requests.
    var listings: [UInt64: Listing] = [:]
    static let listingsKept = 64

    /// The cookie of a name: a hash, so that readdir resumes after the entry it last returned even when
    /// entries were added or removed in between. Names of equal hash (58 bits) are told apart by their
    /// rank among them; cookies are at least 2^62, clear of `.` and `..` (offsets 1 and 2).
    static func cookies(of entries: [DirectoryEntry]) -> (entries: [DirectoryEntry], cookies: [Int]) {
        func hash(_ name: [UInt8]) -> Int {
            Int(truncatingIfNeeded: (FNV1a.hash(name) >> 6) << 4) & ((1 << 62) - 1) | (1 << 62)
        }
        let keyed = entries.map { (hash($0.name), $0) }.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1.name.lexicographicallyPrecedes($1.1.name) }
        var cookies: [Int] = []
        cookies.reserveCapacity(keyed.count)
        var rank = 0
        for (i, (h, _)) in keyed.enumerated() {
            rank = i > 0 && keyed[i - 1].0 == h ? min(rank + 1, 15) : 0
            cookies.append(h | rank)
        }
        return (keyed.map(\.1), cookies)
    }

    /// The listing of a directory, from `listings` while it holds. Under `lock`.
    func listing(_ ino: UInt64) throws(AetherError) -> Listing {
        let stamp: UInt64?
        let entries: () throws(AetherError) -> [DirectoryEntry]
        if ino == ControlFile.directoryIno {
            stamp = nil
            entries = {
                var out = ControlFile.allCases.map { DirectoryEntry(name: Array($0.name.utf8), ino: $0.ino, kind: .file) }
                for name in ["checkpoints", "commits"] {
                    if let v = self.viewListing(Array(name.utf8)) { out.append(DirectoryEntry(name: Array(name.utf8), ino: v.attributes.ino, kind: .directory)) }
                }
                return out
            }
        } else if isView(ino) {
            stamp = views.isListing(ino) ? nil : 0  // a snapshot's tree never changes
            entries = { () throws(AetherError) in
                try self.views.children(ino).map { DirectoryEntry(name: $0.name, ino: $0.view.attributes.ino, kind: $0.view.attributes.kind) }
            }
        } else {
            stamp = try workspace.listingStamp(ino)
            entries = { () throws(AetherError) in
                var out = try self.workspace.list(ino)
                if ino == Workspace.rootIno && self.options.showControl {
                    out.append(DirectoryEntry(name: ControlFile.directoryName, ino: ControlFile.directoryIno, kind: .directory))
                }
                return out
            }
        }
        if let stamp, let kept = listings[ino], kept.stamp == stamp { return kept }
        let (sorted, cookies) = VirtualFileSystem.cookies(of: try entries())
        let l = Listing(stamp: stamp, entries: sorted, cookies: cookies)
        if stamp != nil {
            if listings.count >= VirtualFileSystem.listingsKept { listings.removeAll(keepingCapacity: true) }
            listings[ino] = l
        }
        return l
    }

    /// Entries of a directory after `offset` (0: from the start; 1 and 2 follow `.` and `..`; else the
    /// cookie of the entry last returned). With `plus`, each returned entry counts one lookup; `accept`
    /// says whether it fit in the reply.
    public func readdir(_ ino: UInt64, offset: Int, plus: Bool,
                        accept: (_ name: [UInt8], _ entry: EntryReply, _ nextOffset: Int) -> Bool) throws(FSFailure) {
        try run { () throws(AetherError) in
            let l = try listing(ino)
            if offset < 2 {
                let dots: [(name: [UInt8], target: UInt64)] = [([46], ino), ([46, 46], ControlFile.isVirtual(ino) || isView(ino) ? Workspace.rootIno : workspace.parentOf(ino))]
                for i in offset..<2 {
                    let attributes = (try? attributesForListing(dots[i].target)) ?? controlAttributes(ControlFile.directoryIno)!
                    guard accept(dots[i].name, EntryReply(attributes: attributes, entryTimeout: 0, attrTimeout: 0), i + 1) else { return }
                }
            }
            var i = offset <= 2 ? 0 : l.cookies.partitionPoint { $0 <= offset }
            while i < l.entries.count {
                let target = l.entries[i].ino
                let attributes = try attributesForListing(target)
                let cached = plus && !views.isListing(target) && !ControlFile.isVirtual(target)
                guard accept(l.entries[i].name, EntryReply(attributes: attributes, entryTimeout: plus ? options.cacheTimeout : 0,
                                                           attrTimeout: cached ? options.cacheTimeout : 0), l.cookies[i]) else { return }
                if plus && !ControlFile.isVirtual(target) && !isView(target) { _ = try workspace.retain(target) }
                i += 1
            }
        }
    }

    /// Attributes of a listed entry. Under `lock`.
    private func attributesForListing(_ ino: UInt64) throws(AetherError) -> Attributes {
        if let a = controlAttributes(ino) { return a }
        if isView(ino) { return try views.view(ino).attributes }
        return try workspace.attributes(ino)
    }

    public func fsyncdir(_ ino: UInt64) throws(FSFailure) {
        if snapshotsOnly { return }
        try change { () throws(AetherError) in try workspace.syncAll() }
    }

    // MARK: extended attributes

    static let reservedPrefix = "user.aether."

    /// The corresponding FUSE operation is `getxattr`. Besides the user's attributes: on the root
    /// `user.aether.session`, `.head`, `.branch`, `.root` (the current tree's id); on every file
    /// `user.aether.state` and `.digest`.
    public func getxattr(_ ino: UInt64, name: String) throws(FSFailure) -> [UInt8] {
        if ControlFile.isVirtual(ino) { throw FSFailure(.noAttribute) }
        if isView(ino) {
            return try run { () throws(AetherError) in
                guard let v = try views.view(ino).xattrs[name] else { throw .noAttribute }
                return v
            }
        }
        if name.hasPrefix(VirtualFileSystem.reservedPrefix) { flushKernel() }
        // `root` and `digest` write the tree or a file into the store: they wait for a freeze, as changes do.
        return try change { () throws(AetherError) in
            guard name.hasPrefix(VirtualFileSystem.reservedPrefix) else { return try workspace.getXattr(ino, name: name) }
            let key = String(name.dropFirst(VirtualFileSystem.reservedPrefix.count))
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
        if isView(ino) { return try run { () throws(AetherError) in try views.view(ino).xattrs.keys.sorted() } }
        return try run { () throws(AetherError) in try workspace.listXattrs(ino) }
    }

    /// The corresponding FUSE operation is `setxattr`. On the root, `user.aether.checkpoint`, `.fork`,
    /// `.commit` and `.restore` run the control request in the value; any other `user.aether.` name is EPERM.
    /// Returns the invalidations to send after the reply (see `perform`).
    @discardableResult
    public func setxattr(_ ino: UInt64, name: String, value: [UInt8], create: Bool, replace: Bool,
                         caller: Caller) throws(FSFailure) -> [Invalidation] {
        if ControlFile.isVirtual(ino) { throw FSFailure(.notPermitted("control files have no attributes")) }
        if isView(ino) { throw VirtualFileSystem.readOnly }
        if name.hasPrefix(VirtualFileSystem.reservedPrefix) {
            let key = Array(name.dropFirst(VirtualFileSystem.reservedPrefix.count).utf8)
            guard ino == Workspace.rootIno, let action = ControlFile(name: key), action.writable else {
                throw FSFailure(.notPermitted("the user.aether. prefix is reserved"))
            }
            return try perform(action, payload: value, caller: caller, deferRoot: true)
        }
        try change { () throws(AetherError) in try workspace.setXattr(ino, name: name, value: value, create: create, replace: replace, caller: caller) }
        return []
    }

    public func removexattr(_ ino: UInt64, name: String) throws(FSFailure) {
        if ControlFile.isVirtual(ino) { throw FSFailure(.noAttribute) }
        if isView(ino) { throw VirtualFileSystem.readOnly }
        if name.hasPrefix(VirtualFileSystem.reservedPrefix) { throw FSFailure(.notPermitted("the user.aether. prefix is reserved")) }
        try change { () throws(AetherError) in try workspace.removeXattr(ino, name: name) }
    }

    // MARK: the file system as a whole

    public func statfs() -> statvfs {
        var st = statvfs()
        _ = statvfs(views.repo.path, &st)
        st.f_namemax = UInt(Workspace.maxNameLength)
        return st
    }

    /// Saves what is pending; called when the mount goes away.
    public func shutdown() {
        if snapshotsOnly { return }
        lock.withLock { try? workspace.syncAll() }
    }
}
