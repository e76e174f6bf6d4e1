import AetherModel
import Synchronization

/// Where objects' bytes live: a directory on the local disk, memory (tests) and, later, an S3 bucket.
///
/// A backend keeps immutable byte strings named by `ObjectID` and nothing more: it does not encode,
/// compress or verify (`ObjectStore` does, the same way over every backend). Putting an id that is
/// already stored is allowed and changes nothing readable (the bytes are the same). Every call may be
/// made from several threads at once. Errors are `StoreError`s.
public protocol BlobStore: AnyObject, Sendable {
    /// The bytes stored under `id`, or nil when nothing is.
    func get(_ id: ObjectID) throws -> [UInt8]?
    /// Stores `bytes` under `id`. Not durable until `flush()` returns.
    func put(_ id: ObjectID, _ bytes: [UInt8]) throws
    /// The ids of `ids` that are not stored, in their order: one round trip for a whole batch on a
    /// remote store.
    func missing(of ids: [ObjectID]) throws -> [ObjectID]
    /// Whether `id` is stored.
    func contains(_ id: ObjectID) throws -> Bool
    /// Calls `body` with every stored id and its stored size in bytes, in no set order.
    func list(_ body: (ObjectID, Int64) throws -> Void) throws
    /// Removes `id`; removing what is not stored is not an error.
    func delete(_ id: ObjectID) throws
    /// Makes every put so far durable.
    func flush() throws
    /// Bytes that can still be put before the backend is full, or nil when it has no near limit.
    func available() -> Int64?

    // Garbage collection moves an object aside before it deletes it, in a later step, only if still
    // nothing references it: `get` still finds a condemned object (a reader of a snapshot that reaches
    // it is never denied); `missing`, `contains` and `list` do not (a writer that needs it writes it anew).

    /// Calls `body` with every stored (not condemned) id, its size and when it was written (seconds).
    func listAged(_ body: (ObjectID, Int64, Double) throws -> Void) throws
    /// Moves `id` aside; condemning what is not stored is not an error.
    func condemn(_ id: ObjectID) throws
    /// Puts a condemned object back among the stored ones.
    func resurrect(_ id: ObjectID) throws
    /// Calls `body` with every condemned id, its size and when it was condemned.
    func listCondemned(_ body: (ObjectID, Int64, Double) throws -> Void) throws
    /// Removes a condemned object for good.
    func purge(_ id: ObjectID) throws
    /// Frees what removed objects leave inside larger units (a packed store's packs), touching none
    /// younger than `minAge` seconds: called by gc after it purged.
    func reclaimSpace(minAge: Double) throws -> ReclaimReport
    /// The requests made to a remote backend since it was opened; nil for a local one.
    var requests: RequestCounts? { get }
}

/// Counters of a remote backend's traffic: requests by kind, and bytes sent and received.
public struct RequestCounts: Sendable, Equatable, Codable {
    public var puts = 0, gets = 0, deletes = 0, lists = 0
    public var bytesSent: Int64 = 0, bytesReceived: Int64 = 0
    public init() {}
    public var total: Int { puts + gets + deletes + lists }
    enum CodingKeys: String, CodingKey {
        case puts, gets, deletes, lists, bytesSent = "bytes_sent", bytesReceived = "bytes_received"
    }
}

/// What `reclaimSpace` freed: packs deleted (nothing in them was indexed), packs rewritten (mostly
/// garbage: their live objects copied into new ones), and the bytes of storage freed.
public struct ReclaimReport: Sendable, Equatable {
    public var deleted = 0, rewritten = 0
    public var freed: Int64 = 0
    public init() {}
}

extension BlobStore {
    /// Backends that keep one unit per object free everything when they purge.
    public func reclaimSpace(minAge: Double) throws -> ReclaimReport { ReclaimReport() }
    public var requests: RequestCounts? { nil }

    public func contains(_ id: ObjectID) throws -> Bool { try missing(of: [id]).isEmpty }

