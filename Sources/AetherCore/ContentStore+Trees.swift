import AetherModel
import AetherStore

/// A name's new entry in a directory, or nil when the name is gone.
public typealias TreeChange = (name: [UInt8], entry: TreeEntry?)

extension ContentStore {
    /// A directory's tree with all its entries (a paged tree's pages put together).
    public func tree(_ id: ObjectID) throws -> Tree {
        let head = try treeHead(id)
        guard let pageList = head.pages else { return head }
        if let t = lock.withLock({ assembled.get(id) }) { return t }
        var t = head
        t.entries.reserveCapacity(head.count)
        for p in pageList {
            let entries = try page(p)
            if let last = t.entries.last, !bytesPrecede(last.name, p.first) {
                throw StoreError.damaged(id, "tree pages overlap")
            }
            t.entries += entries
        }
        lock.withLock { assembled.put(id, t, cost: 128 + t.entries.count * 160) }
        return t
    }

    /// A directory's tree as stored: a version-1 tree with its entries, a version-2 tree with its pages
    /// and no entries (enough for its attributes and link count).
    public func treeHead(_ id: ObjectID) throws -> Tree {
        if let t = lock.withLock({ heads.get(id) }) { return t }
        let t = try Tree.decode(try objects.get(id, .tree))
        lock.withLock { heads.put(id, t, cost: Self.cost(of: t)) }
        return t
    }

    /// The entries of one page of a version-2 tree.
    public func page(_ p: TreePage) throws -> [TreeEntry] {
        if let e = lock.withLock({ pages.get(p.id) }) { return e }
        let e = try Tree.decodePage(try objects.get(p.id, .tree), as: p)
        lock.withLock { pages.put(p.id, e, cost: 64 + e.count * 160) }
        return e
    }

    /// The entries of tree `a` and of tree `b` that are not in the other as they are (sorted by name).
    /// Of two paged trees only the pages that differ are read.
    public func differingEntries(_ a: ObjectID, _ b: ObjectID) throws -> (old: [TreeEntry], new: [TreeEntry]) {
        if a == b { return ([], []) }
        let ha = try treeHead(a), hb = try treeHead(b)
        var ea: [TreeEntry] = [], eb: [TreeEntry] = []
        if let pa = ha.pages, let pb = hb.pages {
            let inA = Set(pa.map(\.id)), inB = Set(pb.map(\.id))
            for p in pa where !inB.contains(p.id) { ea += try page(p) }
            for p in pb where !inA.contains(p.id) { eb += try page(p) }
        } else {
            ea = try tree(a).entries
            eb = try tree(b).entries
        }
        var old: [TreeEntry] = [], new: [TreeEntry] = []
        var i = 0, j = 0
        while i < ea.count || j < eb.count {
            if j == eb.count || (i < ea.count && bytesPrecede(ea[i].name, eb[j].name)) {
                old.append(ea[i]); i += 1
            } else if i == ea.count || bytesPrecede(eb[j].name, ea[i].name) {
                new.append(eb[j]); j += 1
            } else {
                if ea[i] != eb[j] { old.append(ea[i]); new.append(eb[j]) }
                i += 1; j += 1
            }
        }
        return (old, new)
    }

    /// The entry named `name` in tree `id`, reading one page of a paged tree.
    public func entry(named name: [UInt8], in id: ObjectID) throws -> TreeEntry? {
        let head = try treeHead(id)
        var entries = head.entries
        if let pageList = head.pages {
            let i = Self.pageIndex(pageList, name)
            guard i >= 0 else { return nil }
            entries = try page(pageList[i])
        }
        let i = entries.partitionPoint { bytesPrecede($0.name, name) }
        return i < entries.count && entries[i].name == name ? entries[i] : nil
    }

