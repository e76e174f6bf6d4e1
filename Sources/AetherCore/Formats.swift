#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

/// The kinds of node a tree holds. Raw values are part of the tree format; never renumber.
public enum NodeKind: UInt8, Sendable {
    case file = 1, directory = 2, symlink = 3, fifo = 4, charDevice = 5, blockDevice = 6, socket = 7

    /// The `S_IFMT` bits of this kind.
    public var typeBits: UInt32 {
        switch self {
        case .file: 0o100000
        case .directory: 0o040000
        case .symlink: 0o120000
        case .fifo: 0o010000
        case .charDevice: 0o020000
        case .blockDevice: 0o060000
        case .socket: 0o140000
        }
    }

    public init?(typeBits mode: UInt32) {
        switch mode & 0o170000 {
        case 0o100000: self = .file
        case 0o040000: self = .directory
        case 0o120000: self = .symlink
        case 0o010000: self = .fifo
        case 0o020000: self = .charDevice
        case 0o060000: self = .blockDevice
        case 0o140000: self = .socket
        default: return nil
        }
    }
}

/// Extended attributes: names to values, encoded sorted by name.
public typealias XattrMap = [String: [UInt8]]

/// One entry of a tree. Subdirectories carry only name, kind and tree id; their attributes live in
/// their own tree. Times are nanoseconds since the epoch.
public struct TreeEntry: Equatable, Sendable {
    public var name: [UInt8]
    public var kind: NodeKind
    public var mode: UInt32 = 0
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var size: UInt64 = 0
    public var mtime: Int64 = 0
    public var nlink: UInt32 = 1
    public var rdev: UInt64 = 0
    public var linkGroup: UInt64 = 0
    public var target: [UInt8] = []
    /// A file's manifest or a directory's tree.
    public var content: ObjectID?
    public var xattrs: XattrMap = [:]

    public init(name: [UInt8], kind: NodeKind, mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0, size: UInt64 = 0,
                mtime: Int64 = 0, nlink: UInt32 = 1, rdev: UInt64 = 0, linkGroup: UInt64 = 0, target: [UInt8] = [],
                content: ObjectID? = nil, xattrs: XattrMap = [:]) {
        self.name = name; self.kind = kind; self.mode = mode; self.uid = uid; self.gid = gid; self.size = size
        self.mtime = mtime; self.nlink = nlink; self.rdev = rdev; self.linkGroup = linkGroup; self.target = target
        self.content = content; self.xattrs = xattrs
    }
}

/// A directory as stored: its own attributes and its entries sorted by name bytes.
///
/// Canonical binary form, version 1 (directories of up to `Tree.pagedAbove` entries): `AETR`, 1, mode
/// u32, uid u32, gid u32, mtime i64, xattrs, entry count (varint), then each entry: name (varint length +
/// bytes), kind u8, and for a directory its tree id (32 bytes); for other kinds mode, uid, gid u32, size
/// u64, mtime i64, nlink u32, rdev u64, link group u64, target, a content flag u8 with the 32-byte id,
/// xattrs. Integers are little-endian; xattrs are a varint count and name/value pairs sorted by name.
///
/// Version 2 (larger directories) keeps the entries in *pages*, separate tree objects, so that a change
/// to a few names rewrites a few pages and not the whole directory: `AETR`, 2, the same attributes, the
/// entry count and the subdirectory count (varints), the page count (varint), then per page its first
/// name (varint length + bytes), entry count and subdirectory count (varints) and id (32 bytes). A page
/// is `AETP`, 1, entry count (varint) and the entries as in version 1. A page starts at the directory's
/// first name and at every name for which `Tree.startsPage` holds, so the pages are a function of the
/// names alone: the same directory always has the same pages, whatever its history.
public struct Tree: Equatable, Sendable {
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: Int64
    public var xattrs: XattrMap
    public var entries: [TreeEntry]
    /// The pages of a version-2 tree (nil for version 1). A tree read with `ContentStore.treeHead`
    /// carries its pages and no entries; one read with `ContentStore.tree` carries both.
    public var pages: [TreePage]?

