#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore
import Dispatch

/// A snapshot record as it travels between stores: named by its display id (`sid`), its parent and
/// session by theirs, since row ids differ from store to store.
public struct SyncSnapshot: Codable, Sendable, Equatable {
    public var sid: String
    public var kind: String
    public var name: String
    public var root: String
    public var parent: String?
    public var time: Double
    public var author: UInt32
    public var message: String
    public var meta: [String: String]
    public var filesChanged: Int64
    public var bytesAdded: Int64
    public var branch: String?
    /// The session it was made in, by name.
    public var session: String?

    enum CodingKeys: String, CodingKey {
        case sid, kind, name, root, parent, time, author, message, meta, branch, session
        case filesChanged = "files_changed", bytesAdded = "bytes_added"
    }
}

/// A session as it travels: its record, its checkpoints oldest first, its fork parent by name.
public struct SyncSession: Codable, Sendable, Equatable {
    public var name: String
    public var owner: UInt32
    public var state: String
    public var created: Double
    public var baseRoot: String
    public var baseSnapshot: String?
    public var head: String?
    public var baseCommit: String?
    public var parent: String?
    public var checkpoints: [SyncSnapshot]

    enum CodingKeys: String, CodingKey {
        case name, owner, state, created, head, parent, checkpoints
        case baseRoot = "base_root", baseSnapshot = "base_snapshot", baseCommit = "base_commit"
    }
}

/// A branch to move on the receiver: to `head`, from `expected` (the head the sender saw there; nil:
/// the branch must not exist), with the commits the receiver lacks, oldest first.
public struct SyncBranch: Codable, Sendable, Equatable {
    public var name: String
    public var head: String
    public var expected: String?
    public var commits: [SyncSnapshot]
}

/// What a sync asks the receiver to record once every object is there.
public struct SyncRecords: Codable, Sendable, Equatable {
    public var branches: [SyncBranch]
    public var sessions: [SyncSession]
    public var force: Bool
}

/// One side of a sync: this machine's store, or a store behind `aetherfs serve`.
public protocol SyncPeer: AnyObject, Sendable {
    /// Of `ids`, those it does not hold (one batch).
    func missing(_ ids: [ObjectID]) throws(AetherError) -> [ObjectID]
    /// The stored bytes of objects it holds (one batch).
    func stored(_ ids: [ObjectID]) throws(AetherError) -> [[UInt8]]
    /// Takes in objects as stored bytes, in dependency order: each is verified against its id, and a
    /// tree or manifest is refused unless everything it names is there already.
    func receive(_ objects: [(ObjectID, [UInt8])]) throws(AetherError)
    /// A branch's head and its commits, newest first; nil when there is no such branch.
    func branch(_ name: String) throws(AetherError) -> (head: String, commits: [SyncSnapshot])?
    /// A session with its checkpoints; nil when there is none of that name.
    func session(_ name: String) throws(AetherError) -> SyncSession?
    /// The sids among `sids` it holds as snapshots.
    func knownSnapshots(_ sids: [String]) throws(AetherError) -> Set<String>
    /// Records sessions and snapshots and moves branches (compare-and-swap, fast-forward unless
    /// forced), in one transaction; refused whole when a branch moved or a session diverged.
    func apply(_ records: SyncRecords, caller: UInt32) throws(AetherError)
    /// Holds a write lease from the first object received to the records: garbage collection keeps
    /// what arrives meanwhile.
    func beginReceiving() throws(AetherError)
    func endReceiving()
}

/// What a sync sent.
public struct SyncReport: Codable, Sendable {
    public var objectsSent = 0
    public var bytesSent: Int64 = 0
    public var objectsSkipped = 0
    public var branches: [String] = []
    public var sessions: [String] = []
    public var seconds = 0.0
    public var requests = 0

    enum CodingKeys: String, CodingKey {
        case objectsSent = "objects_sent", bytesSent = "bytes_sent", objectsSkipped = "objects_skipped", branches, sessions, seconds
    }
    public init() {}
}

public enum Sync {
    /// Most ids in one existence question or fetch.
    static let batchIDs = 4096