    /// Stores a tree (in pages when it is large) and returns its id.
    public func putTree(_ tree: Tree) throws -> ObjectID {
        if tree.entries.count <= Tree.pagedAbove {
            var t = tree
            t.pages = nil
            let id = try objects.put(.tree, t.encode())
            lock.withLock { heads.put(id, t, cost: Self.cost(of: t)) }
            return id
        }
        var pageList: [TreePage] = []
        for r in Tree.pageRanges(tree.entries[...]) { pageList.append(try putPage(tree.entries[r])) }
        return try putIndex(tree, pageList)
    }

    /// Stores the tree that `base` becomes with `changes` (sorted by name, one per name) and the
    /// attributes of `attributes`. Of a paged tree only the pages holding a changed name are rewritten,
    /// so the cost follows the change, not the directory's size.
    public func putTree(_ attributes: Tree, base: ObjectID, changes: [TreeChange]) throws -> ObjectID {
        let old = try treeHead(base)
        guard let basePages = old.pages else {
            var t = attributes
            t.entries = Self.apply(changes, to: old.entries[...])
            return try putTree(t)
        }
        var byPage = [[TreeChange]](repeating: [], count: basePages.count)
        var touched = [Bool](repeating: false, count: basePages.count)
        for c in changes {
            let i = max(0, Self.pageIndex(basePages, c.name))
            byPage[i].append(c)
            touched[i] = true
            // A page whose first name goes joins the page before it.
            if c.entry == nil, i > 0, basePages[i].first == c.name { touched[i - 1] = true }
        }
        var out: [TreePage] = []
        var i = 0
        while i < basePages.count {
            if !touched[i] { out.append(basePages[i]); i += 1; continue }
            var run: [TreeEntry] = []
            var runChanges: [TreeChange] = []
            while i < basePages.count && touched[i] {
                run += try page(basePages[i])
                runChanges += byPage[i]
                i += 1
            }
            let merged = Self.apply(runChanges, to: run[...])
            for r in Tree.pageRanges(merged[...]) { out.append(try putPage(merged[r])) }
        }
        if out.reduce(0, { $0 + $1.count }) <= Tree.pagedAbove {
            var t = attributes
            t.entries = []
            for p in out { t.entries += try page(p) }
            return try putTree(t)
        }
        return try putIndex(attributes, out)
    }

    private func putPage(_ entries: ArraySlice<TreeEntry>) throws -> TreePage {
        let id = try objects.put(.tree, Tree.encodePage(entries))
        let p = TreePage(first: entries.first!.name, count: entries.count,
                         subdirs: entries.reduce(0) { $0 + ($1.kind == .directory ? 1 : 0) }, id: id)
        lock.withLock { pages.put(id, Array(entries), cost: 64 + entries.count * 160) }
        return p
    }

    private func putIndex(_ attributes: Tree, _ pageList: [TreePage]) throws -> ObjectID {
        var head = attributes
        head.entries = []
        head.pages = pageList
        let id = try objects.put(.tree, head.encodeIndex(pageList))
        lock.withLock { heads.put(id, head, cost: Self.cost(of: head)) }
        return id
    }

    private static func cost(of t: Tree) -> Int { 128 + t.entries.count * 160 + (t.pages?.count ?? 0) * 80 }

    /// The index of the page holding `name`: the last page whose first name is not above it (-1 when
    /// the name sorts before every page).
    static func pageIndex(_ pageList: [TreePage], _ name: [UInt8]) -> Int {
        pageList.partitionPoint { !bytesPrecede(name, $0.first) } - 1
    }

    /// Sorted `entries` with sorted `changes` applied.
    static func apply(_ changes: [TreeChange], to entries: ArraySlice<TreeEntry>) -> [TreeEntry] {
        var out: [TreeEntry] = []
        out.reserveCapacity(entries.count + changes.count)
        var i = entries.startIndex
        for c in changes {
            while i < entries.endIndex && bytesPrecede(entries[i].name, c.name) { out.append(entries[i]); i += 1 }
            if i < entries.endIndex && entries[i].name == c.name { i += 1 }
            if let e = c.entry { out.append(e) }
        }
        out += entries[i...]
        return out
    }
}