    public init(mode: UInt32, uid: UInt32, gid: UInt32, mtime: Int64, xattrs: XattrMap = [:], entries: [TreeEntry]) {
        self.mode = mode; self.uid = uid; self.gid = gid; self.mtime = mtime; self.xattrs = xattrs
        self.entries = entries.sorted { bytesPrecede($0.name, $1.name) }
    }

    public static let magic = Array("AETR".utf8)
    public static let pageMagic = Array("AETP".utf8)
    /// Directories with more entries than this are stored in pages (version 2).
    public static let pagedAbove = 1024

    /// Whether `name` begins a page: the top 7 bits of its FNV-1a 64-bit hash, mixed by MurmurHash3's
    /// 64-bit finalizer, are zero (one name in 128). Part of the format: never change.
    public static func startsPage(_ name: [UInt8]) -> Bool {
        var h = FNV1a.hash(name)
        h ^= h >> 33; h = h &* 0xff51_afd7_ed55_8ccd
        h ^= h >> 33; h = h &* 0xc4ce_b9fe_1a85_ec53
        h ^= h >> 33
        return h >> 57 == 0
    }

    /// The number of subdirectories (the directory's link count is two more).
    public var subdirectoryCount: Int {
        if let pages { return pages.reduce(0) { $0 + $1.subdirs } }
        return entries.reduce(0) { $0 + ($1.kind == .directory ? 1 : 0) }
    }

    /// The number of entries.
    public var count: Int { pages.map { $0.reduce(0) { $0 + $1.count } } ?? entries.count }

