#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore
import AetherMeta
import Logging
import Dispatch
import Synchronization

/// One store directory: its objects, its metadata database and its sessions' working layers.
///
/// Layout (format version 1): `FORMAT` (the line `aetherfs-store 1`), `objects/`, `meta.db`,
/// `sessions/ID/upper/INO` (files written since they left the chunk store), `sessions/ID.lock`
/// (flocked by the process serving or changing the session; its lease, with where it is mounted, is a
/// row of the metadata).
public final class Repository: Sendable {
    public static let formatVersion = 1
    /// This software's version, as `aetherfs --version` prints it.
    public static let softwareVersion = "0.3.0"
    /// The metadata database's schema this software writes.
    public static let schemaVersion = Catalog.schemaVersion
    public let path: String
    public let objects: ObjectStore
    /// Where the objects live when not in `objects/` (the store's `objects.json`).
    public let objectsConfig: ObjectsConfig?
    /// Where the shared records live when not in `meta.db` (the store's `metadata.json`).
    public let metaConfig: MetaConfig?
    /// This store directory's holder name in sessions' leases (see `SessionLock`).
    public let leaseHost: String
    public let content: ContentStore
    /// Free space kept on the disk of the metadata and working files.
    public let headroom: Headroom
    /// Sessions, snapshot records, branches and the audit log.
    public let metadata: any MetadataStore
    /// The sessions' live nodes (SQLite in `meta.db`).
    public let working: any WorkingLayerStore
    public let logger: Logger
    /// Never-persist results of subtrees already filtered (see `withholding`).
    let withheldCache = Mutex<[WithheldKey: (root: ObjectID, withheld: Int)]>([:])

    /// The store used when neither `--store` nor `AETHERFS_STORE` names one.
    public static var defaultPath: String {
        if let env = getenv("AETHERFS_STORE"), env.pointee != 0 { return String(cString: env) }
        if let xdg = getenv("XDG_DATA_HOME"), xdg.pointee != 0 { return String(cString: xdg) + "/aetherfs" }
        let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
        return home + "/.local/share/aetherfs"
    }

