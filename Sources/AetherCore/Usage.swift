import AetherModel
import AetherStore

/// What each session (and checkpoint) costs: the bytes of chunks it references, those only it
/// references (what deleting it would free, once garbage is collected) and those it shares. Computed
/// from trees and manifests only, never from chunk data, in time that follows the trees visited.
public struct UsageReport: Codable, Sendable {
    public struct Line: Codable, Sendable {
        public var name: String
        public var referenced: Int64
        public var exclusive: Int64
        public var shared: Int64
        public var checkpoints: [Line]?
    }
    public var sessions: [Line]
    /// Unique chunk bytes every snapshot, session, proposal and commit reaches (before compression).
    public var logical: Int64
    /// Chunk bytes summed over every reference of every owner (what storing each whole would take).
    public var referenced: Int64
    /// Bytes of the store's objects as stored (compressed, with headers).
    public var stored: Int64
    public var dedupRatio: Double
    /// Stored bytes of objects nothing reaches: what `gc` could free.
    public var reclaimable: Int64

    enum CodingKeys: String, CodingKey {
        case sessions, logical, referenced, stored, dedupRatio = "dedup_ratio", reclaimable
    }
}

extension Repository {
    /// What a session's live state reaches: its base tree, and the trees and manifests its working
    /// layer's nodes still name (what they came from). Roots of `usage` and of `gc`.
    func liveRoots(of s: SessionRecord) throws -> (trees: [ObjectID], manifests: [ObjectID]) {
        var trees = [s.baseRoot], manifests: [ObjectID] = []
        for r in try working.nodes(session: s.id) {
            guard let c = r.content else { continue }
            if r.kind == NodeKind.directory.rawValue { trees.append(c) } else if r.kind == NodeKind.file.rawValue { manifests.append(c) }
        }
        return (trees, manifests)
    }

    /// Usage of `names` (every session when empty), with each checkpoint's own line when asked.
    /// Without `storeTotals`, the stored objects are not listed (`stored` and `reclaimable` are 0).
    public func usage(of names: [String] = [], checkpoints: Bool = false, storeTotals: Bool = true) throws(AetherError) -> UsageReport {
        try domain { try computeUsage(names, checkpoints: checkpoints, storeTotals: storeTotals) }
    }

    private func computeUsage(_ names: [String], checkpoints perCheckpoint: Bool, storeTotals: Bool) throws -> UsageReport {
        var walker = ChunkWalker(content: content)
        // Owners: each session (its base, working layer and checkpoints), and what outlives sessions:
        // commits and proposals.
        let sessions = try metadata.sessions()
        for n in names where !sessions.contains(where: { $0.name == n }) { throw AetherError.notFound("session \(n)") }
        var owners: [(name: String, trees: [ObjectID], manifests: [ObjectID])] = []
        var checkpointRoots: [Int64: [(String, ObjectID)]] = [:]
        for s in sessions {
            var (trees, manifests) = try liveRoots(of: s)
            let cps = try metadata.checkpoints(session: s.id)
            trees += cps.map(\.root)
            checkpointRoots[s.id] = cps.map { ($0.name, $0.root) }
            owners.append((s.name, trees, manifests))
        }
        owners.append(("(commits)", try metadata.snapshots(kind: .commit).map(\.root), []))
        owners.append(("(proposals)", try metadata.proposals().filter { $0.state == .open || $0.state == .approved }.map(\.root), []))

        // Each chunk: its length and how many owners reach it.
        var owned: [[ObjectID]] = []
        var ownerCount: [ObjectID: Int] = [:]
        var length: [ObjectID: Int64] = [:]
        for o in owners {
            var chunks = Set<ObjectID>()
            for r in o.trees { try walker.collect(r, into: &chunks, lengths: &length) }
            for m in o.manifests { chunks.formUnion(try walker.chunks(ofManifest: m, lengths: &length)) }
            for c in chunks { ownerCount[c, default: 0] += 1 }
            owned.append(Array(chunks))
        }
        func line(_ name: String, _ chunks: [ObjectID], exclusiveWhen: (ObjectID) -> Bool) -> UsageReport.Line {
            var l = UsageReport.Line(name: name, referenced: 0, exclusive: 0, shared: 0)
            for c in chunks {
                let n = length[c] ?? 0
                l.referenced += n
                if exclusiveWhen(c) { l.exclusive += n } else { l.shared += n }
            }
            return l
        }
        var lines: [UsageReport.Line] = []
        for (i, s) in sessions.enumerated() where names.isEmpty || names.contains(s.name) {
            var l = line(s.name, owned[i]) { ownerCount[$0] == 1 }
            if perCheckpoint {
                // A checkpoint's exclusive bytes: chunks no other owner and no other checkpoint or base of its session reaches.
                var perCp: [(String, Set<ObjectID>)] = []
                for (name, root) in checkpointRoots[s.id] ?? [] {
                    var set = Set<ObjectID>()
                    try walker.collect(root, into: &set, lengths: &length)
                    perCp.append((name, set))
                }
                var base = Set<ObjectID>()
                try walker.collect(s.baseRoot, into: &base, lengths: &length)
                var within: [ObjectID: Int] = [:]
                for (_, set) in perCp { for c in set { within[c, default: 0] += 1 } }
                for c in base { within[c, default: 0] += 1 }
                l.checkpoints = perCp.map { (name, set) in
                    line(name, Array(set)) { ownerCount[$0] == 1 && within[$0] == 1 }
                }
            }
            lines.append(l)
        }
        let logical = length.values.reduce(0, +)
        let referenced = owned.reduce(Int64(0)) { total, chunks in total + chunks.reduce(0) { $0 + (length[$1] ?? 0) } }
        // Reclaimable: stored objects that no owner reaches (trees and manifests included).
        var reachable = walker.objects
        for c in length.keys { reachable.insert(c) }
        var stored: Int64 = 0, unreached: Int64 = 0
        if storeTotals { try objects.blobs.list { id, size in
            stored += size
            if !reachable.contains(id) { unreached += size }
        } }
        return UsageReport(sessions: lines, logical: logical, referenced: referenced, stored: stored,
                           dedupRatio: logical == 0 ? 1 : Double(referenced) / Double(logical), reclaimable: unreached)
    }
}

