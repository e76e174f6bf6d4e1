import AetherModel
import AetherStore

/// One difference between two trees.
public struct Change: Sendable, Equatable {
    public enum Kind: String, Sendable { case added, deleted, modified, renamed }
    public var kind: Kind
    /// The path in the newer tree (in the older one for deletions), `/`-separated bytes.
    public var path: [UInt8]
    /// For renames, the path in the older tree.
    public var from: [UInt8]?
    /// For modifications: which of content, type, mode, owner, xattrs, target changed.
    public var aspects: [String]
}

extension Repository {
    /// What changed from tree `a` to tree `b`. Walks only subtrees whose ids differ; a file deleted in
    /// one place and added in another with identical content is a rename.
    /// With no `a` (a branch with no commit yet), everything in `b` is added.
    public func diff(_ a: ObjectID?, _ b: ObjectID) throws(AetherError) -> [Change] {
        var found: [(change: Change, content: ObjectID?)] = []
        try domain { try diffTrees(a, b, prefix: [], into: &found) }
        return pairRenames(found)
    }

    private func diffTrees(_ a: ObjectID?, _ b: ObjectID?, prefix: [UInt8], into found: inout [(change: Change, content: ObjectID?)]) throws {
        if a == b { return }
        let ta = try a.map { try content.tree($0) }
        let tb = try b.map { try content.tree($0) }
        if let ta, let tb, !prefix.isEmpty {
            var aspects: [String] = []
            if ta.mode != tb.mode { aspects.append("mode") }
            if ta.uid != tb.uid || ta.gid != tb.gid { aspects.append("owner") }
            if ta.xattrs != tb.xattrs { aspects.append("xattrs") }
            if !aspects.isEmpty { found.append((Change(kind: .modified, path: prefix, aspects: aspects), nil)) }
        }
        var olds: [[UInt8]: TreeEntry] = [:]
        for e in ta?.entries ?? [] { olds[e.name] = e }
        var seen = Set<[UInt8]>()
        for e in tb?.entries ?? [] {
            let path = prefix.isEmpty ? e.name : prefix + [47] + e.name
            seen.insert(e.name)
            guard let old = olds[e.name] else {
                try record(.added, e, path, into: &found)
                continue
            }
            if old.kind != e.kind {
                try record(.deleted, old, path, into: &found)
                try record(.added, e, path, into: &found)
            } else if e.kind == .directory {
                try diffTrees(old.content, e.content, prefix: path, into: &found)
            } else {
                var aspects: [String] = []
                if old.content != e.content || old.size != e.size { aspects.append("content") }
                if old.target != e.target { aspects.append("target") }
                if old.mode != e.mode { aspects.append("mode") }
                if old.uid != e.uid || old.gid != e.gid { aspects.append("owner") }
                if old.xattrs != e.xattrs { aspects.append("xattrs") }
                if !aspects.isEmpty { found.append((Change(kind: .modified, path: path, aspects: aspects), nil)) }
            }
        }
        for e in ta?.entries ?? [] where !seen.contains(e.name) {
            try record(.deleted, e, prefix.isEmpty ? e.name : prefix + [47] + e.name, into: &found)
        }
    }

    /// An added or deleted entry, and everything below it when it is a directory.
    private func record(_ kind: Change.Kind, _ e: TreeEntry, _ path: [UInt8], into found: inout [(change: Change, content: ObjectID?)]) throws {
        found.append((Change(kind: kind, path: path, aspects: []), e.kind == .file && e.size > 0 ? e.content : nil))
        if e.kind == .directory {
            try diffTrees(kind == .added ? nil : e.content, kind == .added ? e.content : nil, prefix: path, into: &found)
        }
    }

    /// Pairs each added file with a deleted file of the same non-empty content, as a rename.
    private func pairRenames(_ found: [(change: Change, content: ObjectID?)]) -> [Change] {
        var deletedBy: [ObjectID: [Int]] = [:]
        for (i, f) in found.enumerated() where f.change.kind == .deleted {
            if let id = f.content { deletedBy[id, default: []].append(i) }
        }
        var renamedFrom = Set<Int>()
        var out: [Change] = []
        for f in found {
            if f.change.kind == .added, let id = f.content, let j = deletedBy[id]?.first {
                deletedBy[id]!.removeFirst()
                renamedFrom.insert(j)
                out.append(Change(kind: .renamed, path: f.change.path, from: found[j].change.path, aspects: []))
            } else {
                out.append(f.change)
            }
        }
        let renamedPaths = Set(renamedFrom.map { found[$0].change.path })
        return out.filter { !($0.kind == .deleted && renamedPaths.contains($0.path)) }
    }
}

extension Workspace {
    /// The root of the session's current tree (written into the store first, cost following the change).
    public func currentRoot() throws(AetherError) -> ObjectID {
        try freeze { _, _ in }
    }
}