    /// Version 1 of this tree (its entries inline).
    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.out.reserveCapacity(64 + entries.count * 100)
        w.bytes(Tree.magic); w.u8(1)
        encodeAttributes(&w)
        Tree.encodeEntries(entries[...], into: &w)
        return w.out
    }

    /// Version 2 of this tree: its attributes and its pages (which are stored separately).
    public func encodeIndex(_ pages: [TreePage]) -> [UInt8] {
        var w = ByteWriter()
        w.bytes(Tree.magic); w.u8(2)
        encodeAttributes(&w)
        w.varint(UInt64(pages.reduce(0) { $0 + $1.count }))
        w.varint(UInt64(pages.reduce(0) { $0 + $1.subdirs }))
        w.varint(UInt64(pages.count))
        for p in pages { w.blob(p.first); w.varint(UInt64(p.count)); w.varint(UInt64(p.subdirs)); w.bytes(p.id.bytes) }
        return w.out
    }

    private func encodeAttributes(_ w: inout ByteWriter) {
        w.u32(mode); w.u32(uid); w.u32(gid); w.i64(mtime); w.xattrs(xattrs)
    }

    /// One page: `AETP`, 1, its entries.
    public static func encodePage(_ entries: ArraySlice<TreeEntry>) -> [UInt8] {
        var w = ByteWriter()
        w.out.reserveCapacity(16 + entries.count * 100)
        w.bytes(pageMagic); w.u8(1)
        encodeEntries(entries, into: &w)
        return w.out
    }

    static func encodeEntries(_ entries: ArraySlice<TreeEntry>, into w: inout ByteWriter) {
        w.varint(UInt64(entries.count))
        for e in entries {
            w.blob(e.name); w.u8(e.kind.rawValue)
            if e.kind == .directory {
                w.bytes(e.content?.bytes ?? [UInt8](repeating: 0, count: 32))
                continue
            }
            w.u32(e.mode); w.u32(e.uid); w.u32(e.gid); w.u64(e.size); w.i64(e.mtime); w.u32(e.nlink)
            w.u64(e.rdev); w.u64(e.linkGroup); w.blob(e.target)
            if let c = e.content { w.u8(1); w.bytes(c.bytes) } else { w.u8(0) }
            w.xattrs(e.xattrs)
        }
    }

    static func decodeEntries(_ r: inout ByteReader, limit: Int) throws -> [TreeEntry] {
        let count = try r.varint()
        guard count <= UInt64(limit) else { throw FormatError("impossible entry count") }
        var entries: [TreeEntry] = []
        entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            let name = try r.blob()
            guard let kind = NodeKind(rawValue: try r.u8()) else { throw FormatError("unknown node kind") }
            var e = TreeEntry(name: name, kind: kind)
            if kind == .directory {
                e.content = try r.id()
            } else {
                e.mode = try r.u32(); e.uid = try r.u32(); e.gid = try r.u32(); e.size = try r.u64()
                e.mtime = try r.i64(); e.nlink = try r.u32(); e.rdev = try r.u64(); e.linkGroup = try r.u64()
                e.target = try r.blob()
                if try r.u8() == 1 { e.content = try r.id() }
                e.xattrs = try r.xattrs()
            }
            if let last = entries.last, !bytesPrecede(last.name, e.name) { throw FormatError("tree entries out of order") }
            entries.append(e)
        }
        return entries
    }

    /// Decodes a tree object: a version-1 tree with its entries, or a version-2 tree's attributes and
    /// pages (no entries).
    public static func decode(_ data: [UInt8]) throws -> Tree {
        var r = ByteReader(data)
        guard try r.bytes(4) == magic else { throw FormatError("not a tree") }
        let version = try r.u8()
        guard version == 1 || version == 2 else { throw FormatError("tree format \(version) is newer than this aetherfs reads (2)") }
        let mode = try r.u32(), uid = try r.u32(), gid = try r.u32(), mtime = try r.i64()
        let xattrs = try r.xattrs()
        var t = Tree(mode: mode, uid: uid, gid: gid, mtime: mtime, xattrs: xattrs, entries: [])
        if version == 1 {
            t.entries = try decodeEntries(&r, limit: data.count)
        } else {
            let count = try r.varint(), subdirs = try r.varint(), pageCount = try r.varint()
            guard pageCount <= UInt64(data.count) else { throw FormatError("impossible page count") }
            var pages: [TreePage] = []
            pages.reserveCapacity(Int(pageCount))
            for _ in 0..<pageCount {
                let first = try r.blob()
                let n = try r.varint(), d = try r.varint()
                guard n > 0, n <= UInt64(Int32.max), d <= n else { throw FormatError("impossible page size") }
                if let last = pages.last, !bytesPrecede(last.first, first) { throw FormatError("tree pages out of order") }
                pages.append(TreePage(first: first, count: Int(n), subdirs: Int(d), id: try r.id()))
            }
            guard UInt64(pages.reduce(0) { $0 + $1.count }) == count, UInt64(pages.reduce(0) { $0 + $1.subdirs }) == subdirs else {
                throw FormatError("tree pages do not add up to its entry count")
            }
            t.pages = pages
        }
        guard r.atEnd else { throw FormatError("trailing bytes after tree") }
        return t
    }

    /// Decodes one page and checks it against the index's description of it.
    public static func decodePage(_ data: [UInt8], as page: TreePage) throws -> [TreeEntry] {
        let entries = try decodePageEntries(data)
        guard entries.count == page.count, entries.first?.name == page.first,
              entries.reduce(0, { $0 + ($1.kind == .directory ? 1 : 0) }) == page.subdirs else {
            throw FormatError("tree page differs from its index")
        }
        return entries
    }

    /// A page's entries, without an index to check them against (a page received before its head).
    public static func decodePageEntries(_ data: [UInt8]) throws -> [TreeEntry] {
        var r = ByteReader(data)
        guard try r.bytes(4) == pageMagic else { throw FormatError("not a tree page") }
        let version = try r.u8()
        guard version == 1 else { throw FormatError("tree page format \(version) is newer than this aetherfs reads (1)") }
        let entries = try decodeEntries(&r, limit: data.count)
        guard r.atEnd else { throw FormatError("trailing bytes after tree page") }
        return entries
    }

    /// Whether an object's content is a page of a paged tree.
    public static func isPage(_ data: [UInt8]) -> Bool { data.count >= 4 && Array(data[0..<4]) == pageMagic }

    /// Cuts sorted entries into pages: one starts at the first entry and at every name that `startsPage`.
    public static func pageRanges(_ entries: ArraySlice<TreeEntry>) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = entries.startIndex
        for i in entries.indices where i > start && startsPage(entries[i].name) {
            ranges.append(start..<i)
            start = i
        }
        if start < entries.endIndex { ranges.append(start..<entries.endIndex) }
        return ranges
    }
}

