#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore

/// Read-only views of snapshots: `.aether/checkpoints/NAME/` and `.aether/commits/BRANCH/ID/` (with a
/// `latest` link) inside a session mount, and a whole mount of a store's commits laid out as
/// `branches/BRANCH/{ID,latest}`, `by-id/ID/` and `by-time/TIME-ID/` for backup tools.
///
/// Inode numbers are derived from the snapshot id and the path (hard links from their link group), with
/// the top bit set: the same file has the same number in every mount, so incremental backup tools see
/// unchanged files as unchanged. Times are the recorded ones. Every change is EROFS.
final class SnapshotViews {
    enum Listing: Equatable {
        case aetherRoot, checkpoints, commitBranches, branch(String), storeRoot, branches, byID, byTime
    }

    enum Content {
        case listing(Listing)
        case tree(ObjectID, key: [UInt8], path: [UInt8])
        case file(ObjectID?)
        case symlink([UInt8])
        case special
    }

    struct View {
        var attributes: Attributes
        var content: Content
        var xattrs: XattrMap = [:]
    }

    let repo: Repository
    /// The session whose checkpoints `.aether/checkpoints` shows (nil in a store-wide snapshot mount).
    let session: () -> SessionRecord?
    var views: [UInt64: View] = [:]

    static let topBit: UInt64 = 1 << 63

    init(repo: Repository, session: @escaping () -> SessionRecord?) {
        self.repo = repo
        self.session = session
    }

    static func owns(_ ino: UInt64) -> Bool { ino & topBit != 0 }

    /// FNV-1a over the parts (each ended by 0xff), with the top bit set.
    static func ino(_ parts: [UInt8]...) -> UInt64 {
        var h = FNV1a()
        for part in parts {
            h.add(part)
            h.add(0xff)
        }
        return h.value | topBit
    }

    /// The store's snapshots and branches as each listing last saw them (`Catalog.snapshotsVersion`).
    private var listed: [UInt64: String] = [:]

    /// A view's attributes now. A listing's mtime moves to now when snapshots or branches changed since
    /// it was last asked for: the kernel keeps a directory's listing until its mtime changes (and, since
    /// snapshots come and go, never caches a listing's attributes).
    func currentAttributes(_ ino: UInt64) throws(AetherError) -> Attributes {
        let v = try view(ino)
        guard case .listing = v.content else { return v.attributes }
        let print = try domain { try repo.metadata.snapshotsVersion() }
        if let seen = listed[ino], seen != print {
            let now = nanosecondsNow()
            views[ino]!.attributes.mtime = now
            views[ino]!.attributes.ctime = now
        }
        listed[ino] = print
        return views[ino]!.attributes
    }

    /// Whether a view lists snapshots (which come and go), rather than a snapshot's fixed tree.
    func isListing(_ ino: UInt64) -> Bool {
        if case .listing? = views[ino]?.content { return true }
        return false
    }

    func view(_ ino: UInt64) throws(AetherError) -> View {
        guard let v = views[ino] else { throw .notFound("inode \(ino)") }
        return v
    }

    /// The view of a listing directory (registered on first use).
    func listingView(_ listing: Listing, ino: UInt64) -> View {
        if let v = views[ino] { return v }
        let t = (try? repo.metadata.snapshots(kind: .commit).first?.time).flatMap { $0 }.map { Int64($0 * 1e9) } ?? 0
        let v = View(attributes: Attributes(ino: ino, kind: .directory, mode: 0o555, nlink: 2, uid: 0, gid: 0, size: 0,
                                            atime: t, mtime: t, ctime: t, rdev: 0), content: .listing(listing))
        views[ino] = v
        return v
    }

    /// The directory of a snapshot's root tree.
    /// `key` names where the view stands (its listing and the snapshot), so that a snapshot seen in two
    /// places has distinct directory inodes in each (the kernel allows one name per directory).
    private func rootView(_ s: SnapshotRecord, key: [UInt8]) throws(AetherError) -> View {
        let ino = SnapshotViews.ino(key)
        let id = s.root
        let t = try repo.tree(id)
        let v = View(attributes: Attributes(ino: ino, kind: .directory, mode: t.mode, nlink: 2 + UInt32(t.entries.filter { $0.kind == .directory }.count),
                                            uid: t.uid, gid: t.gid, size: 4096, atime: t.mtime, mtime: t.mtime, ctime: t.mtime, rdev: 0),
                     content: .tree(id, key: key, path: []), xattrs: t.xattrs)
        views[ino] = v
        return v
    }

    private func symlinkView(_ target: String, ino: UInt64, time: Int64) -> View {
        let v = View(attributes: Attributes(ino: ino, kind: .symlink, mode: 0o777, nlink: 1, uid: 0, gid: 0,
                                            size: UInt64(target.utf8.count), atime: time, mtime: time, ctime: time, rdev: 0),
                     content: .symlink(Array(target.utf8)))
        views[ino] = v
        return v
    }

