#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore
import Dispatch

/// Files and trees over the object store: reading a file's bytes through its manifest, cutting a file
/// into chunks, and reading and writing trees. Caches decoded objects; safe from several threads.
public final class ContentStore: @unchecked Sendable {
    public let objects: ObjectStore
    let lock = Lock()
    // Budgets in bytes, about what each cache holds (the daemon should stay under 200 MiB in all): chunks
    // hold the prefetch window of a read in order (32 chunks of 64 KiB on average); an assembled tree of
    // 100,000 entries (16 MB) still fits, so checkpoints and restores of such a directory read it once.
    private var chunks = LRUCache<ObjectID, [UInt8]>(budget: 16 << 20)
    private var manifests = LRUCache<ObjectID, IndexedManifest>(budget: 4 << 20)
    /// Trees as stored: version 1 with their entries, version 2 with their pages only.
    var heads = LRUCache<ObjectID, Tree>(budget: 4 << 20)
    /// Version-2 trees with their pages' entries put together.
    var assembled = LRUCache<ObjectID, Tree>(budget: 16 << 20)
    var pages = LRUCache<ObjectID, [TreeEntry]>(budget: 4 << 20)

    private let writer: ChunkWriter
    /// Read the next chunks of a file being read in order into the cache, on other threads: several, as
    /// a cold read fetches one small file per chunk and is bound by the disk's latency, not its speed.
    private let prefetchers = (0..<ContentStore.prefetchThreads).map { DispatchQueue(label: "aetherfs.prefetch.\($0)") }
    static let prefetchThreads = 6
    static let prefetchChunks = 32
    /// Chunks on their way into the cache; a read that needs one waits for it instead of reading it too.
    private var prefetching: [ObjectID: DispatchGroup] = [:]
    private var prefetchTurn = 0
    /// Where the last read of each manifest ended (to tell reads in order from random ones).
    private var readEnds: [ObjectID: UInt64] = [:]

    /// How often the caches had what was asked (chunks of reads; manifests).
    public struct CacheCounts: Codable, Sendable {
        public var chunkHits: UInt64 = 0, chunkMisses: UInt64 = 0, manifestHits: UInt64 = 0, manifestMisses: UInt64 = 0
        enum CodingKeys: String, CodingKey {
            case chunkHits = "chunk_hits", chunkMisses = "chunk_misses", manifestHits = "manifest_hits", manifestMisses = "manifest_misses"
        }
    }
    private var counts = CacheCounts()
    public var cacheCounts: CacheCounts { lock.withLock { counts } }

    public init(objects: ObjectStore) {
        self.objects = objects
        writer = ChunkWriter(objects: objects)
    }

    /// A manifest with each chunk's starting offset, for binary search.
    public struct IndexedManifest: Sendable {
        public let manifest: Manifest
        let starts: [UInt64]

        /// Bytes the file's data takes, its holes left out.
        public var allocated: UInt64 {
            manifest.chunks.reduce(0) { $0 + ($1.id == Manifest.hole ? 0 : UInt64($1.length)) }
        }

        /// Where the first data (`data`) or hole at or after `offset` begins, as SEEK_DATA and SEEK_HOLE
        /// answer (the end of the file counts as a hole); nil when there is no data after `offset`.
        public func seek(_ offset: UInt64, data: Bool) -> UInt64? {
            guard offset < manifest.size else { return nil }
            var lo = 0, hi = starts.count
            while hi - lo > 1 { let mid = (lo + hi) / 2; if starts[mid] <= offset { lo = mid } else { hi = mid } }
            for i in lo..<starts.count where (manifest.chunks[i].id != Manifest.hole) == data {
                return max(offset, starts[i])
            }
            return data ? nil : manifest.size
        }
    }

    /// Files this large report the blocks their data takes, from their manifest (holes left out, so
    /// that cp, tar and rsync -S see them as sparse); smaller ones count whole, without a read.
    public static let sparseReportedFrom: UInt64 = 1 << 20

    /// The 512-byte blocks a stored file of `size` bytes takes.
    public func blocks(of id: ObjectID?, size: UInt64) -> UInt64 {
        let whole = (size + 511) / 512
        guard size >= ContentStore.sparseReportedFrom, let id, let m = try? manifest(id) else { return id == nil ? 0 : whole }
        return (m.allocated + 511) / 512
    }

