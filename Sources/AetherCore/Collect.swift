#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

/// What a garbage collection did (or, dry, would do).
public struct CollectReport: Codable, Sendable {
    /// Objects reachable from a root.
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

    enum CodingKeys: String, CodingKey {
        case reachable, condemned, condemnedBytes = "condemned_bytes", deleted, deletedBytes = "deleted_bytes", resurrected
        case sessionFiles = "session_files", sessionFileBytes = "session_file_bytes"
        case keptYoung = "kept_young", keptInFlight = "kept_in_flight", dryRun = "dry_run"
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
    /// layers' trees and manifests, proposals.
    func reachableObjects() throws -> Set<ObjectID> {
        var walker = ChunkWalker(content: content)
        var lengths: [ObjectID: Int64] = [:]
        var chunks = Set<ObjectID>()
        var trees: [ObjectID] = []
        var manifests: [ObjectID] = []
        for kind in SnapshotKind.allCases { trees += try metadata.snapshots(kind: kind).map(\.root) }
        for s in try metadata.sessions() {
            let live = try liveRoots(of: s)
            trees += live.trees
            manifests += live.manifests
        }
        trees += try metadata.proposals().map(\.root)
        for t in trees { try walker.collect(t, into: &chunks, lengths: &lengths) }
        for m in manifests { chunks.formUnion(try walker.chunks(ofManifest: m, lengths: &lengths)) }
        return walker.objects.union(chunks)
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
            guard let lock = try? SessionLock(repository: self, session: s, marksUse: false) else { continue }
            defer { lock.release() }
            let upper = Set(try working.nodes(session: id).filter(\.upper).map(\.ino))
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
        progress("gc: marking")
        var reachable = try reachableObjects()
        report.reachable = reachable.count
        var condemnedNow: [(ObjectID, Int64)] = []
        try blobs.listAged { id, size, written in
            guard !reachable.contains(id) else { return }
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
        reachable = try reachableObjects()
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
        try blobs.flush()
        return report
    }
}