    /// The names of a view directory, each with its view.
    func children(_ ino: UInt64) throws(AetherError) -> [(name: [UInt8], view: View)] {
        let parent = try view(ino)
        func named(_ s: String) -> [UInt8] { Array(s.utf8) }
        let metadata = repo.metadata
        switch parent.content {
        case .listing(let listing):
            switch listing {
            case .aetherRoot:
                return [(named("checkpoints"), listingView(.checkpoints, ino: SnapshotViews.ino(named("checkpoints")))),
                        (named("commits"), listingView(.commitBranches, ino: SnapshotViews.ino(named("commits"))))]
            case .storeRoot:
                return [(named("branches"), listingView(.branches, ino: SnapshotViews.ino(named("branches")))),
                        (named("by-id"), listingView(.byID, ino: SnapshotViews.ino(named("by-id")))),
                        (named("by-time"), listingView(.byTime, ino: SnapshotViews.ino(named("by-time"))))]
            case .checkpoints:
                guard let s = session() else { return [] }
                return try roots(try repo.checkpoints(of: s), in: "checkpoints") { $0.name }
            case .commitBranches, .branches:
                return try repo.branches().map { b in
                    (named(b.name), listingView(.branch(b.name), ino: SnapshotViews.ino(named("branch"), named(b.name))))
                }
            case .branch(let name):
                let history = try repo.history(name)
                var out = try roots(history, in: "branch/" + name) { $0.sid }
                if let head = history.first {
                    out.append((named("latest"), symlinkView(head.sid, ino: SnapshotViews.ino(named("latest"), named(name), named(head.sid)),
                                                             time: Int64(head.time * 1e9))))
                }
                return out
            case .byID:
                return try roots(try domain { try metadata.snapshots(kind: .commit) }, in: "by-id") { $0.sid }
            case .byTime:
                return try roots(try domain { try metadata.snapshots(kind: .commit) }, in: "by-time") { isoTime($0.time) + "-" + $0.sid }
            }
        case .tree(let id, let key, let path):
            let tree = try repo.tree(id)
            var out: [(name: [UInt8], view: View)] = []
            for e in tree.entries {
                let childPath = path + [47] + e.name
                let ino = e.linkGroup != 0 ? SnapshotViews.ino(key, named("link"), named(String(e.linkGroup)))
                                           : SnapshotViews.ino(key, childPath)
                if let known = views[ino] { out.append((e.name, known)); continue }
                let v: View
                if e.kind == .directory {
                    guard let cid = e.content else { throw AetherError.damaged("directory entry without a tree") }
                    let t = try repo.tree(cid)
                    v = View(attributes: Attributes(ino: ino, kind: .directory, mode: t.mode,
                                                    nlink: 2 + UInt32(t.entries.filter { $0.kind == .directory }.count),
                                                    uid: t.uid, gid: t.gid, size: 4096, atime: t.mtime, mtime: t.mtime, ctime: t.mtime, rdev: 0),
                             content: .tree(cid, key: key, path: childPath), xattrs: t.xattrs)
                } else {
                    let content: Content = e.kind == .file ? .file(e.content) : e.kind == .symlink ? .symlink(e.target) : .special
                    var a = Attributes(ino: ino, kind: e.kind, mode: e.mode, nlink: e.nlink, uid: e.uid, gid: e.gid,
                                       size: e.size, atime: e.mtime, mtime: e.mtime, ctime: e.mtime, rdev: e.rdev)
                    if e.kind == .file { a.blocks = repo.content.blocks(of: e.content, size: e.size) }
                    v = View(attributes: a, content: content, xattrs: e.xattrs)
                }
                views[ino] = v
                out.append((e.name, v))
            }
            return out
        default:
            throw .notDirectory
        }
    }

    /// Snapshots' root directories, named by `name`.
    private func roots(_ list: [SnapshotRecord], in listing: String, _ name: (SnapshotRecord) -> String) throws(AetherError) -> [(name: [UInt8], view: View)] {
        var out: [(name: [UInt8], view: View)] = []
        for s in list { out.append((Array(name(s).utf8), try rootView(s, key: Array("\(listing)/\(s.sid)".utf8)))) }
        return out
    }

    func lookup(_ parent: UInt64, _ name: [UInt8]) throws(AetherError) -> Attributes {
        guard let found = try children(parent).first(where: { $0.name == name }) else { throw .notFound("name") }
        return found.view.attributes
    }

    func read(_ ino: UInt64, offset: UInt64, count: Int) throws(AetherError) -> ReadPlan {
        let v = try view(ino)
        guard case .file(let id) = v.content else { throw v.attributes.kind == .directory ? .isDirectory : .invalid("not a file") }
        guard let id, offset < v.attributes.size, count > 0 else { return .bytes([]) }
        return .stored(id, offset: offset, count: Int(min(UInt64(count), v.attributes.size - offset)))
    }

    /// SEEK_DATA (`data`) or SEEK_HOLE in a view's file; nil: none at or after `offset` (ENXIO).
    func seek(_ ino: UInt64, offset: UInt64, data: Bool) throws(AetherError) -> UInt64? {
        let v = try view(ino)
        guard case .file(let id) = v.content else { throw v.attributes.kind == .directory ? .isDirectory : .invalid("not a file") }
        return try domain { try repo.content.seek(in: id, size: v.attributes.size, offset: offset, data: data) }
    }

    func readlink(_ ino: UInt64) throws(AetherError) -> [UInt8] {
        guard case .symlink(let target) = try view(ino).content else { throw .invalid("not a symlink") }
        return target
    }
}
