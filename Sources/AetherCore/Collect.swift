#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

/// What a garbage collection did (or, dry, would do).
public struct CollectReport: Codable, Sendable {
    /// Stored objects reachable from a root (give or take the few unreachable ones the mark's filter
    /// keeps for a later run).
    public var reachable: Int
    /// Unreachable objects moved aside now, and their stored bytes.
    public var condemned: Int
    public var condemnedBytes: Int64
    /// Condemned objects removed for good, and the bytes freed.
    public var deleted: Int
    public var deletedBytes: Int64
    /// Condemned objects found reachable again and put back.
    public var resurrected: Int
    /// Files of sessions' working layers nothing needs (left by a crash, or of sessions that are
    /// gone), removed (dry: found), and the bytes they took on disk.
    public var sessionFiles = 0
    public var sessionFileBytes: Int64 = 0
    /// Unreachable objects kept: younger than the window, or newer than a write in flight.
    public var keptYoung: Int
    public var keptInFlight: Int
    public var dryRun: Bool
    /// Packs of a packed store (objects on S3) deleted and rewritten, and the bytes of object storage
    /// that freed.
    public var packsDeleted = 0, packsRewritten = 0
    public var packBytesFreed: Int64 = 0

    enum CodingKeys: String, CodingKey {
        case reachable, condemned, condemnedBytes = "condemned_bytes", deleted, deletedBytes = "deleted_bytes", resurrected
        case sessionFiles = "session_files", sessionFileBytes = "session_file_bytes"
        case keptYoung = "kept_young", keptInFlight = "kept_in_flight", dryRun = "dry_run"
        case packsDeleted = "packs_deleted", packsRewritten = "packs_rewritten", packBytesFreed = "pack_bytes_freed"
    }
}

extension Repository {
    /// Runs `body` as a write in flight: garbage collection deletes nothing it may reference until
    /// it ends (after `body`'s record is committed, or it failed).
    public func writing<T>(_ body: () throws(AetherError) -> T) throws(AetherError) -> T {
        let id = try domain { try metadata.beginWrite(WriteLease(host: SessionLock.thisHost, pid: getpid(), started: secondsNow())) }
        defer { try? metadata.endWrite(id) }
        return try body()
    }

    /// The oldest start of a write in flight; leases of dead processes on this host are dropped.
    func oldestWrite() throws -> Double? {
        var oldest: Double?
        for w in try metadata.writes() {
            if w.host == SessionLock.thisHost && kill(w.pid, 0) != 0 && errno == ESRCH {
                try metadata.endWrite(w.id)
                continue
            }
            oldest = min(oldest ?? w.started, w.started)
        }
        return oldest
    }

    /// Every object a root reaches: snapshots (checkpoints and commits), sessions' bases, their working
    /// layers' trees and manifests, proposals. `objects` (how many the store holds) sizes the mark.
    func reachableObjects(objects count: Int) throws -> ReachableMark {
        var mark = ReachableMark(content: content, objects: count)
        for kind in SnapshotKind.allCases { for s in try metadata.snapshots(kind: kind) { try mark.tree(s.root) } }
        for s in try metadata.sessions() {
            let live = try liveRoots(of: s)
            for t in live.trees { try mark.tree(t) }
            for m in live.manifests { try mark.manifest(m) }
        }
        for p in try metadata.proposals() { try mark.tree(p.root) }
        return mark
    }

    /// Garbage collection, safe while sessions are mounted and written. Unreachable objects written
    /// more than `minAge` seconds ago, and before every write in flight began, are condemned (moved
    /// aside, still readable); then the reachable set is marked again, condemned objects found
    /// reachable are put back, and those condemned before every write in flight began are deleted.
    /// A writer that found an object present before it was condemned has a lease older than the
    /// condemnation, so that object waits for a later run; one that came after wrote it anew. So
    /// safety rests on the leases, not on the window: `minAge` 0 is safe too.
    public func collect(dryRun: Bool, minAge: Double, progress: (String) -> Void = { _ in }) throws(AetherError) -> CollectReport {
        try audited(uid: getuid(), action: "gc", session: "", detail: dryRun ? "--dry-run" : "") { () throws(AetherError) in
            var report = try domain { try collectObjects(dryRun: dryRun, minAge: minAge, progress: progress) }
            (report.sessionFiles, report.sessionFileBytes) = try domain { try sweepSessionFiles(dryRun: dryRun) }
            if !dryRun {
                try? metadata.audit(uid: getuid(), action: "gc", session: "",
                                    detail: "condemned \(report.condemned) (\(report.condemnedBytes) bytes), deleted \(report.deleted) (\(report.deletedBytes) bytes), resurrected \(report.resurrected), session files \(report.sessionFiles) (\(report.sessionFileBytes) bytes)")
            }
            return report
        }
    }

