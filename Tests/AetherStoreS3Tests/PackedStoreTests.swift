import Testing
import Foundation
import AetherModel
import AetherStore
import AetherMeta
@testable import AetherStoreS3
import TestSupport

/// A packed store over a bucket in memory, its index in a real `meta.db`.
struct PackedFixture {
    let dir = TempDir()
    let bucket = MemoryBucket()
    let catalog: Catalog
    let store: PackedBlobStore

    init(packBytes: Int = 64 << 10, cache: Bool = true) throws {
        catalog = try Catalog(path: dir.path + "/meta.db")
        store = PackedBlobStore(bucket: bucket, index: catalog, cache: cache ? try DiskCache(directory: dir.path + "/cache", budget: 64 << 20) : nil,
                                packBytes: packBytes, readAhead: 256 << 10)
    }

    /// The same objects through a new store over the same bucket and index (another process), with an
    /// empty cache.
    func reopened() throws -> PackedBlobStore {
        PackedBlobStore(bucket: bucket, index: catalog, cache: try DiskCache(directory: dir.path + "/cache2-\(UUID().uuidString)", budget: 64 << 20),
                        packBytes: store.packBytes, readAhead: 256 << 10)
    }
}

func blob(_ i: Int, _ size: Int = 10_000) -> (ObjectID, [UInt8]) {
    let bytes = noise(size, seed: UInt64(i) + 1)
    return (ObjectID.of(.chunk, bytes), bytes)
}

