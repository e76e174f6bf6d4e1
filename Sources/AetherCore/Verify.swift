#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

/// One thing wrong with a store, and what it affects.
public struct Problem: Sendable, CustomStringConvertible {
    public var what: String
    /// The checkpoints, commits and sessions that reach the damage.
    public var affects: [String]
    public var description: String {
        affects.isEmpty ? what : "\(what) — affects \(affects.joined(separator: ", "))"
    }
}

/// What `verify` looked at.
public struct VerifyReport: Sendable {
    public var problems: [Problem] = []
    public var trees = 0, manifests = 0, chunks = 0, chunkBytes: Int64 = 0
}

extension Repository {
    /// Checks the whole store: every object reachable from a snapshot, a session's base or its working
    /// layer exists and hashes to its id (chunks are read only with `readData`), every reference in the
    /// metadata database resolves, and SQLite's own integrity check passes.
    /// `progress` hears, after each snapshot and session and every 64 MiB of chunks, how many of them
    /// are checked, of how many, and the bytes of chunks checked so far.
    public func verify(readData: Bool, progress: @escaping (_ done: Int, _ total: Int, _ bytes: Int64) -> Void = { _, _, _ in }) throws(AetherError) -> VerifyReport {
        var report = VerifyReport()
        var walker = Walker(repo: self, readData: readData)
        var done = 0, total = 0
        walker.tick = { bytes in progress(done, total, bytes) }
        let checks = metadata === working ? [metadata.integrityCheck] : [metadata.integrityCheck, working.integrityCheck]
        for check in checks {
            let integrity = try domain { try check() }
            if integrity != ["ok"] {
                report.problems.append(Problem(what: "metadata database: \(integrity.prefix(5).joined(separator: "; "))", affects: []))
            }
        }
        let sessions = try self.sessions()
        let sessionNames = Dictionary(sessions.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        var snapshotIDs = Set<Int64>()
        let all = try domain { try metadata.snapshotIDs() }
        snapshotIDs.formUnion(all)
        total = all.count + sessions.count
        for id in all {
            let found: SnapshotRecord?
            do { found = try metadata.snapshot(id: id) } catch {
                report.problems.append(Problem(what: "snapshot record #\(id): \(AetherError.from(error))", affects: [])); continue
            }
            guard let s = found else { continue }
            let label = "\(s.kind.rawValue) \(s.kind == .checkpoint ? s.name : s.sid) (session \(sessionNames[s.session] ?? "#\(s.session), deleted"))"
            if let p = s.parent, !snapshotIDs.contains(p) {
                report.problems.append(Problem(what: "\(s.kind.rawValue) \(s.sid) names a parent #\(p) that does not exist", affects: [label]))
            }
            walker.tree(s.root, label: label)
            done += 1
            progress(done, total, walker.checkedBytes)
        }
        for b in try domain({ try metadata.branches() }) where !snapshotIDs.contains(b.head) {
            report.problems.append(Problem(what: "branch \(b.name) points at a missing commit #\(b.head)", affects: ["branch \(b.name)"]))
        }
        for s in sessions {
            let label = "session \(s.name)"
            for (field, id) in [("base snapshot", s.baseSnapshot), ("head", s.head), ("base commit", s.baseCommit)] {
                if let id, !snapshotIDs.contains(id) {
                    report.problems.append(Problem(what: "session \(s.name) names a missing \(field) #\(id)", affects: [label]))
                }
            }
            walker.tree(s.baseRoot, label: label)
            let rows = try domain { try working.nodes(session: s.id) }
            let inos = Set(rows.map(\.ino))
            for r in rows {
                if r.upper && !FileIO.exists(sessionDirectory(s.id) + "/upper/\(r.ino)") {
                    report.problems.append(Problem(what: "the written data of inode \(r.ino) is missing from the working layer", affects: [label]))
                }
                guard !r.upper || r.kind == NodeKind.directory.rawValue, let content = r.content else { continue }
                if r.kind == NodeKind.directory.rawValue { walker.tree(content, label: label) }
                else if r.kind == NodeKind.file.rawValue { walker.manifest(content, label: label) }
            }
            for d in try domain({ try working.dentries(session: s.id) }) where (d.ino != 0 && !inos.contains(d.ino)) || !inos.contains(d.parent) {
                report.problems.append(Problem(what: "a name in directory \(d.parent) of the working layer points at a missing inode \(d.ino)", affects: [label]))
            }
            for ino in Set(try domain({ try working.xattrs(session: s.id) }).map(\.ino)) where !inos.contains(ino) {
                report.problems.append(Problem(what: "extended attributes in the working layer belong to a missing inode \(ino)", affects: [label]))
            }
            done += 1
            progress(done, total, walker.checkedBytes)
        }
        report.problems += walker.problems.values.sorted { $0.what < $1.what }
        report.trees = walker.trees; report.manifests = walker.manifests
        report.chunks = walker.chunks; report.chunkBytes = walker.chunkBytes
        return report
    }
}

/// Walks objects once each, remembering which damaged objects lie below each tree or manifest.
/// A store error names its object already; a decoding error gets the object's kind and id.
private func describe(_ error: any Error, _ kind: String, _ id: ObjectID) -> String {
    if let e = error as? StoreError { return e.description }
    return "\(kind) \(id.hex) does not decode: \(AetherError.from(error).description)"
}

private struct Walker {
    let repo: Repository
    let readData: Bool
    var problems: [ObjectID: Problem] = [:]
    var below: [ObjectID: Set<ObjectID>] = [:]
    var trees = 0, manifests = 0, chunks = 0, chunkBytes: Int64 = 0
    /// Bytes of chunks checked so far; `tick` hears of every 64 MiB more.
    var checkedBytes: Int64 = 0, tickedAt: Int64 = 0
    var tick: (Int64) -> Void = { _ in }

