import Testing
import Glibc
@testable import AetherStore
import TestSupport

/// Deterministic pseudo-random bytes.
func noise(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

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

@Suite struct ObjectStoreTests {
    @Test func roundTripAndDeduplication() throws {
        let dir = TempDir(); defer { dir.remove() }
        let store = try ObjectStore(directory: dir.path + "/objects")
        let data = Array(repeating: UInt8(7), count: 100_000) + noise(1000, seed: 4)
        let id = try store.put(.chunk, data)
        #expect(try store.put(.chunk, data) == id)
        #expect(store.usage().objects == 1)
        #expect(store.usage().bytes < 10_000, "compressible data is stored compressed")
        #expect(try store.get(id, .chunk) == data)
        #expect(id == ObjectID.of(.chunk, data))
        #expect(ObjectID(hex: id.hex) == id)
    }

    @Test func damageIsReportedNotServed() throws {
        let dir = TempDir(); defer { dir.remove() }
        let store = try ObjectStore(directory: dir.path + "/objects")
        let raw = noise(5000, seed: 5)   // incompressible: stored raw, so one flipped byte is a wrong byte
        let id = try store.put(.chunk, raw)
        let path = store.path(of: id)
        var bytes = try FileIO.readFile(path)
        bytes[bytes.count - 10] ^= 0xff
        try FileIO.atomicWrite(path, bytes, sync: false)
        #expect(throws: StoreError.damaged(id, "content does not match its hash")) { try store.get(id, .chunk) }
        #expect(throws: StoreError.self) { try store.get(id, .tree) }
        let missing = ObjectID.of(.chunk, [1, 2, 3])
        #expect(throws: StoreError.missing(missing)) { try store.get(missing, .chunk) }
    }

    @Test func newerObjectFormatIsRefused() throws {
        let dir = TempDir(); defer { dir.remove() }
        let store = try ObjectStore(directory: dir.path + "/objects")
        let id = try store.put(.chunk, noise(100, seed: 6))
        var bytes = try FileIO.readFile(store.path(of: id))
        bytes[3] = 9
        try FileIO.atomicWrite(store.path(of: id), bytes, sync: false)
        do {
            _ = try store.get(id, .chunk)
            Issue.record("a newer format was read")
        } catch let e as StoreError {
            guard case .unsupportedFormat = e else { Issue.record("wrong error \(e)"); return }
        }
    }
}
