#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore
import Logging

/// A read-only file system of snapshots, over `SnapshotViews`: mounted alone (`mount --snapshots`) it
/// is a store's commits as `branches/BRANCH/{ID,latest}`, `by-id/ID`, `by-time/TIME-ID`; inside a
/// session's mount it serves `.aether/checkpoints` and `.aether/commits`. Every change is EROFS.
///
/// Views open without a handle of their own (a read names its inode). `lock` guards the views and
/// the listings; inside a session mount it is the session's lock, so the session the views show is
/// read under it.
public final class SnapshotFileSystem: MountedFileSystem, @unchecked Sendable {
    let views: SnapshotViews
    let lock: Lock
    let options: MountOptions
    let logger: Logger
    var listings = ListingCache()
    public var kernelSkipsOpendir = false

    /// A whole mount of a store's commits.
    public convenience init(snapshotsOf repo: Repository, options: MountOptions = MountOptions(),
                            logger: Logger = Logger(label: "aetherfs.vfs")) {
        self.init(views: SnapshotViews(repo: repo) { nil }, lock: Lock(), options: options, logger: logger)
        views.views[Workspace.rootIno] = views.listingView(.storeRoot, ino: Workspace.rootIno)
    }

    /// The views of a session's mount, under the session's lock.
    init(views: SnapshotViews, lock: Lock, options: MountOptions, logger: Logger) {
        self.views = views
        self.lock = lock
        self.options = options
        self.logger = logger
    }

    public var sessionName: String { "snapshots" }
    public var writebackCache: Bool { false }
    public func attach(_ kernel: (any KernelNotifier)?) {}
    public func afterReply(_ items: [Invalidation]) {}

    func run<T>(_ body: () throws(AetherError) -> T) throws(FSFailure) -> T {
        try mappingErrors(logger) { () throws(AetherError) -> T in try lock.withLock { () throws(AetherError) -> T in try body() } }
    }

    /// A view's entry: a listing of snapshots has its attributes asked for every time (see
    /// `SnapshotViews.currentAttributes`). Under `lock`.
    func reply(_ a: Attributes) -> EntryReply {
        EntryReply(attributes: a, entryTimeout: options.cacheTimeout, attrTimeout: views.isListing(a.ino) ? 0 : options.cacheTimeout)
    }

    // MARK: reading

    public func lookup(parent: UInt64, name: [UInt8]) throws(FSFailure) -> EntryReply {
        try run { () throws(AetherError) in reply(try views.lookup(parent, name)) }
    }

    public func forget(_ ino: UInt64, count: UInt64) {}

    public func getattr(_ ino: UInt64) throws(FSFailure) -> EntryReply {
        try run { () throws(AetherError) in reply(try views.currentAttributes(ino)) }
    }

    public func readlink(_ ino: UInt64) throws(FSFailure) -> [UInt8] {
        try run { () throws(AetherError) in try views.readlink(ino) }
    }

    public func open(_ ino: UInt64, writing: Bool, truncate: Bool, caller: Caller) throws(FSFailure) -> (handle: UInt64, direct: Bool) {
        if writing { throw .readOnly }
        return try run { () throws(AetherError) in
            _ = try views.view(ino)
            return (0, false)
        }
    }

    /// Only the plan is made under the lock; stored bytes are read, decompressed and verified outside it.
    public func read(_ ino: UInt64, handle: UInt64, offset: UInt64, count: Int) throws(FSFailure) -> [UInt8] {
        let plan = try run { () throws(AetherError) in try views.read(ino, offset: offset, count: count) }
        if case .bytes(let b) = plan { return b }
        return try mappingErrors(logger) { () throws(AetherError) in try views.repo.content.read(plan) }
    }

    public func flush(_ ino: UInt64, handle: UInt64, caller: Caller) throws(FSFailure) {}
    public func release(_ ino: UInt64, handle: UInt64) throws(FSFailure) {}
    public func fsync(_ ino: UInt64, dataOnly: Bool) throws(FSFailure) {}
    public func fsyncdir(_ ino: UInt64) throws(FSFailure) {}