    /// Opens the store at `path`, creating it when `create` is set and nothing is there. Its objects
    /// live in `blobs` and its shared records in `metadata` when given (tests give in-memory ones), else
    /// in `objects/` and `meta.db` of the store; the working layer is always in `meta.db`.
    ///
    /// A store made with `sharedGroup` belongs to that group as well (see `StoreFiles`).
    /// A new store made with `objectsAt` keeps its objects there (`s3://…`, see `BlobBackends`) instead
    /// of in `objects/`: the objects are claimed before anything of the store is made.
    ///
    /// A new store made with `metaAt` (`postgres://…`, see `MetadataBackends`) keeps its shared records
    /// there, and needs `objectsAt`: every host that attaches reaches the same objects. When the
    /// database holds a store already, the new directory *attaches* to it: its objects must be that
    /// store's (`objectsAt` names where they are), and only this host's working layers and cache are
    /// made here.
    public init(path: String, create: Bool = true, blobs: (any BlobStore)? = nil, metadata: (any MetadataStore)? = nil,
                sharedGroup: UInt32? = nil, objectsAt: ObjectsConfig? = nil, metaAt: String? = nil,
                logger: Logger = Logger(label: "aetherfs.core")) throws(AetherError) {
        self.path = path
        self.logger = logger
        let formatFile = path + "/FORMAT"
        try Repository.checkAccess(path)
        StoreFiles.shared = StoreFiles.isShared(path)
        try domain {
            if !FileIO.exists(formatFile) {
                let names = FileIO.entries(of: path).map(\.name)
                if names.contains("meta.db") || names.contains("objects") {
                    throw AetherError.damaged("\(path) holds a store's files but no FORMAT file; refusing to make a new store over them")
                }
                guard create else { throw AetherError.notFound("no store at \(path) (run `aetherfs init`)") }
                if !names.isEmpty {
                    throw AetherError.invalid("\(path) is not empty and holds no store (no FORMAT file); refusing to make a store there")
                }
                var objectsAt = objectsAt
                var metaConfig: MetaConfig?
                var attaching = false
                if let metaAt {
                    guard var objects = objectsAt else {
                        throw AetherError.invalid("--meta needs --objects: every host of a shared store must reach its objects")
                    }
                    let holds = try MetadataBackends.backend(scheme: MetaConfig(url: metaAt, store: "").scheme).claim(metaAt, objects.store)
                    attaching = holds != objects.store
                    objects.store = holds
                    objectsAt = objects
                    metaConfig = MetaConfig(url: metaAt, store: holds)
                }
                if let objectsAt { try BlobBackends.backend(for: objectsAt).prepare(objectsAt, attaching) }
                try FileIO.makeDirectories(path)
                if let gid = sharedGroup {
                    guard chown(path, uid_t.max, gid) == 0 else {
                        throw AetherError.system(errno, "cannot give \(path) to group \(gid): \(String(cString: strerror(errno))) (you must be in the group)")
                    }
                    StoreFiles.shared = true
                }
                // A store is private to its owner (or its group): its objects hold file data in plain text.
                chmod(path, StoreFiles.directoryMode)
                try FileIO.makeDirectories(path + "/sessions")
                try objectsAt?.write(store: path)
                if let metaConfig { try FileIO.atomicWrite(path + "/" + MetaConfig.fileName, Array((JSONText.encode(metaConfig) + "\n").utf8), sync: true) }
                try FileIO.atomicWrite(formatFile, Array("aetherfs-store \(Repository.formatVersion)\n".utf8), sync: true)
            }
            let text = String(decoding: try FileIO.readFile(formatFile), as: UTF8.self)
            let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard parts.count == 2, parts[0] == "aetherfs-store", let v = Int(parts[1]) else {
                throw AetherError.damaged("\(formatFile) does not name a store format")
            }
            guard v <= Repository.formatVersion else {
                throw AetherError.notSupported("store format \(v) is newer than this aetherfs reads (\(Repository.formatVersion))")
            }
        }
        let headroom = Headroom(directory: path)
        self.headroom = headroom
        let catalog = try domain { try Catalog(path: path + "/meta.db") }
        objectsConfig = try domain { try ObjectsConfig.read(store: path) }
        metaConfig = try Repository.readMetaConfig(store: path)
        // Shared metadata also holds a packed store's index (every host finds every pack).
        var shared: SQLMetadata?
        if let config = metaConfig, metadata == nil {
            guard config.store == objectsConfig?.store else {
                throw .damaged("\(path)/\(MetaConfig.fileName) names store \(config.store), its objects.json \(objectsConfig?.store ?? "nothing")")
            }
            shared = try domain { try MetadataBackends.backend(scheme: config.scheme).open(config) }
        }
        let index: any PackIndex = shared ?? catalog
        if let blobs {
            objects = ObjectStore(blobs: blobs)
        } else if let config = objectsConfig {
            objects = ObjectStore(blobs: try domain { try BlobBackends.backend(for: config).open(config, index, path + "/cache", headroom) })
        } else {
            objects = ObjectStore(blobs: try domain { try LocalBlobStore(directory: path + "/objects", headroom: headroom) })
        }
        content = ContentStore(objects: objects)
        working = catalog
        self.metadata = metadata ?? shared ?? catalog
        // Flocks tell a dead holder only within one store directory: with shared metadata each
        // directory is a host of its own.
        leaseHost = metaConfig == nil ? SessionLock.thisHost : SessionLock.thisHost + ":" + path
        try domain { try FileIO.makeDirectories(path + "/sessions") }
    }

