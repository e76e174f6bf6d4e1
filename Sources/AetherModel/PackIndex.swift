import Synchronization

/// Where each object of a packed store lives: which pack, at which offset, how long, when it was written
/// and whether garbage collection has condemned it.
///
/// A packed store (objects on S3-compatible storage) writes objects into packs of many objects, and
/// keeps this index in the metadata — the local `meta.db`, or the shared database that several hosts
/// use — so that every host sees one answer to "is this object stored?" and a condemnation made by one
/// host's gc is seen by every other host's writers.
public struct PackedObject: Sendable, Equatable {
    public var id: ObjectID
    /// The pack's name (its key under the store's prefix is `packs/NAME`).
    public var pack: String
    public var offset: Int64
    public var length: Int64
    /// When it was written (seconds since the epoch).
    public var written: Double
    /// When gc condemned it, or nil when it is stored.
    public var condemned: Double?

    public init(id: ObjectID, pack: String, offset: Int64, length: Int64, written: Double, condemned: Double? = nil) {
        self.id = id
        self.pack = pack
        self.offset = offset
        self.length = length
        self.written = written
        self.condemned = condemned
    }
}

/// One pack: its name, its size in bytes and when it was uploaded.
public struct PackRecord: Sendable, Equatable {
    public var name: String
    public var bytes: Int64
    public var created: Double
    public init(name: String, bytes: Int64, created: Double) {
        self.name = name
        self.bytes = bytes
        self.created = created
    }
}

/// The index of a packed store. Every call may be made from several threads at once.
public protocol PackIndex: AnyObject, Sendable {
    /// The entries of those of `ids` that are indexed (condemned ones too).
    func locate(_ ids: [ObjectID]) throws -> [ObjectID: PackedObject]
    /// Records an uploaded pack and its objects in one transaction; an object another pack already
    /// holds keeps its first entry (this pack's copy is garbage for compaction), unless that entry is
    /// condemned: then the new copy replaces it, stored again.
    func insertPack(_ pack: PackRecord, _ objects: [PackedObject]) throws
    /// Calls `body` with every entry, in no set order.
    func forEachObject(_ body: (PackedObject) throws -> Void) throws
    /// The entries that point into `pack`, by offset.
    func objects(inPack pack: String) throws -> [PackedObject]
    /// Every pack, with the bytes of its entries that are still indexed.
    func packs() throws -> [(pack: PackRecord, liveBytes: Int64, liveObjects: Int)]
    /// Sets or clears (`at` nil) an entry's condemnation.
    func setCondemned(_ id: ObjectID, at: Double?) throws
    /// Removes an entry (its bytes stay in their pack until compaction).
    func removeObject(_ id: ObjectID) throws
    /// Points entries at their copies in another pack (compaction); `objects` hold the new places.
    func moveObjects(_ objects: [PackedObject]) throws
    /// Forgets a pack (once its object is deleted).
    func removePack(_ name: String) throws
}

/// A pack index in memory: unit tests' and the reference the database ones are held to.
public final class MemoryPackIndex: PackIndex {
    private struct State {
        var entries: [ObjectID: PackedObject] = [:]
        var packs: [String: PackRecord] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    public func locate(_ ids: [ObjectID]) throws -> [ObjectID: PackedObject] {
        state.withLock { s in var out: [ObjectID: PackedObject] = [:]; for id in ids { out[id] = s.entries[id] }; return out }
    }

    public func insertPack(_ pack: PackRecord, _ objects: [PackedObject]) throws {
        state.withLock { s in
            s.packs[pack.name] = pack
            for o in objects where s.entries[o.id] == nil || s.entries[o.id]!.condemned != nil { s.entries[o.id] = o }
        }
    }

    public func forEachObject(_ body: (PackedObject) throws -> Void) throws {
        for o in state.withLock({ Array($0.entries.values) }) { try body(o) }
    }

    public func objects(inPack pack: String) throws -> [PackedObject] {
        state.withLock { $0.entries.values.filter { $0.pack == pack }.sorted { $0.offset < $1.offset } }
    }

    public func packs() throws -> [(pack: PackRecord, liveBytes: Int64, liveObjects: Int)] {
        state.withLock { s in
            var live: [String: (bytes: Int64, count: Int)] = [:]
            for o in s.entries.values { live[o.pack, default: (0, 0)].bytes += o.length; live[o.pack, default: (0, 0)].count += 1 }
            return s.packs.values.sorted { $0.name < $1.name }.map { ($0, live[$0.name]?.bytes ?? 0, live[$0.name]?.count ?? 0) }
        }
    }

    public func setCondemned(_ id: ObjectID, at: Double?) throws { state.withLock { $0.entries[id]?.condemned = at } }

    public func removeObject(_ id: ObjectID) throws { state.withLock { _ = $0.entries.removeValue(forKey: id) } }

    public func moveObjects(_ objects: [PackedObject]) throws {
        state.withLock { s in for o in objects where s.entries[o.id] != nil { s.entries[o.id] = o } }
    }

    public func removePack(_ name: String) throws { state.withLock { _ = $0.packs.removeValue(forKey: name) } }
}