    public func seek(_ ino: UInt64, offset: UInt64, data: Bool) throws(FSFailure) -> UInt64 {
        try run { () throws(AetherError) in
            guard let at = try views.seek(ino, offset: offset, data: data) else {
                throw .noMoreData("no \(data ? "data" : "hole") at or after offset \(offset)")
            }
            return at
        }
    }

    /// A snapshot's tree never changes: the kernel may keep its listings; not those of listings of
    /// snapshots, whose times change whenever they are asked for.
    public func opendir(_ ino: UInt64) throws(FSFailure) -> Bool {
        try run { () throws(AetherError) in _ = try views.view(ino); return !views.isListing(ino) }
    }

    public func readdir(_ ino: UInt64, offset: Int, plus: Bool,
                        accept: (_ name: [UInt8], _ entry: EntryReply, _ nextOffset: Int) -> Bool) throws(FSFailure) {
        try run { () throws(AetherError) in
            let l = try listing(ino)
            let own = try views.view(ino).attributes
            var up = own
            up.ino = Workspace.rootIno
            let dots = [own, up].map { EntryReply(attributes: $0, entryTimeout: 0, attrTimeout: 0) }
            try l.serve(offset: offset, dots: dots, reply: { (e) throws(AetherError) in
                let a = try views.view(e.ino).attributes
                let cached = plus && !views.isListing(e.ino)
                return EntryReply(attributes: a, entryTimeout: plus ? options.cacheTimeout : 0, attrTimeout: cached ? options.cacheTimeout : 0)
            }, returned: { _ in }, accept: accept)
        }
    }

    /// A view directory's listing. Under `lock`.
    func listing(_ ino: UInt64) throws(AetherError) -> Listing {
        try listings.listing(ino, stamp: views.isListing(ino) ? nil : 0) { () throws(AetherError) in
            try views.children(ino).map { DirectoryEntry(name: $0.name, ino: $0.view.attributes.ino, kind: $0.view.attributes.kind) }
        }
    }

    public func getxattr(_ ino: UInt64, name: String) throws(FSFailure) -> [UInt8] {
        try run { () throws(AetherError) in
            guard let v = try views.view(ino).xattrs[name] else { throw .noAttribute }
            return v
        }
    }

    public func listxattr(_ ino: UInt64) throws(FSFailure) -> [String] {
        try run { () throws(AetherError) in try views.view(ino).xattrs.keys.sorted() }
    }

    public func statfs() -> statvfs {
        var st = statvfs()
        _ = statvfs(views.repo.path, &st)
        st.f_namemax = UInt(Workspace.maxNameLength)
        return st
    }

    public func shutdown() {}

    // MARK: every change is EROFS

    public func setattr(_ ino: UInt64, _ change: AttributeChange, caller: Caller) throws(FSFailure) -> EntryReply { throw .readOnly }
    public func mknod(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, caller: Caller) throws(FSFailure) -> EntryReply { throw .readOnly }
    public func tmpfile(parent: UInt64, mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply { throw .readOnly }
    public func mkdir(parent: UInt64, name: [UInt8], mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply { throw .readOnly }
    public func symlink(parent: UInt64, name: [UInt8], target: [UInt8], caller: Caller) throws(FSFailure) -> EntryReply { throw .readOnly }
    public func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8], caller: Caller) throws(FSFailure) -> EntryReply { throw .readOnly }
    public func unlink(parent: UInt64, name: [UInt8], caller: Caller) throws(FSFailure) { throw .readOnly }
    public func rmdir(parent: UInt64, name: [UInt8], caller: Caller) throws(FSFailure) { throw .readOnly }
    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: Workspace.RenameFlags,
                       caller: Caller) throws(FSFailure) { throw .readOnly }
    public func write(_ ino: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer,
                      caller: Caller) throws(FSFailure) -> (count: Int, afterReply: [Invalidation]) { throw .readOnly }
    public func fallocate(_ ino: UInt64, mode: Int32, offset: UInt64, length: UInt64, caller: Caller) throws(FSFailure) { throw .readOnly }
    public func setxattr(_ ino: UInt64, name: String, value: [UInt8], create: Bool, replace: Bool,
                         caller: Caller) throws(FSFailure) -> [Invalidation] { throw .readOnly }
    public func removexattr(_ ino: UInt64, name: String, caller: Caller) throws(FSFailure) { throw .readOnly }
}
