/// The records of the shared metadata (sessions, snapshots, branches) and of a session's working layer
/// (nodes), as every metadata backend stores and returns them.

/// What a snapshot is. The raw value is stored; never rename.
public enum SnapshotKind: String, Sendable, Codable, CaseIterable {
    /// A session's own saved state, named within the session.
    case checkpoint
    /// A durable result on a branch.
    case commit
}

public struct SessionRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    /// The tree the session's working layer lies over.
    public var baseRoot: ObjectID
    public var baseSnapshot: Int64?
    public var parentSession: Int64?
    public var owner: UInt32
    public var state: String
    public var created: Double
    public var lastUsed: Double
    public var nextIno: UInt64
    public var head: Int64?
    /// The commit this session's work builds on; a commit to that commit's branch must fast-forward from it.
    public var baseCommit: Int64?

    /// `active`; `won` (promoted over its sibling forks, still active); `retired` (read-only: its tree
    /// and checkpoints stay readable, it is not mounted or changed).
    public static let retired = "retired", won = "won"
    public var isRetired: Bool { state == SessionRecord.retired }

    public init(id: Int64 = 0, name: String, baseRoot: ObjectID, baseSnapshot: Int64?, parentSession: Int64?,
                owner: UInt32, state: String = "active", created: Double = secondsNow(), lastUsed: Double = secondsNow(),
                nextIno: UInt64 = 2, head: Int64? = nil, baseCommit: Int64? = nil) {
        self.baseCommit = baseCommit
        self.id = id; self.name = name; self.baseRoot = baseRoot; self.baseSnapshot = baseSnapshot
        self.parentSession = parentSession; self.owner = owner; self.state = state; self.created = created
        self.lastUsed = lastUsed; self.nextIno = nextIno; self.head = head
    }
}

public struct SnapshotRecord: Sendable, Equatable {
    public var id: Int64
    /// The display id: 16 hex digits, unique in the store.
    public var sid: String
    public var kind: SnapshotKind
    public var session: Int64
    public var name: String
    public var root: ObjectID
    public var parent: Int64?
    public var time: Double
    public var author: UInt32
    public var message: String
    /// What its author attached: string keys and values.
    public var meta: [String: String]
    public var filesChanged: Int64
    public var bytesAdded: Int64
    /// The branch a commit was made on (nil for a checkpoint).
    public var branch: String?

    public init(id: Int64 = 0, sid: String, kind: SnapshotKind, session: Int64, name: String, root: ObjectID, parent: Int64?,
                time: Double, author: UInt32, message: String, meta: [String: String], filesChanged: Int64, bytesAdded: Int64,
                branch: String? = nil) {
        self.id = id; self.sid = sid; self.kind = kind; self.session = session; self.name = name; self.root = root
        self.parent = parent; self.time = time; self.author = author; self.message = message; self.meta = meta
        self.filesChanged = filesChanged; self.bytesAdded = bytesAdded; self.branch = branch
    }
}

/// A claim on a session by the process that serves or changes it, visible to every host and to
/// retention and garbage collection: who holds it, where it is mounted, until when it stands.
public struct LeaseRecord: Sendable, Equatable {
    public var session: Int64
    /// The host holding it (its machine id, or its name).
    public var host: String
    public var pid: Int32
    /// Where the session is mounted; nil while the mount is not up yet, or for work without a mount.
    public var mountpoint: String?
    public var acquired: Double
    /// When it lapses unless renewed (seconds since the epoch).
    public var expires: Double

    public init(session: Int64, host: String, pid: Int32, mountpoint: String?, acquired: Double, expires: Double) {
        self.session = session; self.host = host; self.pid = pid; self.mountpoint = mountpoint
        self.acquired = acquired; self.expires = expires
    }

    /// Whether `other` is the same holder.
    public func sameHolder(_ other: LeaseRecord) -> Bool { host == other.host && pid == other.pid }
}

/// A write in flight: a process writing objects it has not yet recorded (a checkpoint, an import).
/// Garbage collection deletes no object that such a writer may still reference.
public struct WriteLease: Sendable, Equatable {
    public var id: Int64
    public var host: String
    public var pid: Int32
    public var started: Double
    public init(id: Int64 = 0, host: String, pid: Int32, started: Double) { self.id = id; self.host = host; self.pid = pid; self.started = started }
}

/// A branch: a name and the commit it points at.
public struct BranchRecord: Sendable, Equatable {
    public var name: String
    public var head: Int64
    public init(name: String, head: Int64) { self.name = name; self.head = head }
}

/// One node of a working layer as stored. Times are nanoseconds since the epoch.
public struct NodeRecord: Sendable, Equatable {
    public var ino: UInt64
    /// 1 file, 2 directory, 3 symlink, 4 FIFO, 5 character device, 6 block device, 7 socket.
    public var kind: UInt8
    /// Permission bits with setuid, setgid and sticky (no file type bits).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var atime: Int64
    public var mtime: Int64
    public var ctime: Int64
    public var nlink: UInt32
    public var rdev: UInt64
    public var target: [UInt8]
    /// The object holding the content as of the base or last checkpoint: a manifest or a tree.
    public var content: ObjectID?
    /// The file's bytes live in the session's upper file, not (only) in `content`.
    public var upper: Bool
    /// The directory's names are in dentry rows: all of them, or (`overlay`) those that differ from its tree.
    public var materialized: Bool
    /// A materialized directory's dentry rows override its tree's names (inode 0 hides one).
    public var overlay: Bool
    /// Changed since the last checkpoint.
    public var dirty: Bool
    /// Ties hard links of a base snapshot together (0 for none).
    public var linkGroup: UInt64
    /// The encoded extended attributes.
    public var xattrs: [UInt8]