    /// SEEK_DATA (`data`) or SEEK_HOLE in a stored file: nil when nothing of the kind is at or after
    /// `offset` (ENXIO).
    public func seek(in id: ObjectID?, size: UInt64, offset: UInt64, data: Bool) throws -> UInt64? {
        guard offset < size else { return nil }
        guard let id else { return data ? nil : size }
        return try manifest(id).seek(offset, data: data)
    }

    public func manifest(_ id: ObjectID) throws -> IndexedManifest {
        if let m = lock.withLock({ () -> IndexedManifest? in
            let m = manifests.get(id)
            if m != nil { counts.manifestHits += 1 } else { counts.manifestMisses += 1 }
            return m
        }) { return m }
        let m = try Manifest.decode(try objects.get(id, .manifest))
        var starts: [UInt64] = []
        starts.reserveCapacity(m.chunks.count)
        var at: UInt64 = 0
        for c in m.chunks { starts.append(at); at += UInt64(c.length) }
        let indexed = IndexedManifest(manifest: m, starts: starts)
        lock.withLock { manifests.put(id, indexed, cost: 256 + m.chunks.count * 56) }
        return indexed
    }

    func chunk(_ id: ObjectID) throws -> [UInt8] {
        let (cached, coming) = lock.withLock { () -> ([UInt8]?, DispatchGroup?) in
            let c = chunks.get(id)
            if c != nil { counts.chunkHits += 1 } else { counts.chunkMisses += 1 }
            return (c, prefetching[id])
        }
        if let cached { return cached }
        if let coming {
            coming.wait()
            if let c = lock.withLock({ chunks.get(id) }) { return c }
        }
        return try fetch(id)
    }

    /// Reads a chunk from the object store into the cache.
    private func fetch(_ id: ObjectID) throws -> [UInt8] {
        let c = try objects.get(id, .chunk)
        lock.withLock { chunks.put(id, c, cost: c.count + 64) }
        return c
    }

    /// Reads up to `count` bytes at `offset` of the file whose manifest is `id` into `out`.
    public func read(manifest id: ObjectID, offset: UInt64, count: Int, into out: inout [UInt8]) throws {
        let m = try manifest(id)
        guard offset < m.manifest.size, count > 0 else { return }
        let end = min(m.manifest.size, offset + UInt64(count))
        // In order: this read starts near where the last one ended (the kernel's read-ahead may
        // send a few at once, out of order).
        let inOrder = lock.withLock { () -> Bool in
            let last = readEnds[id]
            if readEnds.count > 4096 { readEnds.removeAll() }
            readEnds[id] = end
            guard let last else { return offset == 0 }
            return offset + (2 << 20) >= last && offset <= last + (2 << 20)
        }
        var i = m.starts.partitionPoint { $0 <= offset } - 1
        // The chunks this read needs are fetched side by side (and, in order, those after them).
        let last = m.starts.partitionPoint { $0 <= end - 1 } - 1
        if inOrder || last > i { prefetch(m, from: i, count: inOrder ? max(last - i + 1, ContentStore.prefetchChunks) : last - i + 1) }
        var at = offset
        while at < end, i < m.starts.count {
            let start = m.starts[i]
            let piece = m.manifest.chunks[i]
            let from = Int(at - start)
            let to = Int(min(end - start, UInt64(piece.length)))
            if piece.id == Manifest.hole {
                out.append(contentsOf: repeatElement(0, count: to - from))
            } else {
                let data = try chunk(piece.id)
                guard data.count == Int(piece.length) else { throw StoreError.damaged(piece.id, "length differs from its manifest") }
                out.append(contentsOf: data[from..<to])
            }
            at = start + UInt64(to)
            i += 1
        }
        if inOrder { prefetch(m, from: i, count: ContentStore.prefetchChunks) }
    }

