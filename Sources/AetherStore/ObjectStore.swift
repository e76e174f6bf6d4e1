#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import Synchronization

/// Immutable objects (chunks, manifests, trees) over a blob store, each named by the hash of its kind
/// and content.
///
/// An object's stored bytes are: magic `AEO`, format version 1, kind, compression (0 none, 1 zstd), the
/// raw length as 8 little-endian bytes, then the payload — the same on every backend. Every read
/// decompresses and re-hashes: an object whose bytes do not match its id is reported as damaged, never
/// returned.
public final class ObjectStore: Sendable {
    public static let formatVersion: UInt8 = 1
    static let magic: [UInt8] = Array("AEO".utf8)
    static let headerSize = 14

    /// Where the encoded objects live.
    public let blobs: any BlobStore
    private let writtenBytes = Atomic<Int64>(0), writtenObjects = Atomic<Int64>(0)
    private let readBytesCount = Atomic<Int64>(0), readObjects = Atomic<Int64>(0)
    /// Bytes this process has written to the store (objects as stored: headers, compressed payloads).
    public var written: Int64 { writtenBytes.load(ordering: .relaxed) }
    /// Objects this process wrote, and read (with their stored bytes).
    public var writtenCount: Int64 { writtenObjects.load(ordering: .relaxed) }
    public var readCount: Int64 { readObjects.load(ordering: .relaxed) }
    public var readBytes: Int64 { readBytesCount.load(ordering: .relaxed) }

    /// Objects over `blobs`. Damage is thrown, never logged here: the boundary that answers it logs it.
    public init(blobs: any BlobStore) {
        self.blobs = blobs
    }

    /// Objects in a directory on the local disk.
    public convenience init(directory: String) throws {
        self.init(blobs: try LocalBlobStore(directory: directory))
    }

    public func contains(_ id: ObjectID) throws -> Bool { try blobs.contains(id) }

    /// The ids of `ids` that are not stored (one batch).
    public func missing(of ids: [ObjectID]) throws -> [ObjectID] { try blobs.missing(of: ids) }

    /// Stores `content` as `kind` unless an object with its id exists; returns the id.
    /// Not durable until `sync()` returns.
    @discardableResult
    public func put(_ kind: ObjectKind, _ content: UnsafeRawBufferPointer) throws -> ObjectID {
        let id = ObjectID.of(kind, content)
        try put(id, kind, content)
        return id
    }

    @discardableResult
    public func put(_ kind: ObjectKind, _ content: [UInt8]) throws -> ObjectID {
        try content.withUnsafeBytes { (b) in try put(kind, b) }
    }

    /// Stores `content` under a precomputed id (the caller hashed it already).
    public func put(_ id: ObjectID, _ kind: ObjectKind, _ content: UnsafeRawBufferPointer) throws {
        if try blobs.contains(id) { return }
        try putMissing(id, kind, content)
    }

    /// Stores `content` under `id` without asking first: the caller found it missing (`missing(of:)`).
    public func putMissing(_ id: ObjectID, _ kind: ObjectKind, _ content: UnsafeRawBufferPointer) throws {
        let file = ObjectStore.encode(kind, content)
        try blobs.put(id, file)
        writtenBytes.add(Int64(file.count), ordering: .relaxed)
        writtenObjects.add(1, ordering: .relaxed)
    }

    /// An object's stored bytes: the header, then the content, compressed when that saves 1/32 or more.
    static func encode(_ kind: ObjectKind, _ content: UnsafeRawBufferPointer) -> [UInt8] {
        var file = ObjectStore.magic + [ObjectStore.formatVersion, kind.rawValue, 0]
        withUnsafeBytes(of: UInt64(content.count).littleEndian) { file += $0 }
        if content.count > 64, let packed = Zstd.compress(content), packed.count < content.count - content.count / 32 {
            file[5] = 1
            file += packed
        } else {
            file += content
        }
        return file
    }

    /// Reads, decompresses and verifies an object of the expected kind.
    public func get(_ id: ObjectID, _ kind: ObjectKind) throws -> [UInt8] {
        guard let file = try blobs.get(id) else { throw StoreError.missing(id) }
        readObjects.add(1, ordering: .relaxed)
        readBytesCount.add(Int64(file.count), ordering: .relaxed)
        return try ObjectStore.decode(file, id: id, expecting: kind).content
    }

    /// An object's stored bytes, as they are (what a sync sends; the receiver verifies them).
    public func stored(_ id: ObjectID) throws -> [UInt8] {
        guard let file = try blobs.get(id) else { throw StoreError.missing(id) }
        readObjects.add(1, ordering: .relaxed)
        readBytesCount.add(Int64(file.count), ordering: .relaxed)
        return file
    }

    /// Stores an object's stored bytes received from elsewhere, after decoding them and checking that
    /// they hash to `id`; returns its kind and content.
    @discardableResult
    public func putStored(_ id: ObjectID, _ file: [UInt8]) throws -> (kind: ObjectKind, content: [UInt8]) {
        let decoded = try ObjectStore.decode(file, id: id, expecting: nil)
        if try !blobs.contains(id) {
            try blobs.put(id, file)
            writtenBytes.add(Int64(file.count), ordering: .relaxed)
            writtenObjects.add(1, ordering: .relaxed)
        }
        return decoded
    }

    /// Decodes an object file and verifies it: its header, its kind (when one is expected), its
    /// length and its hash.
    public static func decode(_ file: [UInt8], id: ObjectID, expecting expected: ObjectKind?) throws -> (kind: ObjectKind, content: [UInt8]) {
        guard file.count >= ObjectStore.headerSize, Array(file[0..<3]) == ObjectStore.magic else {
            throw StoreError.damaged(id, "not an object file")
        }
        guard file[3] == ObjectStore.formatVersion else {
            throw StoreError.unsupportedFormat("object \(id.hex) has format \(file[3]); this aetherfs reads format \(ObjectStore.formatVersion)")
        }
        guard let kind = ObjectKind(rawValue: file[4]) else { throw StoreError.damaged(id, "holds unknown kind \(file[4])") }
        if let expected, kind != expected { throw StoreError.damaged(id, "holds kind \(file[4]), expected a \(expected.name)") }
        var raw: UInt64 = 0
        for i in 0..<8 { raw |= UInt64(file[6 + i]) << UInt64(8 * i) }
        guard raw <= 1 << 32 else { throw StoreError.damaged(id, "impossible length \(raw)") }
        let content: [UInt8]
        switch file[5] {
        case 0:
            content = Array(file[ObjectStore.headerSize...])
        case 1:
            guard let out = file.withUnsafeBytes({ Zstd.decompress(UnsafeRawBufferPointer(rebasing: $0[ObjectStore.headerSize...]), size: Int(raw)) }) else {
                throw StoreError.damaged(id, "zstd data does not decode")
            }
            content = out
        default:
            throw StoreError.damaged(id, "unknown compression \(file[5])")
        }
        guard content.count == Int(raw) else { throw StoreError.damaged(id, "length \(content.count) instead of \(raw)") }
        guard ObjectID.of(kind, content) == id else {
            throw StoreError.damaged(id, "content does not match its hash")
        }
        return (kind, content)
    }

    /// Makes every object put so far durable.
    public func sync() throws { try blobs.flush() }

    /// Removes an object (garbage collection only).
    public func remove(_ id: ObjectID) throws { try blobs.delete(id) }

    /// Number of stored objects and their bytes.
    public func usage() throws -> (objects: Int, bytes: Int64) { try blobs.usage() }
}