    /// Copies `branches` (their commit lineage) and `sessions` (their checkpoints and fork parents)
    /// from `source` to `target`, sending only objects the target lacks: the walk stops at every tree
    /// the target holds (what it holds is closed), existence is asked in batches, objects go in
    /// dependency order, and references move last, by compare-and-swap.
    public static func copy(from source: any SyncPeer, to target: any SyncPeer, branches: [String], sessions: [String],
                            force: Bool, caller: UInt32, progress: (SyncReport) -> Void = { _ in }) throws(AetherError) -> SyncReport {
        let start = secondsNow()
        var report = SyncReport()
        var records = SyncRecords(branches: [], sessions: [], force: force)
        var roots: [ObjectID] = []
        func root(_ hex: String) throws(AetherError) -> ObjectID {
            guard let id = ObjectID(hex: hex) else { throw .damaged("a record names root \"\(hex)\"") }
            return id
        }
        for name in branches {
            guard let (head, commits) = try source.branch(name) else { throw .notFound("branch \(name)") }
            let theirs = try target.branch(name)?.head
            let known = try target.knownSnapshots(commits.map(\.sid))
            let lacking = commits.filter { !known.contains($0.sid) }
            for c in lacking { roots.append(try root(c.root)) }
            records.branches.append(SyncBranch(name: name, head: head, expected: theirs, commits: lacking.reversed()))
            report.branches.append(name)
        }
        // Sessions, each after its fork parent.
        var ordered: [SyncSession] = []
        var seen = Set<String>()
        func add(_ name: String) throws(AetherError) {
            guard !seen.contains(name) else { return }
            seen.insert(name)
            guard let s = try source.session(name) else { throw .notFound("session \(name)") }
            if let parent = s.parent { try add(parent) }
            ordered.append(s)
        }
        for name in sessions { try add(name) }
        for s in ordered {
            roots.append(try root(s.baseRoot))
            let known = try target.knownSnapshots(s.checkpoints.map(\.sid))
            for c in s.checkpoints where !known.contains(c.sid) { roots.append(try root(c.root)) }
            records.sessions.append(s)
            report.sessions.append(s.name)
        }
        try target.beginReceiving()
        defer { target.endReceiving() }
        try sendObjects(below: roots, from: source, to: target, report: &report, progress: progress)
        try target.apply(records, caller: caller)
        report.seconds = secondsNow() - start
        return report
    }

    /// The objects below `roots` that `target` lacks, level by level, sent deepest first.
    static func sendObjects(below roots: [ObjectID], from source: any SyncPeer, to target: any SyncPeer,
                            report: inout SyncReport, progress: (SyncReport) -> Void) throws(AetherError) {
        var visited = Set<ObjectID>()
        var frontier = try ask(target, unique(roots, &visited), &report)
        var levels: [[ObjectID]] = []
        var manifests: [ObjectID] = []
        var chunks: [ObjectID] = []
        // The pages of paged trees, known from their heads (a page decodes only as one).
        var pages: [ObjectID: TreePage] = [:]
        while !frontier.isEmpty {
            levels.append(frontier)
            var children: [ObjectID] = []
            var fileManifests: [ObjectID] = []
            for (id, bytes) in try fetch(source, frontier, &report) {
                try domain {
                    let content = try ObjectStore.decode(bytes, id: id, expecting: .tree).content
                    if let page = pages[id] {
                        for e in try Tree.decodePage(content, as: page) { classify(e, &children, &fileManifests) }
                        return
                    }
                    let tree = try Tree.decode(content)
                    for p in tree.pages ?? [] { pages[p.id] = p; children.append(p.id) }
                    for e in tree.entries { classify(e, &children, &fileManifests) }
                }
            }
            let newManifests = try ask(target, unique(fileManifests, &visited), &report)
            manifests += newManifests
            var pieces: [ObjectID] = []
            for (id, bytes) in try fetch(source, newManifests, &report) {
                let m = try domain { try Manifest.decode(try ObjectStore.decode(bytes, id: id, expecting: .manifest).content) }
                pieces += m.chunks.map(\.id).filter { $0 != Manifest.hole }
            }
            chunks += try ask(target, unique(pieces, &visited), &report)
            frontier = try ask(target, unique(children, &visited), &report)
        }
        // Chunks, then manifests, then trees from the deepest level up: nothing arrives before what it
        // names. Within each of those phases, batches go in parallel.
        for phase in [chunks, manifests] + levels.reversed() {
            try sendPhase(phase, from: source, to: target, report: &report, progress: progress)
        }
    }

