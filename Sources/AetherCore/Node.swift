import AetherModel
import Synchronization
import AetherStore

/// What `stat` reports for a node.
public struct Attributes: Sendable, Equatable {
    public var ino: UInt64
    public var kind: NodeKind
    /// Permission bits, setuid, setgid and sticky (no type bits).
    public var mode: UInt32
    public var nlink: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var atime: Int64
    public var mtime: Int64
    public var ctime: Int64
    public var rdev: UInt64
    /// 512-byte blocks in use (holes of sparse files excluded where known).
    public var blocks: UInt64
    /// Changes when a restore replaces the node's content behind the kernel: the kernel then drops the
    /// inode it cached for this number (its size and times, which it trusts under writeback caching).
    public var generation: UInt64 = 1

    public init(ino: UInt64, kind: NodeKind, mode: UInt32, nlink: UInt32, uid: UInt32, gid: UInt32, size: UInt64,
                atime: Int64, mtime: Int64, ctime: Int64, rdev: UInt64) {
        self.ino = ino; self.kind = kind; self.mode = mode; self.nlink = nlink; self.uid = uid; self.gid = gid
        self.size = size; self.atime = atime; self.mtime = mtime; self.ctime = ctime; self.rdev = rdev
        self.blocks = (size + 511) / 512
    }

    /// Mode with the file type bits.
    public var fullMode: UInt32 { kind.typeBits | mode }
}

/// One file, directory, symlink or special file of a workspace, in memory.
final class Node {
    var rec: NodeRecord
    let kind: NodeKind
    var xattrs: XattrMap
    /// A directory's names, once loaded from its tree or its dentry rows; nil until needed.
    var entries: [[UInt8]: UInt64]? {
        didSet { listingStamp = Node.nextStamp() }  // no `oldValue`: changes stay in place (SE-0268)
    }
    /// Changes whenever `entries` does; unique across nodes, so a listing kept under this stamp is
    /// never taken for another directory's.
    private(set) var listingStamp = Node.nextStamp()
    private static let stamps = Atomic<UInt64>(0)
    private static func nextStamp() -> UInt64 { stamps.wrappingAdd(1, ordering: .relaxed).newValue }
    /// A directory's names added, removed, replaced or whose node changed since the tree in
    /// `rec.content` was written; nil when not known (the next checkpoint writes the whole tree again).
    var changedNames: Set<[UInt8]>? = []
    /// An overlay directory's dentry rows read at start, applied over its tree when it is loaded
    /// (inode 0: the name is gone).
    var overrides: [[UInt8]: UInt64] = [:]
    /// The names of this node: the directory holding each and the name there.
    var links: [Link] = []
    /// Whether the node has a row in the catalog.
    var persisted = false
    /// Whether the catalog holds every extended attribute of the node as a row of its own (then one set
    /// or removal writes one row); until then the next save writes them all.
    var xattrRowsSaved = false
    /// Names of extended attributes set or removed since the node was last saved.
    var changedXattrs: Set<String> = []
    /// Whether every name in `links` has its dentry row and its directory is materialized (then a
    /// change of the node writes its own row only, however many names it has).
    var linksRecorded = false
    /// Open file handles.
    var opens = 0
    /// The upper file's descriptor while the node is open.
    var fd: Int32 = -1
    /// Size or times changed by writes and not yet saved.
    var metaPending = false
    /// The inode generation the kernel sees (in memory: a new mount starts a new kernel cache).
    var generation: UInt64 = 1

    init(rec: NodeRecord, kind: NodeKind) {
        self.rec = rec
        self.kind = kind
        self.xattrs = decodeXattrs(rec.xattrs)
        self.rec.xattrs = []
    }

    var attributes: Attributes {
        var a = Attributes(ino: rec.ino, kind: kind, mode: rec.mode, nlink: rec.nlink, uid: rec.uid, gid: rec.gid,
                           size: rec.size, atime: rec.atime, mtime: rec.mtime, ctime: rec.ctime, rdev: rec.rdev)
        a.generation = generation
        return a
    }

    /// Sets (or with nil removes) an extended attribute; the next save writes its row.
    func setXattr(_ name: String, _ value: [UInt8]?) {
        xattrs[name] = value
        if xattrRowsSaved { changedXattrs.insert(name) }
    }

    var contentID: ObjectID? { rec.content }

    /// A write or truncate clears setuid, and setgid when the group may execute (the mount tells the
    /// kernel that the file system does this: FUSE_HANDLE_KILLPRIV_V2).
    /// Returns whether the mode changed.
    @discardableResult
    func dropPrivilegeBits() -> Bool {
        let before = rec.mode
        rec.mode &= ~0o4000
        if rec.mode & 0o010 != 0 { rec.mode &= ~0o2000 }
        return rec.mode != before
    }
}

/// A name of a node: the directory holding it and the name.
struct Link: Equatable {
    var parent: UInt64
    var name: [UInt8]
}

/// A change the kernel must forget about after a restore.
public enum Invalidation: Sendable, Equatable {
    /// The name in the directory may now point elsewhere or nowhere.
    case entry(parent: UInt64, name: [UInt8])
    /// The node's attributes and cached pages are stale.
    case inode(UInt64)
    /// Only the node's attributes are stale (a write cleared setuid/setgid); pages stay.
    case attributes(UInt64)
    /// An open file's content changed: under writeback caching the kernel keeps its own size and
    /// modification time for it, so they are set again through the mount at `path` (relative to the
    /// root); the VFS answers those requests without changing anything.
    case resize(ino: UInt64, path: [UInt8], size: UInt64, mtime: Int64)
}

/// One entry of a directory listing.
public struct DirectoryEntry: Sendable {
    public var name: [UInt8]
    public var ino: UInt64
    public var kind: NodeKind
    public init(name: [UInt8], ino: UInt64, kind: NodeKind) { self.name = name; self.ino = ino; self.kind = kind }
}
