import Crypto

/// The identity of a stored object: the SHA-256 of its kind, its length and its bytes.
///
/// A fixed-size value (four words), so it hashes, compares and sorts without allocating.
public struct ObjectID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var w0, w1, w2, w3: UInt64

    public init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        self.w0 = w0; self.w1 = w1; self.w2 = w2; self.w3 = w3
    }

    /// Reads 32 big-endian bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self = bytes.withUnsafeBytes { ObjectID(raw: $0) }
    }

    /// Reads 32 big-endian bytes.
    public init?(bytes: ArraySlice<UInt8>) {
        guard bytes.count == 32 else { return nil }
        self = bytes.withUnsafeBytes { ObjectID(raw: $0) }
    }

    /// Reads 32 big-endian bytes from a buffer of at least that size.
    public init(raw: UnsafeRawBufferPointer) {
        precondition(raw.count >= 32)
        self.init(w0: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                  w1: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                  w2: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                  w3: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
    }

    /// Parses 64 lowercase or uppercase hex digits.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = hexValue(utf8[i]), let lo = hexValue(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        self.init(bytes: out)
    }

    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 32) { buf, count in
            let raw = UnsafeMutableRawBufferPointer(buf)
            raw.storeBytes(of: w0.bigEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: w1.bigEndian, toByteOffset: 8, as: UInt64.self)
            raw.storeBytes(of: w2.bigEndian, toByteOffset: 16, as: UInt64.self)
            raw.storeBytes(of: w3.bigEndian, toByteOffset: 24, as: UInt64.self)
            count = 32
        }
    }

    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { hex }
    /// The first 12 hex digits, for people.
    public var short: String { String(hex.prefix(12)) }

    public static func < (a: ObjectID, b: ObjectID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    /// The identity of `content` stored as `kind`: SHA-256 over "aether-KIND LENGTH\0" and the content.
    public static func of(_ kind: ObjectKind, _ content: UnsafeRawBufferPointer) -> ObjectID {
        var hasher = SHA256()
        let header = Array("aether-\(kind.name) \(content.count)\0".utf8)
        header.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        hasher.update(bufferPointer: content)
        let digest = hasher.finalize()
        return digest.withUnsafeBytes { ObjectID(raw: $0) }
    }

    public static func of(_ kind: ObjectKind, _ content: [UInt8]) -> ObjectID {
        content.withUnsafeBytes { of(kind, $0) }
    }
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

/// What an object holds. The raw value is written into object files; never renumber.
public enum ObjectKind: UInt8, Sendable, CaseIterable {
    /// A piece of file content cut by the chunker.
    case chunk = 1
    /// A file's list of chunks.
    case manifest = 2
    /// A directory's sorted entries.
    case tree = 3

    public var name: String {
        switch self {
        case .chunk: "chunk"
        case .manifest: "manifest"
        case .tree: "tree"
        }
    }
}