    /// The store's `metadata.json`, or nil when its shared records are in `meta.db`.
    static func readMetaConfig(store path: String) throws(AetherError) -> MetaConfig? {
        let file = path + "/" + MetaConfig.fileName
        guard FileIO.exists(file) else { return nil }
        let text = String(decoding: try domain { try FileIO.readFile(file) }, as: UTF8.self)
        guard let config = JSONText.decoded(MetaConfig.self, text) else { throw .damaged("\(file) does not say where the store's metadata is") }
        return config
    }

    /// A new store's id: 32 random hex digits.
    public static func newStoreID() -> String {
        var r = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(UInt32.random(in: 0...UInt32.max, using: &r), radix: 16) }
            .map { String(repeating: "0", count: 8 - $0.count) + $0 }.joined()
    }

    /// Someone who may not read and write a store is told so in one line ("permission denied"), not
    /// with what SQLite or the object files say when their opens fail.
    static func checkAccess(_ path: String) throws(AetherError) {
        var st = stat()
        var probe = path
        // The store, or the nearest existing directory it would be made in.
        while stat(probe, &st) != 0 {
            if errno == EACCES { break }
            guard errno == ENOENT, let slash = probe.lastIndex(of: "/"), slash != probe.startIndex else { return }
            probe = String(probe[..<slash])
        }
        let denied = { (what: String) -> AetherError in
            .accessDenied("\(what) (owned by uid \(st.st_uid), mode \(String(st.st_mode & 0o7777, radix: 8))); the store belongs to its owner")
        }
        if stat(probe, &st) != 0 { throw .accessDenied("cannot reach the store at \(path)") }
        if access(probe, R_OK | W_OK | X_OK) != 0 && errno == EACCES {
            throw denied(probe == path ? "the store at \(path) is not yours to use" : "cannot make a store in \(probe)")
        }
        guard probe == path else { return }
        for file in ["FORMAT", "meta.db"] where stat(path + "/" + file, &st) == 0 {
            if access(path + "/" + file, R_OK | W_OK) != 0 && errno == EACCES { throw denied("\(path)/\(file) is not yours to use") }
        }
    }

    /// Runs `body` in one transaction of the metadata and the working layer (one, when both are the
    /// same database); `durable` returns once it is on disk.
    ///
    /// With two databases the shared one commits first, inside the working layer's transaction: if it
    /// fails, neither changed; if the working layer's commit fails after it, the rows it would have
    /// dropped stay and describe changes the new base holds already.
    public func transaction<T>(durable: Bool = false, _ body: () throws -> T) throws -> T {
        if metadata === working { return try metadata.transaction(durable: durable, body) }
        return try working.transaction(durable: durable) { try metadata.transaction(durable: durable, body) }
    }

    func sessionDirectory(_ id: Int64) -> String { "\(path)/sessions/\(id)" }

    /// Fails with `.noSpace` when writing `bytes` of file data would eat into the store's headroom.
    public func ensureRoom(for bytes: Int) throws(AetherError) {
        try domain { try headroom.ensure(for: bytes) }
    }

    // MARK: names

    /// Session, checkpoint and branch names: 1–100 of letters, digits, `.`, `_`, `-`, not starting with `.` or `-`.
    public static func validateName(_ name: String, what: String) throws(AetherError) {
        let ok = !name.isEmpty && name.utf8.count <= 100 && name.utf8.allSatisfy {
            ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 46 || $0 == 95 || $0 == 45
        } && !name.hasPrefix(".") && !name.hasPrefix("-")
        if !ok { throw .invalid("\(what) name \"\(name)\" must be 1-100 letters, digits, '.', '_' or '-', not starting with '.' or '-'") }
    }

    /// Splits `NAME@REF` at its first `@` (a fork request `NAME@CHECKPOINT`, a snapshot reference
    /// `SESSION@CHECKPOINT`): `at` is nil without an `@`; nothing on either side of it is `.invalid`.
    public static func splitAt(_ text: String, what: String) throws(AetherError) -> (name: String, at: String?) {
        guard let i = text.firstIndex(of: "@") else { return (text, nil) }
        let name = String(text[..<i]), at = String(text[text.index(after: i)...])
        guard !name.isEmpty, !at.isEmpty else {
            throw .invalid("\(what) \"\(text)\" must be NAME or NAME@CHECKPOINT, with a name on each side of the '@'")
        }
        return (name, at)
    }

    // MARK: sessions

    public func session(named name: String) throws(AetherError) -> SessionRecord {
        guard let s = try domain({ try metadata.session(named: name) }) else { throw .notFound("session \(name)") }
        return s
    }

    public func sessions() throws(AetherError) -> [SessionRecord] { try domain { try metadata.sessions() } }

    /// Creates a session over `from` (a snapshot reference) or over an empty tree.
    public func createSession(name: String, from: String? = nil, owner: UInt32) throws(AetherError) -> SessionRecord {
        try writing { () throws(AetherError) in
        try Repository.validateName(name, what: "session")
        if try domain({ try metadata.session(named: name) }) != nil { throw .exists("session \(name)") }
        var base: SnapshotRecord?
        let root: ObjectID
        if let from {
            let snap = try resolveSnapshot(from, session: nil)
            base = snap
            root = snap.root
        } else {
            let now = nanosecondsNow()
            root = try domain { try content.putTree(Tree(mode: 0o755, uid: owner, gid: 0, mtime: now, entries: [])) }
            try domain { try objects.sync() }
        }
        var record = SessionRecord(name: name, baseRoot: root, baseSnapshot: base?.id, parentSession: base?.session,
                                   owner: owner, baseCommit: base?.kind == .commit ? base?.id : nil)
        try domain {
            try transaction(durable: true) {
                record.id = try metadata.insertSession(record)
                try metadata.audit(uid: owner, action: "session-create", session: name, detail: from ?? "")
            }
        }
        return record
        }
    }

    /// Creates a session over a tree already in the store (what `aetherfs import --session` built),
    /// with that tree as its first checkpoint (`import`), its base and head: one durable transaction.
    public func createSession(name: String, tree root: ObjectID, message: String, meta: [String: String],
                              owner: UInt32) throws(AetherError) -> (SessionRecord, SnapshotRecord) {
        try Repository.validateName(name, what: "session")
        let message = try Workspace.validateRecord(message: message, meta: meta, what: "an import")
        if try domain({ try metadata.session(named: name) }) != nil { throw .exists("session \(name)") }
        guard try domain({ try objects.contains(root) }) else { throw .notFound("tree \(root.hex) in the store") }
        var record = SessionRecord(name: name, baseRoot: root, baseSnapshot: nil, parentSession: nil, owner: owner)
        var snapshot = SnapshotRecord(sid: Workspace.newSnapshotID(), kind: .checkpoint, session: 0, name: "import", root: root,
                                      parent: nil, time: secondsNow(), author: owner, message: message, meta: meta,
                                      filesChanged: 0, bytesAdded: 0)
        try domain {
            try transaction(durable: true) {
                record.id = try metadata.insertSession(record)
                snapshot.session = record.id
                snapshot.id = try metadata.insertSnapshot(snapshot)
                try metadata.updateSessionBase(record.id, baseRoot: root, baseSnapshot: snapshot.id, head: snapshot.id)
                try metadata.audit(uid: owner, action: "import", session: name, detail: "\(snapshot.name) \(snapshot.sid) \(root.hex)")
            }
        }
        record.baseSnapshot = snapshot.id
        record.head = snapshot.id
        return (record, snapshot)
    }

    /// Retires a session: read-only from now on (its tree and checkpoints stay readable through views,
    /// export and forks; it is not mounted or changed). Refused while a process serves it.
    public func retire(name: String, uid: UInt32) throws(AetherError) {
        try audited(uid: uid, action: "retire", session: name, detail: "") { () throws(AetherError) in
            let s = try session(named: name)
            guard uid == 0 || uid == s.owner else { throw .accessDenied("only the owner of session \(name) (uid \(s.owner)) and root may retire it") }
            guard !s.isRetired else { throw .invalid("session \(name) is retired already") }
            let lock = try SessionLock(repository: self, session: s)
            defer { lock.release() }
            try domain {
                try transaction(durable: true) {
                    try metadata.setSessionState(s.id, SessionRecord.retired)
                    try metadata.audit(uid: uid, action: "retire", session: name, detail: "")
                }
            }
        }
    }

    /// Deletes a session, its working layer and its checkpoints' records (its commits stay); refused
    /// while a process serves it, and while another session's base is one of its checkpoints or one of
    /// its proposals is open, unless `force` (then its open proposals are withdrawn). Its owner and
    /// root only; audited, refusals too.
    public func deleteSession(name: String, uid: UInt32, force: Bool = false) throws(AetherError) {
        try audited(uid: uid, action: "session-delete", session: name, detail: force ? "--force" : "") { () throws(AetherError) in
            let s = try session(named: name)
            guard uid == 0 || uid == s.owner else { throw .accessDenied("only the owner of session \(name) (uid \(s.owner)) and root may delete it") }
            let lock = try SessionLock(repository: self, session: s)
            defer { lock.release() }
            let needs = try dependents(of: s)
            if !force, let refusal = needs.refusal { throw .busy(refusal) }
            let (checkpoints, dependents, children, open) = (needs.checkpoints, needs.sessions, needs.children, needs.proposals)
            let ids = Set(checkpoints.map(\.id))
            try domain {
                try transaction(durable: true) {
                    try working.clearWorkingLayer(session: s.id, base: nil)
                    for c in checkpoints { try metadata.deleteSnapshot(c.id) }
                    for o in dependents {
                        try metadata.updateSessionBase(o.id, baseRoot: o.baseRoot, baseSnapshot: o.baseSnapshot.flatMap { ids.contains($0) ? nil : $0 },
                                                       head: o.head.flatMap { ids.contains($0) ? nil : $0 })
                    }
                    for c in children { try metadata.setSnapshotParent(c.id, nil) }
                    for p in open { _ = try metadata.setProposalState(p.id, from: p.state, to: .withdrawn) }
                    try metadata.resetWriters(session: s.id)
                    try metadata.deleteSession(s.id)
                    let detail = force ? "--force: \(checkpoints.count) checkpoint(s); bases of \(dependents.map(\.name)); withdrew \(open.map(\.pid))"
                                       : "\(checkpoints.count) checkpoint(s)"
                    try metadata.audit(uid: uid, action: "session-delete", session: name, detail: detail)
                }
            }
            removeTree(sessionDirectory(s.id))
        }
    }

    /// What needs a session: sessions that build on one of its checkpoints (as their base or head, or
    /// as the parent of one of their own snapshots) and its open proposals; `refusal` says why it
    /// cannot be deleted without `--force`, nil when nothing needs it.
    func dependents(of s: SessionRecord) throws(AetherError) -> SessionDependents {
        let checkpoints = try domain { try metadata.checkpoints(session: s.id) }
        let ids = Set(checkpoints.map(\.id))
        let others = try sessions().filter { $0.id != s.id }
        var children: [SnapshotRecord] = []
        for o in others { children += try self.checkpoints(of: o).filter { $0.parent.map(ids.contains) == true } }
        let dependents = others.filter { o in
            o.baseSnapshot.map(ids.contains) == true || o.head.map(ids.contains) == true || children.contains { $0.session == o.id }
        }
        let open = try domain { try metadata.proposals() }.filter { $0.session == s.id && ($0.state == .open || $0.state == .approved) }
        var refusal: String?
        if !dependents.isEmpty {
            refusal = "session \(dependents.map(\.name).joined(separator: ", ")) builds on a checkpoint of \(s.name); delete it first, or --force"
        } else if !open.isEmpty {
            refusal = "proposal \(open.map(\.pid).joined(separator: ", ")) of \(s.name) is \(open[0].state.rawValue); withdraw it first, or --force"
        }
        return SessionDependents(checkpoints: checkpoints, sessions: dependents, children: children, proposals: open, refusal: refusal)
    }

    /// The lease of the process that serves or changes the session, if that process lives: on this
    /// host while it holds the session's flock, on another until the lease lapses.
    public func holder(of s: SessionRecord) -> LeaseRecord? {
        guard let lease = try? metadata.lease(session: s.id) else { return nil }
        if lease.host == leaseHost { return SessionLock.isHeld(self, s) ? lease : nil }
        return lease.expires > secondsNow() ? lease : nil
    }

    /// Where the session is mounted, when a live process of this store directory serves it (a mount
    /// on another host is not reachable from here: its holder's lease keeps the session busy).
    public func mountpoint(of s: SessionRecord) -> String? {
        guard let h = holder(of: s), h.host == leaseHost else { return nil }
        return h.mountpoint
    }

    // MARK: snapshots

    /// Finds a snapshot: a checkpoint name (within `session`, when given), `SESSION@CHECKPOINT`, a branch
    /// name (its head commit), or a unique prefix (4+ hex digits) of a snapshot id.
    public func resolveSnapshot(_ ref: String, session: SessionRecord?) throws(AetherError) -> SnapshotRecord {
        let ref = ref.trimmingWhitespace()
        guard !ref.isEmpty else { throw .invalid("empty snapshot reference") }
        if case let (name, at?) = try Repository.splitAt(ref, what: "snapshot reference") {
            // SESSION@CHECKPOINT
            guard !at.contains("@") else { throw .invalid("snapshot reference \"\(ref)\" has more than one '@'") }
            return try resolveSnapshot(at, session: try self.session(named: name))
        }
        if let session, let cp = try domain({ try metadata.checkpoints(session: session.id) }).last(where: { $0.name == ref }) {
            return cp
        }
        if let head = try domain({ try metadata.branch(ref) }), let commit = try domain({ try metadata.snapshot(id: head) }) {
            return commit
        }
        if ref.count >= 4, ref.allSatisfy({ $0.isHexDigit }) {
            let found = try domain { try metadata.snapshots(sidPrefix: ref.lowercased()) }
            if found.count == 1 { return found[0] }
            if found.count > 1 { throw .invalid("snapshot id \(ref) is ambiguous (\(found.count) match)") }
        }
        throw .notFound("checkpoint or snapshot \"\(ref)\"\(session.map { " in session \($0.name)" } ?? "")")
    }

    public func tree(_ id: ObjectID) throws(AetherError) -> Tree { try domain { try content.tree(id) } }

    public func checkpoints(of s: SessionRecord) throws(AetherError) -> [SnapshotRecord] {
        try domain { try metadata.checkpoints(session: s.id) }
    }
}