    /// Starts reading `count` chunks of `m` from index `first` on into the cache, unless cached or on
    /// their way, spread over the prefetch threads. Failures are left for the read that needs the chunk
    /// to report.
    private func prefetch(_ m: IndexedManifest, from first: Int, count: Int) {
        let ids = lock.withLock { () -> [(ObjectID, DispatchGroup, Int)] in
            var ids: [(ObjectID, DispatchGroup, Int)] = []
            for k in first..<min(first + count, m.manifest.chunks.count) {
                let c = m.manifest.chunks[k].id
                if c == Manifest.hole || chunks.contains(c) || prefetching[c] != nil { continue }
                let g = DispatchGroup()
                g.enter()
                prefetching[c] = g
                prefetchTurn = (prefetchTurn + 1) % prefetchers.count
                ids.append((c, g, prefetchTurn))
            }
            return ids
        }
        for (c, g, turn) in ids {
            prefetchers[turn].async { [self] in
                _ = try? fetch(c)
                lock.withLock { _ = prefetching.removeValue(forKey: c) }
                g.leave()
            }
        }
    }

    /// Writes the whole content of manifest `id` into `sink` from offset 0 (a copy-up), holes left unwritten.
    public func copy(manifest id: ObjectID, to sink: some ByteSink) throws {
        let m = try manifest(id)
        var at: UInt64 = 0
        for (i, piece) in m.manifest.chunks.enumerated() {
            if i % 4 == 0 { prefetch(m, from: i + 1, count: ContentStore.prefetchChunks) }
            if piece.id != Manifest.hole {
                let data = try chunk(piece.id)
                try data.withUnsafeBytes { try sink.write($0, at: at) }
            }
            at += UInt64(piece.length)
        }
        try sink.setSize(m.manifest.size)
    }

    /// The result of cutting one file into the store.
    public struct Ingested: Sendable {
        public var manifest: ObjectID
        public var size: UInt64
        /// Bytes of chunks that were not in the store before, and how many they are.
        public var newBytes: Int64
        public var newChunks: Int
    }

    /// Cuts the first `size` bytes of `source` into chunks, stores the new ones and the manifest. Holes
    /// the source knows of (a sparse file's) become hole entries without being read. `progress` hears of
    /// every 4 MiB read (bytes so far); what it throws ends the ingest.
    public func ingest(_ source: some ByteSource, size: UInt64, progress: ((UInt64) throws -> Void)? = nil) throws -> Ingested {
        var chunksOut: [(id: ObjectID, length: UInt32)] = []
        var newBytes: Int64 = 0
        var newChunks = 0
        func hole(_ length: UInt64) { Manifest.appendHole(length, to: &chunksOut) }
        var at: UInt64 = 0
        while at < size {
            guard let data = source.data(from: at, before: size) else { hole(size - at); break }
            if data.lowerBound > at { hole(data.lowerBound - at) }
            do {
                try cut(source, from: data.lowerBound, to: data.upperBound, into: &chunksOut, newBytes: &newBytes, newChunks: &newChunks, progress: progress)
            } catch {
                try? writer.drain()  // let the queued chunks land; this ingest fails with its own error
                throw error
            }
            at = data.upperBound
        }
        // Every chunk is written before the manifest that names it.
        try writer.drain()
        let encoded = Manifest(size: size, chunks: chunksOut).encode()
        let id: ObjectID
        if newChunks > 0 {
            // It names a chunk the store lacked, so the store lacks it too (a store holds only closed
            // graphs): no need to ask (a round trip to the index of a shared store).
            id = ObjectID.of(.manifest, encoded)
            try encoded.withUnsafeBytes { try objects.putMissing(id, .manifest, $0) }
        } else {
            id = try objects.put(.manifest, encoded)
        }
        return Ingested(manifest: id, size: size, newBytes: newBytes, newChunks: newChunks)
    }