    /// The sessions' own files nothing needs: of each session no process holds (its lock is taken
    /// for the while), what a crash left in its upper directory, and a retired session's spares; the
    /// directory, lock and log of a session that no longer exists.
    private func sweepSessionFiles(dryRun: Bool) throws -> (Int, Int64) {
        let top = path + "/sessions"
        let sessions = Dictionary(try metadata.sessions().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var files = 0, bytes: Int64 = 0
        for e in FileIO.entries(of: top) where e.isDirectory {
            guard let id = Int64(e.name) else { continue }
            let dir = top + "/" + e.name
            guard let s = sessions[id] else {
                // A session gone (deleted, or a crash before its directory went): everything, unless a
                // process still holds its lock.
                let fd = open(dir + ".lock", O_RDWR | O_CLOEXEC)
                defer { if fd >= 0 { close(fd) } }
                guard fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }
                let swept = UpperFiles.sweep(dir + "/upper", upper: [], spares: true, dryRun: dryRun)
                files += swept.files
                bytes += swept.bytes
                if !dryRun { removeTree(dir); unlink(dir + ".log"); unlink(dir + ".lock") }
                continue
            }
            // Its lock only when there is something to remove (a mount starting meanwhile is told the
            // session is busy), and then it looks again.
            var upper = Set(try working.nodes(session: id).filter(\.upper).map(\.ino))
            guard UpperFiles.sweep(dir + "/upper", upper: upper, spares: s.isRetired, dryRun: true).files > 0,
                  let lock = try? SessionLock(repository: self, session: s, marksUse: false) else { continue }
            defer { lock.release() }
            upper = Set(try working.nodes(session: id).filter(\.upper).map(\.ino))
            let swept = UpperFiles.sweep(dir + "/upper", upper: upper, spares: s.isRetired, dryRun: dryRun)
            files += swept.files
            bytes += swept.bytes
        }
        return (files, bytes)
    }

    private func collectObjects(dryRun: Bool, minAge: Double, progress: (String) -> Void) throws -> CollectReport {
        let blobs = objects.blobs
        let start = secondsNow()
        var report = CollectReport(reachable: 0, condemned: 0, condemnedBytes: 0, deleted: 0, deletedBytes: 0, resurrected: 0,
                                   keptYoung: 0, keptInFlight: 0, dryRun: dryRun)
        // The leases first: a writer that begins later writes only objects newer than `start`.
        let before = min(try oldestWrite() ?? start, start)
        var stored = 0
        try blobs.list { _, _ in stored += 1 }
        progress("gc: marking")
        var reachable = try reachableObjects(objects: stored)
        var condemnedNow: [(ObjectID, Int64)] = []
        try blobs.listAged { id, size, written in
            guard !reachable.contains(id) else { report.reachable += 1; return }
            if written > start - minAge { report.keptYoung += 1; return }
            if written >= before { report.keptInFlight += 1; return }
            condemnedNow.append((id, size))
        }
        report.condemned = condemnedNow.count
        report.condemnedBytes = condemnedNow.reduce(0) { $0 + $1.1 }
        if dryRun {
            // What execute would delete: these, and those condemned earlier that still qualify.
            let oldest = min(try oldestWrite() ?? start, start)
            try blobs.listCondemned { id, size, since in
                if !reachable.contains(id) && since < oldest { report.deleted += 1; report.deletedBytes += size }
            }
            if oldest >= start { report.deleted += condemnedNow.count; report.deletedBytes += report.condemnedBytes }
            return report
        }
        progress("gc: condemning \(condemnedNow.count) objects")
        for (id, _) in condemnedNow { try blobs.condemn(id) }
        let condemned = secondsNow()
        let thisRun = Set(condemnedNow.map(\.0))
        // Writers that recorded meanwhile may reach a condemned object: mark again. The leases are
        // read first: a write that has ended by then committed its record before, so the mark sees
        // it; one still in flight shows when it began.
        progress("gc: marking again")
        let oldest = try oldestWrite() ?? secondsNow()
        reachable = try reachableObjects(objects: stored)
        var purge: [(ObjectID, Int64)] = []
        try blobs.listCondemned { id, size, since in
            if reachable.contains(id) {
                try blobs.resurrect(id)
                report.resurrected += 1
            } else if thisRun.contains(id) ? oldest > condemned : since + 0.1 < oldest {
                // No write in flight began before it was condemned (a file's time comes from the
                // kernel's coarse clock, a few milliseconds behind: a tenth of a second's margin for
                // those of earlier runs).
                purge.append((id, size))
            }
        }
        progress("gc: deleting \(purge.count) objects")
        for (id, size) in purge {
            try blobs.purge(id)
            report.deleted += 1
            report.deletedBytes += size
        }
        let reclaimed = try blobs.reclaimSpace(minAge: minAge)
        report.packsDeleted = reclaimed.deleted
        report.packsRewritten = reclaimed.rewritten
        report.packBytesFreed = reclaimed.freed
        try blobs.flush()
        return report
    }
}

