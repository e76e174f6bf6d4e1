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
/// Canonical binary form, version 1: `AETR`, 1, mode u32, uid u32, gid u32, mtime i64, xattrs, entry
/// count (varint), then each entry: name (varint length + bytes), kind u8, and for a directory its tree
/// id (32 bytes); for other kinds mode, uid, gid u32, size u64, mtime i64, nlink u32, rdev u64,
/// link group u64, target, a content flag u8 with the 32-byte id, xattrs. Integers are little-endian;
/// xattrs are a varint count and name/value pairs sorted by name.
public struct Tree: Equatable, Sendable {
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: Int64
    public var xattrs: XattrMap
    public var entries: [TreeEntry]

    public init(mode: UInt32, uid: UInt32, gid: UInt32, mtime: Int64, xattrs: XattrMap = [:], entries: [TreeEntry]) {
        self.mode = mode; self.uid = uid; self.gid = gid; self.mtime = mtime; self.xattrs = xattrs
        self.entries = entries.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    public static let magic = Array("AETR".utf8)

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.bytes(Tree.magic); w.u8(1)
        w.u32(mode); w.u32(uid); w.u32(gid); w.i64(mtime); w.xattrs(xattrs)
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
        return w.out
    }

    public static func decode(_ data: [UInt8]) throws -> Tree {
        var r = ByteReader(data)
        guard try r.bytes(4) == magic else { throw FormatError("not a tree") }
        let version = try r.u8()
        guard version == 1 else { throw FormatError("tree format \(version) is newer than this aetherfs reads (1)") }
        let mode = try r.u32(), uid = try r.u32(), gid = try r.u32(), mtime = try r.i64()
        let xattrs = try r.xattrs()
        let count = try r.varint()
        guard count <= UInt64(data.count) else { throw FormatError("impossible entry count") }
        var entries: [TreeEntry] = []
        entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            let name = try r.blob()
            guard let kind = NodeKind(rawValue: try r.u8()) else { throw FormatError("unknown node kind") }
            var e = TreeEntry(name: name, kind: kind)
            if kind == .directory {
                e.content = ObjectID(bytes: try r.bytes(32))
            } else {
                e.mode = try r.u32(); e.uid = try r.u32(); e.gid = try r.u32(); e.size = try r.u64()
                e.mtime = try r.i64(); e.nlink = try r.u32(); e.rdev = try r.u64(); e.linkGroup = try r.u64()
                e.target = try r.blob()
                if try r.u8() == 1 { e.content = ObjectID(bytes: try r.bytes(32)) }
                e.xattrs = try r.xattrs()
            }
            entries.append(e)
        }
        guard r.atEnd else { throw FormatError("trailing bytes after tree") }
        var t = Tree(mode: mode, uid: uid, gid: gid, mtime: mtime, xattrs: xattrs, entries: [])
        t.entries = entries
        return t
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
            let id = ObjectID(bytes: try r.bytes(32))!
            let len = try r.u32()
            total += UInt64(len)
            chunks.append((id, len))
        }
        guard total == size, r.atEnd else { throw FormatError("manifest chunks do not add up to its size") }
        return Manifest(size: size, chunks: chunks)
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
    public mutating func u8() throws -> UInt8 { try bytes(1)[0] }
    public mutating func u32() throws -> UInt32 {
        let b = try bytes(4)
        return b.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    public mutating func u64() throws -> UInt64 {
        let b = try bytes(8)
        return b.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
    public mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
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