    /// Cuts bytes `start..<end` of `source` into content-defined chunks.
    private func cut(_ source: some ByteSource, from start: UInt64, to end: UInt64, into chunksOut: inout [(id: ObjectID, length: UInt32)],
                     newBytes: inout Int64, newChunks: inout Int, progress: ((UInt64) throws -> Void)?) throws {
        let window = 4 << 20
        var buffer = [UInt8](repeating: 0, count: window)
        var fileOffset = start   // file offset of buffer[0]
        var filled = 0
        var consumed = 0
        while true {
            // Refill so that at least one maximal chunk is available, unless at the end of the range.
            if filled - consumed < FastCDC.maxSize && fileOffset + UInt64(filled) < end {
                if consumed > 0 {
                    buffer.withUnsafeMutableBytes { b in
                        b.baseAddress!.copyMemory(from: b.baseAddress! + consumed, byteCount: filled - consumed)
                    }
                    fileOffset += UInt64(consumed); filled -= consumed; consumed = 0
                }
                let want = min(window - filled, Int(end - fileOffset) - filled)
                let got = try buffer.withUnsafeMutableBytes { b in
                    try source.read(into: UnsafeMutableRawBufferPointer(rebasing: b[filled..<filled + want]), at: fileOffset + UInt64(filled))
                }
                filled += got
                try progress?(fileOffset + UInt64(filled))
                if got < want {
                    // The file is shorter than recorded: what is missing reads as zeros (as a hole would).
                    buffer.withUnsafeMutableBytes { b in
                        for k in filled..<(filled + want - got) { b[k] = 0 }
                    }
                    filled += want - got
                }
            }
            if consumed == filled { break }
            // Cut every chunk the window holds whole (everything, at the end of the range), then ask the
            // store once which of them are new: one existence query per window, not per chunk.
            let atEnd = fileOffset + UInt64(filled) >= end
            var cuts: [(at: Int, length: Int, id: ObjectID?)] = []
            buffer.withUnsafeBytes { b in
                while consumed < filled && (atEnd || filled - consumed >= FastCDC.maxSize) {
                    let rest = UnsafeRawBufferPointer(rebasing: b[consumed..<filled])
                    let n = FastCDC.cut(rest)
                    let piece = UnsafeRawBufferPointer(rebasing: rest[0..<n])
                    cuts.append((consumed, n, isZero(piece) ? nil : ObjectID.of(.chunk, piece)))
                    consumed += n
                }
            }
            let new = Set(try objects.missing(of: cuts.compactMap(\.id)))
            buffer.withUnsafeBytes { b in
                for c in cuts {
                    guard let id = c.id else { Manifest.appendHole(UInt64(c.length), to: &chunksOut); continue }
                    if new.contains(id), writer.submit(id, UnsafeRawBufferPointer(rebasing: b[c.at..<c.at + c.length])) {
                        newBytes += Int64(c.length)
                        newChunks += 1
                    }
                    chunksOut.append((id, UInt32(c.length)))
                }
            }
        }
    }

    /// The manifest of an empty file.
    public func emptyManifest() throws -> ObjectID {
        try objects.put(.manifest, Manifest(size: 0, chunks: []).encode())
    }
}

/// Compresses and writes new chunks on the other cores while the caller cuts and hashes the next ones
/// (compression, not hashing, bounds ingest). At most `slots` chunks wait; `drain` waits for all and
/// reports the first failure.
final class ChunkWriter: @unchecked Sendable {
    let objects: ObjectStore
    private let queue = DispatchQueue(label: "aetherfs.chunk-writer", attributes: .concurrent)
    private let group = DispatchGroup()
    private let slots = DispatchSemaphore(value: 8)
    private let lock = Lock()
    private var inFlight = Set<ObjectID>()
    private var firstError: (any Error)?

    init(objects: ObjectStore) { self.objects = objects }

    /// Queues a chunk (copied) that the store does not hold for writing; false when the same chunk is
    /// already on its way.
    func submit(_ id: ObjectID, _ piece: UnsafeRawBufferPointer) -> Bool {
        guard lock.withLock({ inFlight.insert(id).inserted }) else { return false }
        let bytes = [UInt8](piece)
        slots.wait()
        queue.async(group: group) { [self] in
            defer { slots.signal() }
            do {
                try bytes.withUnsafeBytes { try objects.putMissing(id, .chunk, $0) }
            } catch {
                lock.withLock { if firstError == nil { firstError = error } }
            }
        }
        return true
    }

    func drain() throws {
        group.wait()
        let error = lock.withLock { () -> (any Error)? in
            inFlight.removeAll(keepingCapacity: true)
            defer { firstError = nil }
            return firstError
        }
        if let error { throw error }
    }
}

private func isZero(_ b: UnsafeRawBufferPointer) -> Bool {
    var i = 0
    let n = b.count
    let p = b.baseAddress!
    while i + 8 <= n {
        if p.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
        i += 8
    }
    while i < n { if p.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }; i += 1 }
    return true
}

