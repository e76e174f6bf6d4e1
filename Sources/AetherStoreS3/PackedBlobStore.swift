#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import AetherModel
import AetherStore

/// Objects on object storage, many to a pack: one PUT per pack of up to `packBytes` (16 MiB) instead of
/// one per 64 KiB chunk, and ranged GETs that fetch nearby objects of a pack together into a local disk
/// cache.
///
/// A pack is the key `packs/NAME` (NAME: 32 random hex digits): its objects' stored bytes one after
/// another, then a table of (id 32 bytes, offset and length 8 bytes little-endian each) per object,
/// the count (8 bytes) and `AETHERPK` — so a pack describes itself. Where each object is lives in the
/// `PackIndex` (the metadata), written after the pack is uploaded: an object is stored once its pack is
/// uploaded and its entry committed. Puts gather into the open pack in memory (readable at once);
/// a full pack uploads in the background, at most `uploadsInFlight` at a time; `flush` uploads the rest
/// and waits. A pack whose upload fails stays in memory and is tried again by the next `flush`.
///
/// Garbage collection condemns, resurrects and purges index entries; `reclaim` deletes packs nothing
/// is indexed in and rewrites those mostly garbage.
public final class PackedBlobStore: BlobStore {
    public let bucket: any ObjectBucket
    public let index: any PackIndex
    let cache: DiskCache?
    let packBytes: Int
    let readAhead: Int64
    let uploadsInFlight: Int

    static let trailerMagic = Array("AETHERPK".utf8)

    /// A pack being filled or uploaded: its objects' bytes and where each is.
    final class Pack: @unchecked Sendable {
        let name: String
        var data: [UInt8] = []
        var entries: [(ObjectID, Int64, Int64)] = []
        var failure: StoreError?
        /// Set while its upload runs (under the store's lock).
        var busy = false
        init() {
            var r = SystemRandomNumberGenerator()
            name = (0..<2).map { _ in String(r.next() as UInt64, radix: 16).leftPadded(16) }.joined()
        }
    }

    private struct State {
        var open = Pack()
        /// Sealed packs not yet indexed, by name: uploading, or failed and waiting for a flush.
        var sealed: [String: Pack] = [:]
        /// Where each object of the open and sealed packs is.
        var pending: [ObjectID: (pack: Pack, offset: Int, length: Int)] = [:]
        var uploading = 0
    }
    private let state = Mutex(State())

    /// A ranged GET of a pack under way: readers of what it covers wait for it instead of fetching again.
    final class Flight: Sendable {
        let pack: String
        let range: Range<Int64>
        let done = DispatchGroup()
        init(pack: String, range: Range<Int64>) { self.pack = pack; self.range = range; done.enter() }
    }
    private let flights = Mutex<[Flight]>([])
    private let idle = DispatchSemaphore(value: 0)
    private let queue = DispatchQueue(label: "aetherfs.packs", attributes: .concurrent)

    public init(bucket: any ObjectBucket, index: any PackIndex, cache: DiskCache?, packBytes: Int = 16 << 20,
                readAhead: Int64 = 4 << 20, uploadsInFlight: Int = 4) {
        self.bucket = bucket
        self.index = index
        self.cache = cache
        self.packBytes = packBytes
        self.readAhead = readAhead
        self.uploadsInFlight = uploadsInFlight
    }

    static func key(_ pack: String) -> String { "packs/" + pack }

    // MARK: writing

    public func put(_ id: ObjectID, _ bytes: [UInt8]) throws {
        let full: Pack? = try state.withLock { (s) throws(StoreError) in
            if s.pending[id] != nil { return nil }
            // While object storage cannot be reached, puts stop once 256 MiB wait in memory.
            let failed = s.sealed.values.filter { $0.failure != nil }
            if failed.reduce(0, { $0 + $1.data.count }) >= 256 << 20, let failure = failed.first?.failure { throw failure }
            let p = s.open
            s.pending[id] = (p, p.data.count, bytes.count)
            p.entries.append((id, Int64(p.data.count), Int64(bytes.count)))
            p.data += bytes
            guard p.data.count >= packBytes else { return nil }
            s.sealed[p.name] = p
            s.open = Pack()
            return p
        }
        if let full { try startUpload(full) }
    }

    /// Uploads `pack` in the background, after waiting while `uploadsInFlight` are (memory stays bounded).
    private func startUpload(_ pack: Pack) throws {
        while true {
            let go = state.withLock { s in
                guard s.uploading < uploadsInFlight else { return false }
                s.uploading += 1
                pack.busy = true
                return true
            }
            if go { break }
            _ = idle.wait(timeout: .now() + 0.05)
        }
        queue.async {
            self.upload(pack)
            self.state.withLock { s in s.uploading -= 1; pack.busy = false }
            self.idle.signal()
        }
    }

