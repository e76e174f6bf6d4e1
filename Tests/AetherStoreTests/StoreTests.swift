import Testing
import Glibc
import Dispatch
import AetherModel
@testable import AetherStore
import AetherStoreS3
import AetherMeta
import TestSupport

func chunkLengths(_ data: [UInt8]) -> [Int] {
    var out: [Int] = []
    data.withUnsafeBytes { b in
        var at = 0
        while at < b.count {
            let n = FastCDC.cut(UnsafeRawBufferPointer(rebasing: b[at...]))
            out.append(n)
            at += n
        }
    }
    return out
}

@Suite struct ChunkerTests {
    @Test func chunksRespectLimitsAndAverageNearTarget() {
        let data = noise(8 << 20, seed: 1)
        let lengths = chunkLengths(data)
        #expect(lengths.reduce(0, +) == data.count)
        #expect(lengths.dropLast().allSatisfy { $0 >= FastCDC.minSize && $0 <= FastCDC.maxSize })
        let average = data.count / lengths.count
        #expect(average > 40_000 && average < 100_000, "average \(average)")
    }

    @Test func boundariesResynchronizeAfterAnInsertion() {
        let data = noise(4 << 20, seed: 2)
        var shifted = data
        shifted.insert(contentsOf: [1, 2, 3, 4, 5], at: 1000)
        func ids(_ d: [UInt8]) -> Set<ObjectID> {
            var at = 0
            var out = Set<ObjectID>()
            for n in chunkLengths(d) { out.insert(ObjectID.of(.chunk, Array(d[at..<at + n]))); at += n }
            return out
        }
        let a = ids(data), b = ids(shifted)
        #expect(a.intersection(b).count >= a.count - 2, "only the first chunk or two may differ")
    }

    @Test func twoBytesPerStepCutsWhereTheDefinitionDoes() {
        // The definition, one byte at a time.
        func reference(_ d: [UInt8]) -> Int {
            let n = d.count
            if n <= FastCDC.minSize { return n }
            let end = min(n, FastCDC.maxSize), normal = min(end, FastCDC.averageSize)
            var fp: UInt64 = 0
            for i in FastCDC.minSize..<end {
                fp = (fp << 1) &+ FastCDC.gear[Int(d[i])]
                if fp & (i < normal ? FastCDC.maskSmall : FastCDC.maskLarge) == 0 { return i + 1 }
            }
            return end
        }
        var lengths = [0, 1, 16384, 16385, 65535, 65536, 65537, 262143, 262145, 300001]
        for seed in UInt64(10)..<40 { lengths.append(Int(16384 + (seed * 7919) % 250_000)) }
        for (k, n) in lengths.enumerated() {
            // Low-entropy input too, so that cuts fall in both halves and at odd offsets.
            let d = k % 3 == 0 ? noise(n, seed: UInt64(k)).map { $0 & 3 } : noise(n, seed: UInt64(k))
            let got = d.withUnsafeBytes { FastCDC.cut($0) }
            #expect(got == reference(d), "length \(n)")
        }
    }

    @Test func boundariesArePinned() {
        // The gear table and masks are part of the store format: chunk boundaries must not move
        // between versions, or stores stop deduplicating against their own past.
        #expect(String(FastCDC.gear[0], radix: 16) == "1554cf3b18ff472b")
        #expect(Array(chunkLengths(noise(1 << 20, seed: 3)).prefix(4)) == [98464, 73418, 73037, 83123])
    }
}

/// The backends every conformance test runs against.
enum Backend: String, CaseIterable, CustomTestStringConvertible {
    /// `packed`: packs of 4 KiB (so that tests span several) in a bucket in memory, indexed in a
    /// `meta.db`, with a disk cache — the S3 backend's code without the network (PackedStoreOnS3Tests
    /// runs it against a real server).
    case local, memory, packed
    var testDescription: String { rawValue }

    /// A fresh, empty blob store of this kind (its directory, if any, in `dir`).
    func make(in dir: TempDir) throws -> any BlobStore {
        switch self {
        case .local: try LocalBlobStore(directory: dir.path + "/objects")
        case .memory: MemoryBlobStore()
        case .packed: PackedBlobStore(bucket: MemoryBucket(), index: try Catalog(path: dir.path + "/meta.db"),
                                      cache: try DiskCache(directory: dir.path + "/cache", budget: 1 << 20), packBytes: 4096, readAhead: 8192)
        }
    }
}

/// What every blob store must do, run against each backend.
@Suite struct BlobStoreConformance {
    @Test(arguments: Backend.allCases) func putGetListDelete(_ backend: Backend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let blobs = try backend.make(in: dir)
        let ids = (0..<5).map { ObjectID.of(.chunk, [UInt8($0)]) }
        #expect(try blobs.get(ids[0]) == nil)
        #expect(try blobs.missing(of: ids) == ids)
        for (i, id) in ids.enumerated() where i % 2 == 0 { try blobs.put(id, [UInt8](repeating: UInt8(i), count: 10 + i)) }
        try blobs.put(ids[0], [UInt8](repeating: 0, count: 10))   // again: allowed, nothing changes
        try blobs.flush()
        #expect(try blobs.get(ids[2]) == [UInt8](repeating: 2, count: 12))
        #expect(try blobs.missing(of: ids) == [ids[1], ids[3]], "the missing ones, in the order asked")
        #expect(try blobs.missing(of: []) == [])
        #expect(try blobs.contains(ids[4]) && !blobs.contains(ids[3]))
        var listed: [ObjectID: Int64] = [:]
        try blobs.list { id, size in listed[id] = size }
        #expect(listed == [ids[0]: 10, ids[2]: 12, ids[4]: 14])
        #expect(try blobs.usage().objects == 3 && blobs.usage().bytes == 36)
        try blobs.delete(ids[2])
        try blobs.delete(ids[2])   // what is not stored: not an error
        #expect(try blobs.get(ids[2]) == nil)
        #expect(try blobs.usage().objects == 2)
        #expect(blobs.available().map { $0 > 0 } ?? true)
    }

