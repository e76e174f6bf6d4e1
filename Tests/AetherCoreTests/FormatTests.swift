import Testing
import AetherModel
@testable import AetherCore
import AetherStore
import TestSupport

@Suite struct FormatTests {
    static let sampleTree = Tree(mode: 0o755, uid: 1000, gid: 100, mtime: 1_700_000_000_123_456_789, xattrs: ["user.a": [1, 2]], entries: [
        TreeEntry(name: Array("b.txt".utf8), kind: .file, mode: 0o644, uid: 1000, gid: 100, size: 5, mtime: 1_700_000_000_000_000_001,
                  content: ObjectID.of(.manifest, Manifest(size: 5, chunks: [(ObjectID.of(.chunk, Array("hello".utf8)), 5)]).encode()),
                  xattrs: ["user.z": [9], "user.y": []]),
        TreeEntry(name: Array("a-dir".utf8), kind: .directory, content: ObjectID.of(.tree, [0])),
        TreeEntry(name: Array("link".utf8), kind: .symlink, mode: 0o777, size: 5, target: Array("b.txt".utf8)),
        TreeEntry(name: [0xff, 0xfe], kind: .fifo, mode: 0o600),
    ])

    @Test func treeEncodingIsCanonicalAndPinned() throws {
        let bytes = FormatTests.sampleTree.encode()
        let reordered = Tree(mode: 0o755, uid: 1000, gid: 100, mtime: 1_700_000_000_123_456_789, xattrs: ["user.a": [1, 2]],
                             entries: FormatTests.sampleTree.entries.reversed())
        #expect(reordered.encode() == bytes, "entry order does not change the encoding")
        #expect(try Tree.decode(bytes) == FormatTests.sampleTree)
        // Golden: changing the tree format changes this id, which must come with a new format version.
        #expect(ObjectID.of(.tree, bytes).hex == "1e2761a86796975e22a09f03f6cec83951b07976ada306337b2f3311eb7d2498")
    }

    @Test func manifestEncodingIsPinned() throws {
        let m = Manifest(size: 70_000, chunks: [(ObjectID.of(.chunk, [1]), 65_536), (Manifest.hole, 4_464)])
        let bytes = m.encode()
        #expect(try Manifest.decode(bytes) == m)
        #expect(ObjectID.of(.manifest, bytes).hex == "408c23ef47af89d6292d71a7ba02d0413b2e64f8a3f13662eba5a7bb837fbdb9")
    }

    @Test func damagedEncodingsAreRejected() {
        var bytes = FormatTests.sampleTree.encode()
        bytes.removeLast()
        #expect(throws: FormatError.self) { try Tree.decode(bytes) }
        var newer = FormatTests.sampleTree.encode()
        newer[4] = 3
        #expect(throws: FormatError.self) { try Tree.decode(newer) }
        #expect(throws: FormatError.self) { try Manifest.decode(Manifest(size: 3, chunks: []).encode()) }
    }

    /// A directory of `count` files named from `names`, with mtimes from `stamp`.
    static func entries(_ names: some Sequence<Int>, stamp: Int64 = 1) -> [TreeEntry] {
        names.map { i in
            TreeEntry(name: Array("f\(i)".utf8), kind: i % 97 == 0 ? .directory : .file, mode: 0o644, size: UInt64(i),
                      mtime: stamp, content: ObjectID.of(.manifest, [UInt8(truncatingIfNeeded: i), UInt8(truncatingIfNeeded: stamp)]))
        }
    }

    @Test func pageBoundariesArePinned() {
        // Golden: which names begin a page is part of the tree format (version 2).
        let starts = (0..<3000).filter { Tree.startsPage(Array("f\($0)".utf8)) }
        #expect(starts.count > 10 && starts.count < 40)
        #expect(Array(starts.prefix(6)) == FormatTests.pinnedStarts)
    }
    static let pinnedStarts = [201, 370, 621, 873, 949, 1306]