@Suite struct PackedStoreTests {
    @Test func objectsGoIntoPacksThatDescribeThemselves() throws {
        let f = try PackedFixture(); defer { f.dir.remove() }
        let objects = (0..<40).map { blob($0) }
        for (id, b) in objects { try f.store.put(id, b) }
        #expect(try f.store.get(objects[3].0) == objects[3].1, "readable before it is uploaded")
        try f.store.flush()
        let packs = f.bucket.keys.filter { $0.hasPrefix("packs/") }
        // 40 objects of 10,000 bytes; a pack closes once past 64 KiB (7 objects): 5 full packs and
        // the last 5 objects in a sixth, one PUT each.
        #expect(packs.count == 6 && f.bucket.requests.puts == 6, "\(packs.count) packs, \(f.bucket.requests.puts) PUTs")
        // Each pack's trailer lists its objects, so that the index could be rebuilt from the packs.
        var listed = 0
        for key in packs {
            let data = try #require(try f.bucket.get(key, range: nil))
            #expect(Array(data.suffix(8)) == Array("AETHERPK".utf8))
            let count = data[(data.count - 16)..<(data.count - 8)].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            listed += count
        }
        #expect(listed == 40)
        let other = try f.reopened()
        for (id, b) in objects { #expect(try other.get(id) == b) }
        #expect(try other.missing(of: objects.map(\.0) + [blob(99).0]) == [blob(99).0])
        var n = 0
        try other.list { _, size in n += 1; #expect(size == 10_000) }
        #expect(n == 40)
    }

    @Test func nearbyObjectsComeInOneRangedReadAndStayInTheCache() throws {
        let f = try PackedFixture(packBytes: 1 << 20); defer { f.dir.remove() }
        let objects = (0..<50).map { blob($0) }
        for (id, b) in objects { try f.store.put(id, b) }
        try f.store.flush()
        let other = try f.reopened()
        let before = f.bucket.requests.gets
        for (id, b) in objects { #expect(try other.get(id) == b) }
        // 500,000 bytes read ahead 256 KiB at a time: 2 GETs, not 50.
        #expect(f.bucket.requests.gets - before == 2, "\(f.bucket.requests.gets - before) GETs")
        for (id, b) in objects { #expect(try other.get(id) == b) }
        #expect(f.bucket.requests.gets - before == 2, "warm reads come from the cache")
    }

    @Test func aFailedUploadFailsTheFlushChangesNothingAndTheNextFlushStoresIt() throws {
        let f = try PackedFixture(); defer { f.dir.remove() }
        let (id, b) = blob(1)
        f.bucket.failing = true
        try f.store.put(id, b)
        do { try f.store.flush() } catch let StoreError.io(code, why) { #expect(code == EIO && why.contains("connection refused")) }
        #expect(try f.catalog.locate([id]).isEmpty, "nothing indexed")
        #expect(try f.store.get(id) == b, "still readable from memory")
        f.bucket.failing = false
        try f.store.flush()
        #expect(try f.catalog.locate([id])[id] != nil)
        #expect(try f.reopened().get(id) == b)
    }

    @Test func aCondemnedObjectWrittenAgainIsStoredAgain() throws {
        let f = try PackedFixture(); defer { f.dir.remove() }
        let (id, b) = blob(1)
        try f.store.put(id, b)
        try f.store.flush()
        try f.store.condemn(id)
        #expect(try f.store.missing(of: [id]) == [id], "a writer writes a condemned object anew")
        #expect(try f.store.get(id) == b, "a reader still finds it")
        try f.store.put(id, b)
        try f.store.flush()
        var condemned = 0
        try f.store.listCondemned { _, _, _ in condemned += 1 }
        #expect(condemned == 0)
        #expect(try f.store.missing(of: [id]).isEmpty)
        try f.store.purge(id)   // gc's purge of what is no longer condemned: nothing
        #expect(try f.reopened().get(id) == b)
    }

    @Test func reclaimDeletesEmptyPacksAndRewritesMostlyGarbageOnes() throws {
        let f = try PackedFixture(); defer { f.dir.remove() }
        let objects = (0..<14).map { blob($0) }
        for (id, b) in objects { try f.store.put(id, b) }
        try f.store.flush()
        let packs = try f.catalog.packs()
        #expect(packs.count == 2)
        // All of the first pack, and all but one object of the second, become garbage.
        let first = Set(try f.catalog.objects(inPack: packs[0].pack.name).map(\.id))
        let second = try f.catalog.objects(inPack: packs[1].pack.name).map(\.id)
        let doomed = Array(first) + second.dropLast()
        for id in doomed { try f.store.condemn(id) }
        for id in doomed { try f.store.purge(id) }
        let report = try f.store.reclaim(minAge: 0)
        #expect(report.deleted == 1 && report.rewritten == 1 && report.freed > 100_000, "\(report)")
        #expect(f.bucket.keys.filter { $0.hasPrefix("packs/") }.count == 1)
        let kept = try #require(second.last)
        let fresh = try f.reopened()
        #expect(try fresh.get(kept) == objects.first { $0.0 == kept }!.1, "the live object moved with its bytes")
        for id in doomed { #expect(try fresh.get(id) == nil) }
        #expect(try f.store.reclaim(minAge: 0) == ReclaimReport(), "nothing more to do")
    }

    @Test func aPackMovedByCompactionIsFoundByAReaderThatLookedEarlier() throws {
        let f = try PackedFixture(cache: false); defer { f.dir.remove() }
        let objects = (0..<8).map { blob($0) }
        for (id, b) in objects { try f.store.put(id, b) }
        try f.store.flush()
        for (id, _) in objects.dropFirst() { try f.store.condemn(id); try f.store.purge(id) }
        _ = try f.store.reclaim(minAge: 0)
        #expect(try f.store.get(objects[0].0) == objects[0].1)
    }
}

/// The same against a real S3 server (SeaweedFS on loopback, started here).
@Suite(.serialized) struct PackedStoreOnS3Tests {
    @Test func packsRangedReadsAndErrorsAgainstARealServer() throws {
        guard S3Server.available else {
            if S3Server.required { Issue.record("no S3 server to test with (Scripts/setup installs weed)") }
            return
        }
        let server = try S3Server(); defer { server.stop() }
        let dir = TempDir(); defer { dir.remove() }
        let location = try S3Location(url: "s3://\(server.bucket)/t1", endpoint: server.endpoint, region: "us-east-1")
        let s3 = S3Client(location: location, credentials: S3Credentials(accessKey: server.accessKey, secretKey: server.secretKey))
        // The raw calls: a conditional put, a ranged get, a listing, a delete.
        #expect(try s3.put("k/a", Array("hello world".utf8), ifAbsent: true))
        #expect(try s3.put("k/a", Array("other".utf8), ifAbsent: true) == false, "if-none-match: * refuses a second")
        #expect(try s3.get("k/a", range: 6..<11) == Array("world".utf8))
        #expect(try s3.get("k/none", range: nil) == nil)
        #expect(try s3.list(prefix: "k/").map(\.key) == ["k/a"])
        try s3.delete("k/a")
        try s3.delete("k/a")
        #expect(try s3.list(prefix: "k/").isEmpty)
        // Wrong keys are refused in one line, as EACCES.
        let wrong = S3Client(location: location, credentials: S3Credentials(accessKey: server.accessKey, secretKey: "nope"))
        do { try wrong.put("x", [1], ifAbsent: false); Issue.record("a wrong secret was accepted") } catch let StoreError.io(code, why) {
            #expect(code == EACCES, "\(why)")
        }
        // A packed store over it.
        let catalog = try Catalog(path: dir.path + "/meta.db")
        let store = PackedBlobStore(bucket: s3, index: catalog, cache: try DiskCache(directory: dir.path + "/cache", budget: 64 << 20), packBytes: 256 << 10)
        let objects = (0..<100).map { blob($0, 20_000) }
        for (id, b) in objects { try store.put(id, b) }
        try store.flush()
        #expect(try s3.list(prefix: "packs/").count == 8)
        let cold = PackedBlobStore(bucket: s3, index: catalog, cache: try DiskCache(directory: dir.path + "/cache2", budget: 64 << 20))
        for (id, b) in objects { #expect(try cold.get(id) == b) }
        // Cut off: the flush fails with EIO and a readable line; after a restart the next one stores it.
        server.kill()
        let (id, b) = blob(1000)
        try store.put(id, b)
        do { try store.flush(); Issue.record("a flush with the server down succeeded") } catch let StoreError.io(code, why) {
            #expect(code == EIO && why.contains("failed 5 times"), "\(why)")
        }
        try server.start()
        try store.flush()
        #expect(try cold.get(id) == b)
    }
}