    @Test(arguments: Backend.allCases) func concurrentPutsOfTheSameAndOtherObjects(_ backend: Backend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let blobs = try backend.make(in: dir)
        let ids = (0..<64).map { ObjectID.of(.chunk, [UInt8($0)]) }
        DispatchQueue.concurrentPerform(iterations: 256) { i in
            try? blobs.put(ids[i % ids.count], [UInt8](repeating: UInt8(i % ids.count), count: 1000))
        }
        #expect(try blobs.missing(of: ids).isEmpty)
        for (i, id) in ids.enumerated() { #expect(try blobs.get(id) == [UInt8](repeating: UInt8(i), count: 1000)) }
        #expect(try blobs.usage().objects == ids.count)
    }

    @Test func aFullMemoryStoreRefusesWithNoSpaceAndKeepsWhatItHas() throws {
        let blobs = MemoryBlobStore(capacity: 100)
        let a = ObjectID.of(.chunk, [1]), b = ObjectID.of(.chunk, [2])
        try blobs.put(a, [UInt8](repeating: 1, count: 60))
        #expect(throws: StoreError.noSpace("40 of 100 bytes left in memory")) { try blobs.put(b, [UInt8](repeating: 2, count: 60)) }
        #expect(try blobs.get(a)?.count == 60 && blobs.get(b) == nil)
        #expect(blobs.available() == 40)
    }
}

@Suite struct ObjectStoreTests {
    /// Replaces an object's stored bytes as they are.
    func tamper(_ store: ObjectStore, _ id: ObjectID, _ change: (inout [UInt8]) -> Void) throws {
        var bytes = try #require(try store.blobs.get(id))
        change(&bytes)
        try store.blobs.delete(id)
        try store.blobs.put(id, bytes)
    }

    @Test(arguments: Backend.allCases) func roundTripAndDeduplication(_ backend: Backend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let store = ObjectStore(blobs: try backend.make(in: dir))
        let data = Array(repeating: UInt8(7), count: 100_000) + noise(1000, seed: 4)
        let id = try store.put(.chunk, data)
        #expect(try store.put(.chunk, data) == id)
        #expect(try store.usage().objects == 1)
        #expect(try store.usage().bytes < 10_000, "compressible data is stored compressed")
        #expect(try store.get(id, .chunk) == data)
        #expect(id == ObjectID.of(.chunk, data))
        #expect(ObjectID(hex: id.hex) == id)
    }

    @Test(arguments: Backend.allCases) func damageIsReportedNotServed(_ backend: Backend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let store = ObjectStore(blobs: try backend.make(in: dir))
        let raw = noise(5000, seed: 5)   // incompressible: stored raw, so one flipped byte is a wrong byte
        let id = try store.put(.chunk, raw)
        try tamper(store, id) { $0[$0.count - 10] ^= 0xff }
        #expect(throws: StoreError.damaged(id, "content does not match its hash")) { try store.get(id, .chunk) }
        #expect(throws: StoreError.self) { try store.get(id, .tree) }
        try tamper(store, id) { $0.removeLast(100) }
        #expect(throws: StoreError.damaged(id, "length 4900 instead of 5000")) { try store.get(id, .chunk) }
        try tamper(store, id) { $0 = Array($0.prefix(5)) }
        #expect(throws: StoreError.damaged(id, "not an object file")) { try store.get(id, .chunk) }
        let missing = ObjectID.of(.chunk, [1, 2, 3])
        #expect(throws: StoreError.missing(missing)) { try store.get(missing, .chunk) }
    }

    @Test(arguments: Backend.allCases) func newerObjectFormatIsRefused(_ backend: Backend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let store = ObjectStore(blobs: try backend.make(in: dir))
        let id = try store.put(.chunk, noise(100, seed: 6))
        try tamper(store, id) { $0[3] = 9 }
        do {
            _ = try store.get(id, .chunk)
            Issue.record("a newer format was read")
        } catch let e as StoreError {
            guard case .unsupportedFormat = e else { Issue.record("wrong error \(e)"); return }
        }
    }

    @Test func theLocalStoreKeepsOneFilePerObjectFannedOut() throws {
        let dir = TempDir(); defer { dir.remove() }
        let local = try LocalBlobStore(directory: dir.path + "/objects")
        let id = try ObjectStore(blobs: local).put(.chunk, noise(100, seed: 7))
        let hex = id.hex
        #expect(FileIO.exists("\(dir.path)/objects/\(hex.prefix(2))/\(hex.dropFirst(2))"))
        var st = stat()
        #expect(stat("\(dir.path)/objects/\(hex.prefix(2))/\(hex.dropFirst(2))", &st) == 0 && st.st_mode & 0o777 == 0o600)
    }
}