    @Test func largeDirectoriesAreStoredInPagesAndReadWhole() throws {
        let store = ContentStore(objects: ObjectStore(blobs: MemoryBlobStore()))
        let tree = Tree(mode: 0o755, uid: 0, gid: 0, mtime: 5, entries: FormatTests.entries(0..<5000))
        let id = try store.putTree(tree)
        let head = try store.treeHead(id)
        let pages = try #require(head.pages)
        #expect(head.entries.isEmpty && head.count == 5000)
        #expect(head.subdirectoryCount == tree.entries.filter { $0.kind == .directory }.count)
        #expect(pages.count > 20, "about one page per 128 names")
        for p in pages.dropFirst() { #expect(Tree.startsPage(p.first)) }
        var whole = try store.tree(id)
        whole.pages = nil
        #expect(whole == tree)
        // A small directory stays in one object (version 1).
        let small = Tree(mode: 0o755, uid: 0, gid: 0, mtime: 5, entries: FormatTests.entries(0..<Tree.pagedAbove))
        #expect(try store.treeHead(try store.putTree(small)).pages == nil)
    }

    @Test func changesOverATreeGiveTheTreeWrittenWhole() throws {
        let store = ContentStore(objects: ObjectStore(blobs: MemoryBlobStore()))
        var rng = SystemRandomNumberGenerator()
        // Sizes cross the paging threshold both ways; changes hit first names of pages, names before
        // the first, runs of neighbouring pages and empty results.
        var current: [Int: TreeEntry] = [:]
        for e in FormatTests.entries(0..<1500) { current[Int(String(decoding: e.name.dropFirst(), as: UTF8.self))!] = e }
        var base = try store.putTree(Tree(mode: 0o755, uid: 0, gid: 0, mtime: 1, entries: Array(current.values)))
        var forms = Set<Int>()
        for round in 0..<60 {
            var changed: [Int: TreeEntry?] = [:]
            let pages = try store.treeHead(base).pages ?? []
            let firsts = pages.map { Int(String(decoding: $0.first.dropFirst(), as: UTF8.self))! }
            let count = round % 7 == 3 ? 600 : Int.random(in: 1...60, using: &rng)
            let shrinking = round / 15 % 2 == 0
            for _ in 0..<count {
                let pick = Int.random(in: 0..<6, using: &rng)
                // Phases of shrinking and growing take the directory across the paging threshold.
                if pick < (shrinking ? 5 : 1), !current.isEmpty {
                    let i = pick == 0 && !firsts.isEmpty ? firsts.randomElement(using: &rng)! : current.keys.randomElement(using: &rng)!
                    changed[i] = .some(nil)
                } else {
                    let i = Int.random(in: 0..<2600, using: &rng)
                    changed[i] = FormatTests.entries([i], stamp: Int64(round + 2))[0]
                }
            }
            for (i, e) in changed { current[i] = e }
            let changes: [TreeChange] = changed.map { (Array("f\($0.key)".utf8), $0.value) }.sorted { bytesPrecede($0.name, $1.name) }
            let attributes = Tree(mode: 0o700, uid: 1, gid: 2, mtime: Int64(round), entries: [])
            let incremental = try store.putTree(attributes, base: base, changes: changes)
            var whole = attributes
            whole.entries = Array(current.values).sorted { bytesPrecede($0.name, $1.name) }
            #expect(incremental == (try store.putTree(whole)), "round \(round): \(current.count) names")
            var read = try store.tree(incremental)
            read.pages = nil
            #expect(read == whole)
            base = incremental
            forms.insert(try store.treeHead(base).pages == nil ? 1 : 2)
        }
        #expect(forms == [1, 2], "the directory was stored in both forms")
    }

    @Test func aDamagedPageIsReportedNotServed() throws {
        let objects = ObjectStore(blobs: MemoryBlobStore())
        let id = try ContentStore(objects: objects).putTree(Tree(mode: 0o755, uid: 0, gid: 0, mtime: 5, entries: FormatTests.entries(0..<3000)))
        let page = try #require(try ContentStore(objects: objects).treeHead(id).pages?[3])
        // A page of another directory in its place (a valid object, the wrong one).
        let other = Tree.encodePage(FormatTests.entries(0..<3, stamp: 9)[...])
        try objects.remove(page.id)
        try other.withUnsafeBytes { try objects.put(page.id, .tree, $0) }
        #expect(throws: (any Error).self) { try ContentStore(objects: objects).tree(id) }
    }
}
