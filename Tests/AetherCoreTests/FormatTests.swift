import Testing
@testable import AetherCore
import AetherStore

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
        newer[4] = 2
        #expect(throws: FormatError.self) { try Tree.decode(newer) }
        #expect(throws: FormatError.self) { try Manifest.decode(Manifest(size: 3, chunks: []).encode()) }
    }
}