/// An exclusive claim on a session by the process that serves or changes it: a lease in the metadata,
/// which every host, retention and garbage collection see, renewed while held; and on this host a flock
/// on `sessions/ID.lock`, which the kernel lets go when the process dies, so that a dead holder's lease
/// is taken over at once instead of when it lapses.
public final class SessionLock: @unchecked Sendable {
    /// Seconds a lease stands without renewal; it is renewed every third of that.
    public static let term: Double = 30
    /// This host: its machine id, else its name (in write leases; a session's lease names the store
    /// directory too when the metadata is shared, `Repository.leaseHost`).
    public static let thisHost: String = {
        if let id = try? FileIO.readFile("/etc/machine-id"), case let text = String(decoding: id, as: UTF8.self).trimmingWhitespace(), !text.isEmpty {
            return text
        }
        var name = [CChar](repeating: 0, count: 256)
        return gethostname(&name, name.count) == 0 ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "localhost"
    }()

    private let metadata: any MetadataStore
    private let lock = Lock()
    /// Guarded by `lock`; -1 and nil once released.
    private var fd: Int32
    private var lease: LeaseRecord?
    /// Made only once the lease is taken (libdispatch traps on releasing a timer never resumed).
    private var renewal: (any DispatchSourceTimer)?

    /// Whether letting go marks the session used (not for garbage collection's sweep).
    private let marksUse: Bool