    /// One pack's PUT and index entries; on failure it stays sealed, with its error, for `flush`.
    private func upload(_ pack: Pack) {
        var body = pack.data
        for (id, offset, length) in pack.entries {
            body += id.bytes
            withUnsafeBytes(of: UInt64(offset).littleEndian) { body += $0 }
            withUnsafeBytes(of: UInt64(length).littleEndian) { body += $0 }
        }
        withUnsafeBytes(of: UInt64(pack.entries.count).littleEndian) { body += $0 }
        body += PackedBlobStore.trailerMagic
        do {
            try bucket.put(PackedBlobStore.key(pack.name), body, ifAbsent: false)
            let now = secondsNow()
            let record = PackRecord(name: pack.name, bytes: Int64(body.count), created: now)
            try index.insertPack(record, pack.entries.map { PackedObject(id: $0.0, pack: pack.name, offset: $0.1, length: $0.2, written: now) })
            state.withLock { s in
                s.sealed[pack.name] = nil
                for (id, _, _) in pack.entries where s.pending[id]?.pack === pack { s.pending[id] = nil }
            }
        } catch {
            state.withLock { _ in pack.failure = (error as? StoreError) ?? .io(EIO, "pack \(pack.name): \(error)") }
        }
    }

    /// Uploads every object put so far (and packs that failed before) and waits for them: then they are
    /// stored. The first failure is thrown; what failed stays to be tried again.
    public func flush() throws {
        state.withLock { s in
            if !s.open.entries.isEmpty {
                s.sealed[s.open.name] = s.open
                s.open = Pack()
            }
        }
        // The uploads under way finish; then what is sealed and not uploading (the last pack, and
        // those that failed before) uploads here.
        waitForUploads()
        let left: [Pack] = state.withLock { s in
            let idle = s.sealed.values.filter { !$0.busy }
            for p in idle { p.failure = nil }
            return Array(idle)
        }
        for p in left { try startUpload(p) }
        waitForUploads()
        if let failed = state.withLock({ s in s.sealed.values.compactMap(\.failure).first }) { throw failed }
    }

    private func waitForUploads() {
        while state.withLock({ $0.uploading > 0 }) { _ = idle.wait(timeout: .now() + 0.05) }
    }

    // MARK: reading

    public func get(_ id: ObjectID) throws -> [UInt8]? {
        let buffered: [UInt8]? = state.withLock { s in
            guard let p = s.pending[id] else { return nil }
            return Array(p.pack.data[p.offset..<p.offset + p.length])
        }
        if let buffered { return buffered }
        if let hit = cache?.get(id) { return hit }
        for _ in 0..<3 {
            guard let entry = try index.locate([id])[id] else { return nil }
            // A GET under way that covers it (another reader's read-ahead) brings it into the cache.
            if let cache, let flight = flights.withLock({ $0.first { $0.pack == entry.pack && $0.range.contains(entry.offset) } }) {
                flight.done.wait()
                if let hit = cache.get(id) { return hit }
            }
            if let bytes = try fetch(entry) { return bytes }
            // The pack is gone: compaction moved the object meanwhile; look it up again.
        }
        throw StoreError.io(EIO, "object \(id.hex): its pack is missing from \(bucket)")
    }

    /// Reads `entry` from its pack; with a cache, the objects after it in the same pack up to
    /// `readAhead` bytes come in the same GET and go into the cache. Nil when the pack is gone.
    private func fetch(_ entry: PackedObject) throws -> [UInt8]? {
        guard let cache, readAhead > entry.length else {
            guard let bytes = try bucket.get(PackedBlobStore.key(entry.pack), range: entry.offset..<entry.offset + entry.length) else { return nil }
            guard bytes.count == entry.length else { throw StoreError.damaged(entry.id, "its pack \(entry.pack) is shorter than its index says") }
            cache?.put(entry.id, bytes)
            return bytes
        }
        let end = entry.offset + readAhead
        let flight = Flight(pack: entry.pack, range: entry.offset..<end)
        flights.withLock { $0.append(flight) }
        defer {
            flights.withLock { $0.removeAll { $0 === flight } }
            flight.done.leave()
        }
        let neighbours = try index.objects(inPack: entry.pack).filter { $0.offset >= entry.offset && $0.offset + $0.length <= end }
        let last = neighbours.map { $0.offset + $0.length }.max() ?? entry.offset + entry.length
        guard let bytes = try bucket.get(PackedBlobStore.key(entry.pack), range: entry.offset..<max(last, entry.offset + entry.length)) else { return nil }
        var wanted: [UInt8]?
        for o in neighbours {
            let from = Int(o.offset - entry.offset), to = from + Int(o.length)
            guard to <= bytes.count else { continue }
            let part = Array(bytes[from..<to])
            if o.id == entry.id { wanted = part } else { cache.put(o.id, part) }
        }
        if wanted == nil && bytes.count >= Int(entry.length) { wanted = Array(bytes[0..<Int(entry.length)]) }
        guard let wanted, wanted.count == entry.length else { throw StoreError.damaged(entry.id, "its pack \(entry.pack) is shorter than its index says") }
        cache.put(entry.id, wanted)
        return wanted
    }