    /// The number of stored objects and their bytes.
    public func usage() throws -> (objects: Int, bytes: Int64) {
        var count = 0
        var bytes: Int64 = 0
        try list { _, size in count += 1; bytes += size }
        return (count, bytes)
    }
}

/// Objects in memory: the backend of unit tests, and the reference the other backends' conformance
/// tests compare with. `capacity` (bytes) makes puts beyond it fail with `noSpace`, as a full disk does.
public final class MemoryBlobStore: BlobStore {
    private struct State {
        var blobs: [ObjectID: [UInt8]] = [:]
        var written: [ObjectID: Double] = [:]
        var condemned: [ObjectID: (bytes: [UInt8], since: Double)] = [:]
        var used: Int64 = 0
    }
    private let state = Mutex(State())
    private let capacity: Int64?

    public init(capacity: Int64? = nil) { self.capacity = capacity }

    public func get(_ id: ObjectID) throws -> [UInt8]? { state.withLock { $0.blobs[id] ?? $0.condemned[id]?.bytes } }

    public func put(_ id: ObjectID, _ bytes: [UInt8]) throws {
        try state.withLock { (s) throws(StoreError) in
            if s.blobs[id] != nil { return }
            if let capacity, s.used + Int64(bytes.count) > capacity {
                throw .noSpace("\(capacity - s.used) of \(capacity) bytes left in memory")
            }
            s.blobs[id] = bytes
            s.written[id] = secondsNow()
            s.used += Int64(bytes.count)
        }
    }

    public func listAged(_ body: (ObjectID, Int64, Double) throws -> Void) throws {
        let s = state.withLock { $0 }
        for (id, bytes) in s.blobs { try body(id, Int64(bytes.count), s.written[id] ?? 0) }
    }

    public func condemn(_ id: ObjectID) throws {
        state.withLock { s in
            guard let b = s.blobs.removeValue(forKey: id) else { return }
            s.condemned[id] = (b, secondsNow())
        }
    }

    public func resurrect(_ id: ObjectID) throws {
        state.withLock { s in
            guard let c = s.condemned.removeValue(forKey: id) else { return }
            if s.blobs[id] == nil { s.blobs[id] = c.bytes; s.written[id] = secondsNow() }
        }
    }

    public func listCondemned(_ body: (ObjectID, Int64, Double) throws -> Void) throws {
        for (id, c) in state.withLock({ $0.condemned }) { try body(id, Int64(c.bytes.count), c.since) }
    }

    public func purge(_ id: ObjectID) throws {
        state.withLock { s in if let c = s.condemned.removeValue(forKey: id) { s.used -= Int64(c.bytes.count) } }
    }

    /// Sets when an object was written (tests of the safety window).
    public func age(_ id: ObjectID, writtenAt time: Double) { state.withLock { $0.written[id] = time } }

    public func missing(of ids: [ObjectID]) throws -> [ObjectID] { state.withLock { s in ids.filter { s.blobs[$0] == nil } } }

    public func contains(_ id: ObjectID) throws -> Bool { state.withLock { $0.blobs[id] != nil } }

    public func list(_ body: (ObjectID, Int64) throws -> Void) throws {
        for (id, bytes) in state.withLock({ $0.blobs }) { try body(id, Int64(bytes.count)) }
    }

    public func delete(_ id: ObjectID) throws {
        state.withLock { s in
            if let old = s.blobs.removeValue(forKey: id) { s.used -= Int64(old.count) }
        }
    }

    public func flush() throws {}

    public func available() -> Int64? { capacity.map { c in state.withLock { c - $0.used } } }

    /// Replaces the bytes under `id` as they are (tests of damaged stores).
    public func overwrite(_ id: ObjectID, _ bytes: [UInt8]) {
        state.withLock { s in
            s.used += Int64(bytes.count) - Int64(s.blobs[id]?.count ?? 0)
            s.blobs[id] = bytes
        }
    }
}
