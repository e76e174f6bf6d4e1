#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import Logging

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

/// A file system a mount serves, kernel-free: the FUSE adapter decodes a request, makes one call
/// here and replies. `SessionFileSystem` serves a session; `SnapshotFileSystem` a store's commits,
/// read-only. Every error is an `FSFailure`, whose errno comes from the one table (`Errno.swift`).
public protocol MountedFileSystem: AnyObject, Sendable {
    /// The name the mount shows in the mount table (`aetherfs:NAME`).
    var sessionName: String { get }
    /// Whether the kernel may keep written pages (FUSE writeback cache).
    var writebackCache: Bool { get }
    /// Whether the kernel can do without opendir (set by the adapter from the connection's capabilities).
    var kernelSkipsOpendir: Bool { get set }
    /// Connects the kernel's side (nil detaches it, at the end of the session).
    func attach(_ kernel: (any KernelNotifier)?)
    /// Sends what a request's answer left for after the reply.
    func afterReply(_ items: [Invalidation])

    func lookup(parent: UInt64, name: [UInt8]) throws(FSFailure) -> EntryReply
    func forget(_ ino: UInt64, count: UInt64)
    func getattr(_ ino: UInt64) throws(FSFailure) -> EntryReply
    func setattr(_ ino: UInt64, _ change: AttributeChange, caller: Caller) throws(FSFailure) -> EntryReply
    func readlink(_ ino: UInt64) throws(FSFailure) -> [UInt8]
    func mknod(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64, caller: Caller) throws(FSFailure) -> EntryReply
    func tmpfile(parent: UInt64, mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply
    func mkdir(parent: UInt64, name: [UInt8], mode: UInt32, caller: Caller) throws(FSFailure) -> EntryReply
    func symlink(parent: UInt64, name: [UInt8], target: [UInt8], caller: Caller) throws(FSFailure) -> EntryReply
    func link(_ ino: UInt64, newParent: UInt64, newName: [UInt8], caller: Caller) throws(FSFailure) -> EntryReply
    func unlink(parent: UInt64, name: [UInt8], caller: Caller) throws(FSFailure)
    func rmdir(parent: UInt64, name: [UInt8], caller: Caller) throws(FSFailure)
    func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: Workspace.RenameFlags,
                caller: Caller) throws(FSFailure)
    /// Returns the handle and whether the kernel must bypass its page cache.
    func open(_ ino: UInt64, writing: Bool, truncate: Bool, caller: Caller) throws(FSFailure) -> (handle: UInt64, direct: Bool)
    func read(_ ino: UInt64, handle: UInt64, offset: UInt64, count: Int) throws(FSFailure) -> [UInt8]
    func write(_ ino: UInt64, handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer,
               caller: Caller) throws(FSFailure) -> (count: Int, afterReply: [Invalidation])
    func flush(_ ino: UInt64, handle: UInt64, caller: Caller) throws(FSFailure)
    func release(_ ino: UInt64, handle: UInt64) throws(FSFailure)
    func seek(_ ino: UInt64, offset: UInt64, data: Bool) throws(FSFailure) -> UInt64
    func fallocate(_ ino: UInt64, mode: Int32, offset: UInt64, length: UInt64, caller: Caller) throws(FSFailure)
    func fsync(_ ino: UInt64, dataOnly: Bool) throws(FSFailure)
    /// Returns whether the kernel may keep the listing.
    func opendir(_ ino: UInt64) throws(FSFailure) -> Bool
    func readdir(_ ino: UInt64, offset: Int, plus: Bool,
                 accept: (_ name: [UInt8], _ entry: EntryReply, _ nextOffset: Int) -> Bool) throws(FSFailure)
    func fsyncdir(_ ino: UInt64) throws(FSFailure)
    func getxattr(_ ino: UInt64, name: String) throws(FSFailure) -> [UInt8]
    func listxattr(_ ino: UInt64) throws(FSFailure) -> [String]
    /// Returns the invalidations to send after the reply.
    func setxattr(_ ino: UInt64, name: String, value: [UInt8], create: Bool, replace: Bool,
                  caller: Caller) throws(FSFailure) -> [Invalidation]
    func removexattr(_ ino: UInt64, name: String, caller: Caller) throws(FSFailure)
    func statfs() -> statvfs
    /// Saves what is pending; called when the mount goes away.
    func shutdown()
}

extension FSFailure {
    static let readOnly = FSFailure(.readOnly)
}

/// Runs `body`, turning a domain error into the `FSFailure` the syscall answers and logging the
/// serious ones (damage, a full store, I/O errors).
func mappingErrors<T>(_ logger: Logger, _ body: () throws(AetherError) -> T) throws(FSFailure) -> T {
    do {
        return try body()
    } catch {
        switch error {
        case .notFound: break
        case .damaged, .noSpace, .failed, .system(EIO, _): logger.error("\(error.description)")
        default: logger.debug("request failed", metadata: ["error": "\(error)"])
        }
        throw FSFailure(error)
    }
}

/// A directory's entries ordered by their cookies (the offsets readdir hands out), with the stamp
/// under which they hold (nil: taken again each time).
struct Listing {
    var stamp: UInt64?
    var entries: [DirectoryEntry]
    var cookies: [Int]

    init(stamp: UInt64?, entries: [DirectoryEntry]) {
        self.stamp = stamp
        (self.entries, cookies) = Listing.cookies(of: entries)
    }

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

    /// Hands `accept` the entries after `offset` (0: from the start; 1 and 2 follow `.` and `..`; else
    /// the cookie of the entry last returned) until it says one did not fit. `dots` are the replies
    /// for `.` and `..`; `reply` makes an entry's; `returned` hears of each entry that fit.
    func serve(offset: Int, dots: [EntryReply], reply: (DirectoryEntry) throws(AetherError) -> EntryReply,
               returned: (DirectoryEntry) throws(AetherError) -> Void,
               accept: (_ name: [UInt8], _ entry: EntryReply, _ nextOffset: Int) -> Bool) throws(AetherError) {
        if offset < 2 {
            let names: [[UInt8]] = [[46], [46, 46]]
            for i in offset..<2 { guard accept(names[i], dots[i], i + 1) else { return } }
        }
        var i = offset <= 2 ? 0 : cookies.partitionPoint { $0 <= offset }
        while i < entries.count {
            guard accept(entries[i].name, try reply(entries[i]), cookies[i]) else { return }
            try returned(entries[i])
            i += 1
        }
    }
}

/// Listings taken, kept while their directories do not change: the kernel reads a long directory in
/// many requests. The caller serializes access.
struct ListingCache {
    static let kept = 64
    var listings: [UInt64: Listing] = [:]

    /// The listing of `ino`, from the cache while its stamp holds (a nil stamp is never kept).
    mutating func listing(_ ino: UInt64, stamp: UInt64?, entries: () throws(AetherError) -> [DirectoryEntry]) throws(AetherError) -> Listing {
        if let stamp, let kept = listings[ino], kept.stamp == stamp { return kept }
        let l = Listing(stamp: stamp, entries: try entries())
        if stamp != nil {
            if listings.count >= ListingCache.kept { listings.removeAll(keepingCapacity: true) }
            listings[ino] = l
        }
        return l
    }
}