    init(repo: Repository, readData: Bool) { self.repo = repo; self.readData = readData }

    mutating func checked(_ bytes: Int64) {
        checkedBytes += bytes
        if checkedBytes - tickedAt >= 64 << 20 { tickedAt = checkedBytes; tick(checkedBytes) }
    }

    mutating func blame(_ bad: Set<ObjectID>, _ label: String) {
        for id in bad where !(problems[id]?.affects.contains(label) ?? true) { problems[id]!.affects.append(label) }
    }

    mutating func fail(_ id: ObjectID, _ what: String, _ label: String) -> Set<ObjectID> {
        if problems[id] == nil { problems[id] = Problem(what: what, affects: []) }
        blame([id], label)
        return [id]
    }

    @discardableResult
    mutating func tree(_ id: ObjectID, label: String) -> Set<ObjectID> {
        if let known = below[id] { blame(known, label); return known }
        below[id] = []
        var bad = Set<ObjectID>()
        do {
            let t = try Tree.decode(try repo.objects.get(id, .tree))
            trees += 1
            var entries = t.entries
            for p in t.pages ?? [] {
                trees += 1
                do {
                    entries += try Tree.decodePage(try repo.objects.get(p.id, .tree), as: p)
                } catch {
                    bad.formUnion(fail(p.id, describe(error, "tree page", p.id), label))
                }
            }
            for e in entries {
                guard let c = e.content else { continue }
                if e.kind == .directory { bad.formUnion(tree(c, label: label)) }
                else if e.kind == .file { bad.formUnion(manifest(c, label: label)) }
            }
        } catch {
            bad = fail(id, describe(error, "tree", id), label)
        }
        below[id] = bad
        blame(bad, label)
        return bad
    }

    @discardableResult
    mutating func manifest(_ id: ObjectID, label: String) -> Set<ObjectID> {
        if let known = below[id] { blame(known, label); return known }
        var bad = Set<ObjectID>()
        do {
            let m = try Manifest.decode(try repo.objects.get(id, .manifest))
            manifests += 1
            var fresh: [(id: ObjectID, length: UInt32)] = []
            for c in m.chunks where c.id != Manifest.hole && below[c.id] == nil {
                below[c.id] = []
                chunks += 1
                chunkBytes += Int64(c.length)
                fresh.append((c.id, c.length))
            }
            if readData {
                for c in fresh {
                    do {
                        let data = try repo.objects.get(c.id, .chunk)
                        checked(Int64(c.length))
                        if data.count != Int(c.length) { below[c.id] = fail(c.id, "chunk \(c.id.hex) holds \(data.count) bytes, its manifest says \(c.length)", label) }
                    } catch {
                        below[c.id] = fail(c.id, describe(error, "chunk", c.id), label)
                    }
                }
            } else {
                // One existence query for the manifest's chunks (one round trip on a remote store).
                do {
                    checked(fresh.reduce(0) { $0 + Int64($1.length) })
                    for id in try repo.objects.missing(of: fresh.map(\.id)) { below[id] = fail(id, "chunk \(id.hex) is missing", label) }
                } catch {
                    for c in fresh { below[c.id] = fail(c.id, describe(error, "chunk", c.id), label) }
                }
            }
            for c in m.chunks { bad.formUnion(below[c.id] ?? []) }
        } catch {
            bad = fail(id, describe(error, "manifest", id), label)
        }
        below[id] = bad
        blame(bad, label)
        return bad
    }
}
