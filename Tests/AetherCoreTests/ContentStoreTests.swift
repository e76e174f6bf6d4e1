import Testing
import Synchronization
import AetherModel
@testable import AetherCore
import AetherStore
import TestSupport

/// Bytes in memory as a source that knows no holes (as an archive's entry will be).
struct MemoryBytes: ByteSource {
    let bytes: [UInt8]
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        let from = Int(min(offset, UInt64(bytes.count)))
        let n = min(buffer.count, bytes.count - from)
        bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + from, byteCount: n) }
        return n
    }
    func data(from offset: UInt64, before end: UInt64) -> Range<UInt64>? { offset < end ? offset..<end : nil }
}

/// Bytes in memory with the data ranges a sparse file (or an archive's sparse map) tells.
struct SparseBytes: ByteSource {
    let bytes: MemoryBytes
    let ranges: [Range<UInt64>]
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int { try bytes.read(into: buffer, at: offset) }
    func data(from offset: UInt64, before end: UInt64) -> Range<UInt64>? {
        guard let r = ranges.first(where: { $0.upperBound > offset && $0.lowerBound < end }) else { return nil }
        return max(r.lowerBound, offset)..<min(r.upperBound, end)
    }
}

/// A sink collecting what is written.
final class MemorySink: ByteSink {
    var bytes: [UInt8] = []
    func write(_ piece: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let end = Int(offset) + piece.count
        if bytes.count < end { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
        bytes.replaceSubrange(Int(offset)..<end, with: piece)
    }
    func setSize(_ size: UInt64) throws {
        if bytes.count < Int(size) { bytes += [UInt8](repeating: 0, count: Int(size) - bytes.count) } else { bytes.removeLast(bytes.count - Int(size)) }
    }
}

/// A memory store that counts the existence questions asked of it.
final class CountingBlobStore: BlobStore {
    let inner = MemoryBlobStore()
    let asked = Mutex((batches: 0, singles: 0))
    func get(_ id: ObjectID) throws -> [UInt8]? { try inner.get(id) }
    func put(_ id: ObjectID, _ bytes: [UInt8]) throws { try inner.put(id, bytes) }
    func missing(of ids: [ObjectID]) throws -> [ObjectID] {
        asked.withLock { $0.batches += 1 }
        return try inner.missing(of: ids)
    }
    func contains(_ id: ObjectID) throws -> Bool {
        asked.withLock { $0.singles += 1 }
        return try inner.contains(id)
    }
    func list(_ body: (ObjectID, Int64) throws -> Void) throws { try inner.list(body) }
    func delete(_ id: ObjectID) throws { try inner.delete(id) }
    func flush() throws {}
    func available() -> Int64? { nil }
    func listAged(_ body: (ObjectID, Int64, Double) throws -> Void) throws { try inner.listAged(body) }
    func condemn(_ id: ObjectID) throws { try inner.condemn(id) }
    func resurrect(_ id: ObjectID) throws { try inner.resurrect(id) }
    func listCondemned(_ body: (ObjectID, Int64, Double) throws -> Void) throws { try inner.listCondemned(body) }
    func purge(_ id: ObjectID) throws { try inner.purge(id) }
}

@Suite struct ContentStoreTests {
    /// A file's manifest follows from its bytes and its data ranges: zeros written as data, a sparse
    /// gap and both side by side become the same holes, so cutting the file again over the data
    /// ranges its manifest names (what an archive's sparse map carries) gives the same manifest.
    @Test func holesHaveOneFormWhateverMadeThem() throws {
        let store = ContentStore(objects: ObjectStore(blobs: MemoryBlobStore()))
        let mib = 1 << 20
        let data = noise(3 * mib, seed: 1) + [UInt8](repeating: 0, count: 2 * mib) + noise(mib, seed: 2) + [UInt8](repeating: 0, count: 3 * mib)
        let m = UInt64(mib)
        let written = SparseBytes(bytes: MemoryBytes(bytes: data), ranges: [0..<4 * m, 5 * m..<6 * m])
        let first = try store.ingest(written, size: UInt64(data.count))
        let manifest = try store.manifest(first.manifest).manifest
        // The zero chunks before the gap and the gap are one hole (the chunk where the noise ends holds
        // some zeros); the tail is another.
        let holes = manifest.chunks.filter { $0.id == Manifest.hole }
        #expect(holes.count == 2 && holes.last?.length == UInt32(3 * mib) && holes[0].length > UInt32(mib + mib / 2))
        #expect(manifest.dataRanges.count == 2 && manifest.dataRanges[1] == 5 * m..<6 * m)
        let again = try store.ingest(SparseBytes(bytes: MemoryBytes(bytes: data), ranges: manifest.dataRanges), size: UInt64(data.count))
        #expect(again.manifest == first.manifest)
        var long: [(id: ObjectID, length: UInt32)] = []
        Manifest.appendHole(3 << 29, to: &long)
        Manifest.appendHole(3 << 29, to: &long)
        #expect(long.map(\.length) == [1 << 30, 1 << 30, 1 << 30])
    }

    @Test func aFileCutFromAnySourceReadsBackAndDeduplicatesInBatches() throws {
        let blobs = CountingBlobStore()
        let store = ContentStore(objects: ObjectStore(blobs: blobs))
        let data = noise(12 << 20, seed: 11) + [UInt8](repeating: 0, count: 1 << 20) + noise(100_000, seed: 12)
        let first = try store.ingest(MemoryBytes(bytes: data), size: UInt64(data.count))
        let batches = blobs.asked.withLock { $0.batches }
        let m = try store.manifest(first.manifest).manifest
        #expect(m.size == UInt64(data.count))
        #expect(m.chunks.contains { $0.id == Manifest.hole }, "zeros are stored as holes")
        // One existence query per 4 MiB window, not one per chunk (about 200 here).
        #expect(batches <= 5 && m.chunks.count > 100, "\(batches) queries for \(m.chunks.count) chunks")
        #expect(first.newBytes > 12 << 20 && first.newBytes < 13 << 20)
        var out: [UInt8] = []
        try store.read(manifest: first.manifest, offset: 0, count: data.count, into: &out)
        #expect(out == data)
        let sink = MemorySink()
        try store.copy(manifest: first.manifest, to: sink)
        #expect(sink.bytes == data)

        let again = try store.ingest(MemoryBytes(bytes: data), size: UInt64(data.count))
        #expect(again.manifest == first.manifest && again.newBytes == 0, "nothing new the second time")
        // A source shorter than its recorded size reads as zeros past its end.
        let short = try store.ingest(MemoryBytes(bytes: Array(data.prefix(1000))), size: 5000)
        out = []
        try store.read(manifest: short.manifest, offset: 0, count: 5000, into: &out)
        #expect(out == Array(data.prefix(1000)) + [UInt8](repeating: 0, count: 4000))
        // Only the manifest of the ingest that added no chunk is asked after: one that names a new
        // chunk is new itself.
        #expect(blobs.asked.withLock { $0.singles } == 1, "one for the second ingest's manifest, none for the chunks")
    }
}