/// One page of a version-2 tree, as its index describes it.
public struct TreePage: Equatable, Sendable {
    public var first: [UInt8]
    public var count: Int
    public var subdirs: Int
    public var id: ObjectID
    public init(first: [UInt8], count: Int, subdirs: Int, id: ObjectID) {
        self.first = first; self.count = count; self.subdirs = subdirs; self.id = id
    }
}

/// A file's content: its size and its chunks in order. A chunk id of all zeros is a hole of zeros.
///
/// Binary form, version 1: `AEMF`, 1, size u64, count varint, then per chunk the 32-byte id and its
/// length u32.
public struct Manifest: Equatable, Sendable {
    public static let hole = ObjectID(w0: 0, w1: 0, w2: 0, w3: 0)
    public var size: UInt64
    public var chunks: [(id: ObjectID, length: UInt32)]

    public init(size: UInt64, chunks: [(id: ObjectID, length: UInt32)]) {
        self.size = size; self.chunks = chunks
    }

    public static func == (a: Manifest, b: Manifest) -> Bool {
        a.size == b.size && a.chunks.elementsEqual(b.chunks) { $0.id == $1.id && $0.length == $1.length }
    }

    public static let magic = Array("AEMF".utf8)

    /// The longest hole one chunk entry holds.
    public static let longestHole: UInt64 = 1 << 30

    /// Appends `length` bytes of hole to `chunks` in the one form every writer uses: a run of holes
    /// (a sparse gap, zero chunks, or both side by side) is entries of `longestHole` and one shorter
    /// last, whatever it was made of. So a file's manifest follows from its bytes and its data ranges
    /// alone (an archive's sparse map gives back the same manifest its export came from).
    public static func appendHole(_ length: UInt64, to chunks: inout [(id: ObjectID, length: UInt32)]) {
        var left = length
        if left > 0, let last = chunks.last, last.id == hole, UInt64(last.length) < longestHole {
            let more = min(left, longestHole - UInt64(last.length))
            chunks[chunks.count - 1].length += UInt32(more)
            left -= more
        }
        while left > 0 {
            let piece = min(left, longestHole)
            chunks.append((hole, UInt32(piece)))
            left -= piece
        }
    }

    /// The ranges of a file that hold data: maximal runs of chunks that are not holes.
    public var dataRanges: [Range<UInt64>] {
        var out: [Range<UInt64>] = []
        var at: UInt64 = 0
        for c in chunks {
            let end = at + UInt64(c.length)
            if c.id != Manifest.hole {
                if let last = out.last, last.upperBound == at { out[out.count - 1] = last.lowerBound..<end } else { out.append(at..<end) }
            }
            at = end
        }
        return out
    }

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.bytes(Manifest.magic); w.u8(1); w.u64(size); w.varint(UInt64(chunks.count))
        for c in chunks { w.bytes(c.id.bytes); w.u32(c.length) }
        return w.out
    }

    public static func decode(_ data: [UInt8]) throws -> Manifest {
        var r = ByteReader(data)
        guard try r.bytes(4) == magic else { throw FormatError("not a manifest") }
        let version = try r.u8()
        guard version == 1 else { throw FormatError("manifest format \(version) is newer than this aetherfs reads (1)") }
        let size = try r.u64()
        let count = try r.varint()
        guard count <= UInt64(data.count) else { throw FormatError("impossible chunk count") }
        var chunks: [(id: ObjectID, length: UInt32)] = []
        chunks.reserveCapacity(Int(count))
        var total: UInt64 = 0
        for _ in 0..<count {
            let id = try r.id()
            let len = try r.u32()
            total += UInt64(len)
            chunks.append((id, len))
        }
        guard total == size, r.atEnd else { throw FormatError("manifest chunks do not add up to its size") }
        return Manifest(size: size, chunks: chunks)
    }
}