    public init(repository: Repository, session: SessionRecord, marksUse: Bool = true) throws(AetherError) {
        metadata = repository.metadata
        self.marksUse = marksUse
        let path = repository.sessionDirectory(session.id) + ".lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, StoreFiles.fileMode)
        if fd < 0 { throw .system(errno, "open \(path): \(String(cString: strerror(errno)))") }
        StoreFiles.settle(fd: fd)
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            throw .busy("session \(session.name) is in use by another process (mounted?)")
        }
        let now = secondsNow()
        let host = repository.leaseHost
        let mine = LeaseRecord(session: session.id, host: host, pid: getpid(), mountpoint: nil,
                               acquired: now, expires: now + SessionLock.term)
        let standing: LeaseRecord?
        do {
            // A lease of this host whose holder let go of the flock is a dead process's.
            standing = try metadata.takeLease(mine) { $0.host == host || $0.expires < secondsNow() }
        } catch {
            close(fd)
            throw AetherError.from(error)
        }
        if let standing {
            close(fd)
            throw .busy("session \(session.name) is in use by pid \(standing.pid) on host \(standing.host) (its lease stands for \(Int(standing.expires - now)) s more)")
        }
        self.fd = fd
        lease = mine
        let every = SessionLock.term / 3
        let renewal = DispatchSource.makeTimerSource(queue: .global())
        renewal.schedule(deadline: .now() + every, repeating: every)
        renewal.setEventHandler { [weak self] in self?.renew(mountpoint: nil) }
        renewal.resume()
        self.renewal = renewal
    }

    /// Records where the session is now mounted (once the mount is up).
    public func mounted(at mountpoint: String) { renew(mountpoint: mountpoint) }

    private func renew(mountpoint: String?) {
        lock.withLock {
            guard var l = lease else { return }
            l.expires = secondsNow() + SessionLock.term
            if let mountpoint { l.mountpoint = mountpoint }
            // A failed renewal is tried again at the next tick; the flock still holds this host.
            if (try? metadata.renewLease(l)) == true { lease = l }
        }
    }

    public func release() {
        lock.withLock {
            renewal?.cancel()
            renewal = nil
            // The session was used until now (idle retention counts from here).
            if let l = lease {
                if marksUse { try? metadata.touchSession(l.session) }
                try? metadata.releaseLease(l)
            }
            lease = nil
            if fd >= 0 { close(fd); fd = -1 }
        }
    }

    /// Whether a live process of this host holds the session's flock.
    static func isHeld(_ repository: Repository, _ session: SessionRecord) -> Bool {
        let fd = open(repository.sessionDirectory(session.id) + ".lock", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return flock(fd, LOCK_EX | LOCK_NB) != 0
    }

    deinit { release() }
}

/// What `Repository.dependents(of:)` found.
struct SessionDependents {
    var checkpoints: [SnapshotRecord]
    var sessions: [SessionRecord]
    var children: [SnapshotRecord]
    var proposals: [ProposalRecord]
    var refusal: String?
}

/// Removes a directory tree (the session's upper files); errors are ignored.
func removeTree(_ path: String) {
    guard FileIO.exists(path) else { return }
    for e in FileIO.entries(of: path) {
        if e.isDirectory { removeTree(path + "/" + e.name) } else { unlink(path + "/" + e.name) }
    }
    if rmdir(path) != 0 { unlink(path) }
}