    public func missing(of ids: [ObjectID]) throws -> [ObjectID] {
        let unbuffered = state.withLock { s in ids.filter { s.pending[$0] == nil } }
        if unbuffered.isEmpty { return [] }
        let found = try index.locate(unbuffered)
        return unbuffered.filter { found[$0] == nil || found[$0]!.condemned != nil }
    }

    public func contains(_ id: ObjectID) throws -> Bool { try missing(of: [id]).isEmpty }

    /// The indexed objects, and those put here and not uploaded yet (as a local store lists files it
    /// has not synced).
    public func list(_ body: (ObjectID, Int64) throws -> Void) throws {
        let buffered = state.withLock { s in s.pending.map { ($0.key, Int64($0.value.length)) } }
        let ids = Set(buffered.map(\.0))
        for (id, size) in buffered { try body(id, size) }
        try index.forEachObject { o in if o.condemned == nil && !ids.contains(o.id) { try body(o.id, o.length) } }
    }

    public func delete(_ id: ObjectID) throws {
        state.withLock { s in s.pending[id] = nil }
        try index.removeObject(id)
        cache?.remove(id)
    }

    public func available() -> Int64? { nil }

    // MARK: garbage collection

    public func listAged(_ body: (ObjectID, Int64, Double) throws -> Void) throws {
        try index.forEachObject { o in if o.condemned == nil { try body(o.id, o.length, o.written) } }
    }

    public func condemn(_ id: ObjectID) throws { try index.setCondemned(id, at: secondsNow()) }

    public func resurrect(_ id: ObjectID) throws { try index.setCondemned(id, at: nil) }

    public func listCondemned(_ body: (ObjectID, Int64, Double) throws -> Void) throws {
        try index.forEachObject { o in if let since = o.condemned { try body(o.id, o.length, since) } }
    }

    public func purge(_ id: ObjectID) throws {
        guard let entry = try index.locate([id])[id], entry.condemned != nil else { return }
        try index.removeObject(id)
        cache?.remove(id)
    }

    /// Deletes the packs no index entry points into, and rewrites those whose indexed bytes are less
    /// than `rewriteBelow` of their size and that are older than `minAge` seconds (their objects go into
    /// new packs, their entries move, then they are deleted). Returns what it freed.
    public func reclaimSpace(minAge: Double) throws -> ReclaimReport { try reclaim(minAge: minAge) }
    public var requests: RequestCounts? { bucket.requests }

    @discardableResult
    public func reclaim(minAge: Double, rewriteBelow: Double = 0.5) throws -> ReclaimReport {
        var report = ReclaimReport()
        let now = secondsNow()
        for (pack, liveBytes, liveObjects) in try index.packs() {
            if liveObjects == 0 {
                try bucket.delete(PackedBlobStore.key(pack.name))
                try index.removePack(pack.name)
                report.deleted += 1
                report.freed += pack.bytes
            } else if Double(liveBytes) < Double(pack.bytes) * rewriteBelow && pack.created < now - minAge {
                let objects = try index.objects(inPack: pack.name)
                guard let data = try bucket.get(PackedBlobStore.key(pack.name), range: nil) else { continue }
                let copy = Pack()
                for o in objects where o.offset + o.length <= data.count {
                    copy.entries.append((o.id, Int64(copy.data.count), o.length))
                    copy.data += data[Int(o.offset)..<Int(o.offset + o.length)]
                }
                upload(copy)
                if let failure = copy.failure { throw failure }
                // The copies' entries were ignored by insertPack (the objects are indexed): move them.
                try index.moveObjects(copy.entries.map { PackedObject(id: $0.0, pack: copy.name, offset: $0.1, length: $0.2, written: 0) })
                try bucket.delete(PackedBlobStore.key(pack.name))
                try index.removePack(pack.name)
                report.rewritten += 1
                report.freed += pack.bytes - Int64(copy.data.count)
            }
        }
        return report
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