extension RandomAccessCollection {
    /// The index of the first element for which `belongs` is false, when it holds for a prefix only
    /// (a binary search).
    @inlinable
    public func partitionPoint(_ belongs: (Element) throws -> Bool) rethrows -> Index {
        var lo = startIndex, n = count
        while n > 0 {
            let half = n / 2
            let mid = index(lo, offsetBy: half)
            if try belongs(self[mid]) { lo = index(after: mid); n -= half + 1 } else { n = half }
        }
        return lo
    }
}

/// Whether `a` sorts before `b` as unsigned bytes (the order of tree entries).
@inline(__always)
func bytesPrecede(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            let n = min(pa.count, pb.count)
            let c = n == 0 ? 0 : memcmp(pa.baseAddress!, pb.baseAddress!, n)
            return c != 0 ? c < 0 : pa.count < pb.count
        }
    }
}

public struct FormatError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

public struct ByteWriter {
    public var out: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { out.append(v) }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func bytes(_ b: [UInt8]) { out += b }
    public mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }
    public mutating func blob(_ b: [UInt8]) { varint(UInt64(b.count)); out += b }
    public mutating func xattrs(_ x: XattrMap) {
        varint(UInt64(x.count))
        for name in x.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            blob(Array(name.utf8)); blob(x[name]!)
        }
    }
}

public struct ByteReader {
    let data: [UInt8]
    var pos = 0
    public init(_ d: [UInt8]) { data = d }
    public var atEnd: Bool { pos == data.count }
    public mutating func bytes(_ n: Int) throws -> [UInt8] {
        guard n >= 0, data.count - pos >= n else { throw FormatError("truncated object") }
        defer { pos += n }
        return Array(data[pos..<pos + n])
    }
    public mutating func u8() throws -> UInt8 {
        guard pos < data.count else { throw FormatError("truncated object") }
        defer { pos += 1 }
        return data[pos]
    }
    public mutating func u32() throws -> UInt32 { UInt32(littleEndian: try load(UInt32.self)) }
    public mutating func u64() throws -> UInt64 { UInt64(littleEndian: try load(UInt64.self)) }
    public mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    /// A 32-byte object id.
    public mutating func id() throws -> ObjectID {
        guard data.count - pos >= 32 else { throw FormatError("truncated object") }
        defer { pos += 32 }
        return data.withUnsafeBytes { ObjectID(raw: UnsafeRawBufferPointer(rebasing: $0[pos..<pos + 32])) }
    }
    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let n = MemoryLayout<T>.size
        guard data.count - pos >= n else { throw FormatError("truncated object") }
        defer { pos += n }
        return data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: pos, as: T.self) }
    }
    public mutating func varint() throws -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            guard shift < 64 else { throw FormatError("varint too long") }
            v |= UInt64(b & 0x7f) << shift
            if b < 0x80 { return v }
            shift += 7
        }
    }
    public mutating func blob() throws -> [UInt8] {
        let n = try varint()
        guard n <= UInt64(data.count - pos) else { throw FormatError("truncated object") }
        return try bytes(Int(n))
    }
    public mutating func xattrs() throws -> XattrMap {
        let n = try varint()
        var x: XattrMap = [:]
        for _ in 0..<n {
            let name = String(decoding: try blob(), as: UTF8.self)
            x[name] = try blob()
        }
        return x
    }
}

/// Encodes extended attributes for a node row.
public func encodeXattrs(_ x: XattrMap) -> [UInt8] {
    if x.isEmpty { return [] }
    var w = ByteWriter(); w.xattrs(x); return w.out
}

public func decodeXattrs(_ b: [UInt8]) -> XattrMap {
    if b.isEmpty { return [:] }
    var r = ByteReader(b)
    return (try? r.xattrs()) ?? [:]
}