/// Collects the chunks below a tree or manifest. A paged tree is walked page by page, and what is below
/// a page, a small tree or a manifest is remembered, so versions of a directory cost what they do not
/// share; what is below a paged tree or a large one is not (each version would keep a list as long as
/// the whole tree's), its pages' and children's lists serve it instead.
struct ChunkWalker {
    let content: ContentStore
    /// The chunks below pages, small trees and manifests.
    private var below: [ObjectID: [ObjectID]] = [:]
    var objects = Set<ObjectID>()
    /// Trees with at most this many chunks below them are remembered whole.
    static let rememberedTree = 4096

    init(content: ContentStore) { self.content = content }

    mutating func collect(_ id: ObjectID, into out: inout Set<ObjectID>, lengths: inout [ObjectID: Int64]) throws {
        if let known = below[id] { out.formUnion(known); return }
        objects.insert(id)
        let head = try content.treeHead(id)
        guard let pages = head.pages else {
            var chunks = Set<ObjectID>()
            try entries(head.entries, into: &chunks, lengths: &lengths)
            if chunks.count <= ChunkWalker.rememberedTree { below[id] = Array(chunks) }
            out.formUnion(chunks)
            return
        }
        for p in pages {
            if let known = below[p.id] { out.formUnion(known); continue }
            objects.insert(p.id)
            var chunks = Set<ObjectID>()
            try entries(try content.page(p), into: &chunks, lengths: &lengths)
            below[p.id] = Array(chunks)
            out.formUnion(chunks)
        }
    }

    private mutating func entries(_ entries: [TreeEntry], into out: inout Set<ObjectID>, lengths: inout [ObjectID: Int64]) throws {
        for e in entries {
            guard let c = e.content else { continue }
            if e.kind == .directory {
                try collect(c, into: &out, lengths: &lengths)
            } else if e.kind == .file {
                out.formUnion(try chunks(ofManifest: c, lengths: &lengths))
            }
        }
    }

    mutating func chunks(ofManifest id: ObjectID, lengths: inout [ObjectID: Int64]) throws -> [ObjectID] {
        if let known = below[id] { return known }
        objects.insert(id)
        let ids = try content.manifest(id).manifest.chunks.filter { $0.id != Manifest.hole }
        for k in ids { lengths[k.id] = Int64(k.length) }
        below[id] = ids.map(\.id)
        return ids.map(\.id)
    }
}