    public init(ino: UInt64, kind: UInt8, mode: UInt32, uid: UInt32, gid: UInt32, size: UInt64, atime: Int64,
                mtime: Int64, ctime: Int64, nlink: UInt32, rdev: UInt64 = 0, target: [UInt8] = [], content: ObjectID? = nil,
                upper: Bool = false, materialized: Bool = false, overlay: Bool = false, dirty: Bool = false, linkGroup: UInt64 = 0, xattrs: [UInt8] = []) {
        self.ino = ino; self.kind = kind; self.mode = mode; self.uid = uid; self.gid = gid; self.size = size
        self.atime = atime; self.mtime = mtime; self.ctime = ctime; self.nlink = nlink; self.rdev = rdev
        self.target = target; self.content = content; self.upper = upper; self.materialized = materialized; self.overlay = overlay
        self.dirty = dirty; self.linkGroup = linkGroup; self.xattrs = xattrs
    }
}

/// What a proposal is now. The raw value is stored; never rename.
public enum ProposalState: String, Sendable, Codable, CaseIterable {
    case open, approved, rejected, committed, withdrawn
}

/// Work put forward for review: a session's state frozen (its checkpoint `snapshot`, tree `root`), the
/// branch it is meant for and the commit it builds on. Later edits in the session do not change it.
public struct ProposalRecord: Sendable, Equatable {
    public var id: Int64
    /// The display id: 16 hex digits, unique in the store.
    public var pid: String
    public var session: Int64
    public var author: UInt32
    public var branch: String
    public var root: ObjectID
    public var snapshot: Int64
    public var baseCommit: Int64?
    public var title: String
    public var message: String
    public var meta: [String: String]
    public var state: ProposalState
    public var created: Double
    /// The uids that wrote to the session since its base: none of them reviews it independently.
    public var writers: [UInt32]

    public init(id: Int64 = 0, pid: String, session: Int64, author: UInt32, branch: String, root: ObjectID, snapshot: Int64,
                baseCommit: Int64?, title: String, message: String, meta: [String: String], state: ProposalState = .open,
                created: Double = secondsNow(), writers: [UInt32] = []) {
        self.id = id; self.pid = pid; self.session = session; self.author = author; self.branch = branch; self.root = root
        self.snapshot = snapshot; self.baseCommit = baseCommit; self.title = title; self.message = message; self.meta = meta
        self.state = state; self.created = created; self.writers = writers
    }
}

/// A reviewer's verdict on a proposal, bound to the root the reviewer saw.
public struct ReviewRecord: Sendable, Equatable {
    public enum Verdict: String, Sendable, Codable { case approve, reject }
    public var id: Int64
    public var proposal: Int64
    public var reviewer: UInt32
    public var time: Double
    public var verdict: Verdict
    public var comment: String
    public var root: ObjectID
    /// The reviewer's signature: a DSSE envelope over an in-toto statement of the verdict on the root
    /// (empty when the reviewer had no key).
    public var envelope: String

    public init(id: Int64 = 0, proposal: Int64, reviewer: UInt32, time: Double = secondsNow(), verdict: Verdict, comment: String, root: ObjectID,
                envelope: String = "") {
        self.id = id; self.proposal = proposal; self.reviewer = reviewer; self.time = time; self.verdict = verdict
        self.comment = comment; self.root = root; self.envelope = envelope
    }
}

/// A bearer token of the service surface (`aetherfs serve`): who it acts as and what it may do. Only
/// the SHA-256 of its secret is stored.
public struct TokenRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var scope: TokenScope
    /// The uid it acts as: reviews, commits and audit entries are this uid's.
    public var uid: UInt32
    /// Hex SHA-256 of the secret.
    public var hash: String
    public var created: Double
    /// When it was revoked; a revoked token lets nobody in.
    public var revoked: Double?
    public init(id: Int64 = 0, name: String, scope: TokenScope, uid: UInt32, hash: String, created: Double = secondsNow(), revoked: Double? = nil) {
        self.id = id; self.name = name; self.scope = scope; self.uid = uid; self.hash = hash; self.created = created; self.revoked = revoked
    }
}

/// What a token may do: `read` (every GET), `write` (also change sessions: checkpoints, imports,
/// commits, proposals), `review` (also reviews), `admin` (everything, tokens too).
public enum TokenScope: String, Sendable, Codable, CaseIterable {
    case read, write, review, admin

    /// Whether a token of this scope may do what `needed` allows.
    public func allows(_ needed: TokenScope) -> Bool {
        switch (self, needed) {
        case (.admin, _), (_, .read): true
        case (.write, .write), (.review, .review): true
        case (.review, .write): true
        default: false
        }
    }
}