/// The mark of garbage collection: what the roots reach, walked page by page, so that what versions of
/// a directory share is read once, and in memory that stays small for millions of objects. Trees and
/// their pages, which lead further, are kept exactly (none is walked twice or missed); manifests and
/// chunks, most of a store, go into a Bloom filter of 16 bits per stored object with a seed of its own
/// each run: a false positive only keeps an unreachable object for a later run, never loses a
/// reachable one. A bounded set of recent manifests saves reading one again.
struct ReachableMark {
    let content: ContentStore
    private(set) var walked = Set<ObjectID>()
    private var bits: [UInt64]
    private let seed = UInt64.random(in: 0...UInt64.max)
    private var recent = Set<ObjectID>()
    static let hashes = 6
    static let recentLimit = 1 << 18

    init(content: ContentStore, objects: Int) {
        self.content = content
        bits = [UInt64](repeating: 0, count: max(1 << 10, objects / 4 + 1))   // 16 bits an object
    }

    /// Whether `id` may be reachable: certainly, when false.
    func contains(_ id: ObjectID) -> Bool { walked.contains(id) || filterContains(id) }

    mutating func tree(_ id: ObjectID) throws {
        guard walked.insert(id).inserted else { return }
        let head = try content.treeHead(id)
        guard let pages = head.pages else { try entries(head.entries); return }
        for p in pages where walked.insert(p.id).inserted { try entries(try content.page(p)) }
    }

    private mutating func entries(_ entries: [TreeEntry]) throws {
        for e in entries {
            guard let c = e.content else { continue }
            if e.kind == .directory { try tree(c) } else if e.kind == .file { try manifest(c) }
        }
    }

    mutating func manifest(_ id: ObjectID) throws {
        if recent.contains(id) { return }
        if recent.count >= ReachableMark.recentLimit { recent.removeAll(keepingCapacity: true) }
        recent.insert(id)
        insert(id)
        for c in try content.manifest(id).manifest.chunks where c.id != Manifest.hole { insert(c.id) }
    }

    /// Sets the filter's bits of `id`; false when all were set already. Its positions come from double
    /// hashing over the id's words, which are uniform already.
    @discardableResult
    mutating func insert(_ id: ObjectID) -> Bool {
        let m = UInt64(bits.count * 64), h1 = id.w0 ^ seed, h2 = (id.w1 ^ (seed &* 0x9E37_79B9_7F4A_7C15)) | 1
        var new = false
        for i in 0..<UInt64(ReachableMark.hashes) {
            let p = Int((h1 &+ i &* h2) % m), bit: UInt64 = 1 << UInt64(p & 63)
            if bits[p >> 6] & bit == 0 { new = true; bits[p >> 6] |= bit }
        }
        return new
    }

    private func filterContains(_ id: ObjectID) -> Bool {
        let m = UInt64(bits.count * 64), h1 = id.w0 ^ seed, h2 = (id.w1 ^ (seed &* 0x9E37_79B9_7F4A_7C15)) | 1
        for i in 0..<UInt64(ReachableMark.hashes) {
            let p = Int((h1 &+ i &* h2) % m)
            if bits[p >> 6] & (1 << UInt64(p & 63)) == 0 { return false }
        }
        return true
    }
}