    /// Objects fetched and sent `sendGroup` at a time (a batch of at most ~8 MiB of chunks), `parallel`
    /// batches at once; the first failure stops the rest.
    static let sendGroup = 128
    static let parallel = 4

    private static func sendPhase(_ ids: [ObjectID], from source: any SyncPeer, to target: any SyncPeer,
                                  report: inout SyncReport, progress: (SyncReport) -> Void) throws(AetherError) {
        guard !ids.isEmpty else { return }
        let groups = stride(from: 0, to: ids.count, by: sendGroup).map { Array(ids[$0..<min(ids.count, $0 + sendGroup)]) }
        final class Progress: @unchecked Sendable {
            let lock = Lock()
            var objects = 0, bytes: Int64 = 0, requests = 0
            var failure: AetherError?
        }
        let state = Progress()
        let slots = DispatchSemaphore(value: parallel)
        let group = DispatchGroup()
        for batch in groups {
            slots.wait()
            if state.lock.withLock({ state.failure != nil }) { slots.signal(); break }
            group.enter()
            DispatchQueue.global().async {
                defer { slots.signal(); group.leave() }
                do throws(AetherError) {
                    let files = try source.stored(batch)
                    guard files.count == batch.count else { throw .failed("asked for \(batch.count) objects, got \(files.count)") }
                    try target.receive(Array(zip(batch, files)))
                    let bytes = files.reduce(Int64(0)) { $0 + Int64($1.count) }
                    state.lock.withLock { state.objects += batch.count; state.bytes += bytes; state.requests += 2 }
                } catch {
                    state.lock.withLock { if state.failure == nil { state.failure = error } }
                }
            }
            var shown = report
            state.lock.withLock { shown.objectsSent += state.objects; shown.bytesSent += state.bytes }
            progress(shown)
        }
        group.wait()
        if let failure = state.failure { throw failure }
        report.objectsSent += state.objects
        report.bytesSent += state.bytes
        report.requests += state.requests
    }

    private static func classify(_ e: TreeEntry, _ trees: inout [ObjectID], _ manifests: inout [ObjectID]) {
        guard let c = e.content else { return }
        if e.kind == .directory { trees.append(c) } else if e.kind == .file { manifests.append(c) }
    }

    private static func unique(_ ids: [ObjectID], _ visited: inout Set<ObjectID>) -> [ObjectID] {
        ids.filter { visited.insert($0).inserted }
    }

    /// Of `ids`, those `target` lacks, asked in batches; the rest count as skipped.
    private static func ask(_ target: any SyncPeer, _ ids: [ObjectID], _ report: inout SyncReport) throws(AetherError) -> [ObjectID] {
        var out: [ObjectID] = []
        for start in stride(from: 0, to: ids.count, by: batchIDs) {
            let batch = Array(ids[start..<min(ids.count, start + batchIDs)])
            let lacking = try target.missing(batch)
            report.requests += 1
            report.objectsSkipped += batch.count - lacking.count
            out += lacking
        }
        return out
    }

    private static func fetch(_ source: any SyncPeer, _ ids: [ObjectID], _ report: inout SyncReport) throws(AetherError) -> [(ObjectID, [UInt8])] {
        var out: [(ObjectID, [UInt8])] = []
        for start in stride(from: 0, to: ids.count, by: batchIDs) {
            let batch = Array(ids[start..<min(ids.count, start + batchIDs)])
            let files = try source.stored(batch)
            guard files.count == batch.count else { throw .failed("asked for \(batch.count) objects, got \(files.count)") }
            out += zip(batch, files).map { ($0, $1) }
        }
        return out
    }
}
