#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import HTTPTypes
import NIOCore
import Synchronization
import AetherModel
import AetherCore

/// Objects as they travel in one body: each its 32-byte id, its length (8 bytes, little-endian) and
/// its stored bytes.
public enum ObjectFrames {
    public static func encode(_ objects: [(ObjectID, [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(objects.reduce(0) { $0 + 40 + $1.1.count })
        for (id, bytes) in objects {
            out += id.bytes
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out += $0 }
            out += bytes
        }
        return out
    }

    public static func decode(_ data: [UInt8]) throws(AetherError) -> [(ObjectID, [UInt8])] {
        var out: [(ObjectID, [UInt8])] = []
        var at = 0
        while at < data.count {
            guard data.count - at >= 40, let id = ObjectID(bytes: data[at..<at + 32]) else { throw .invalid("a frame of objects is cut short at byte \(at)") }
            var n: UInt64 = 0
            for i in 0..<8 { n |= UInt64(data[at + 32 + i]) << UInt64(8 * i) }
            at += 40
            guard n <= UInt64(data.count - at) else { throw .invalid("object \(id.hex) says \(n) bytes; the body has \(data.count - at) left") }
            out.append((id, Array(data[at..<at + Int(n)])))
            at += Int(n)
        }
        return out
    }
}

/// The server's leases of receiving syncs: each a write lease of the store, ended by its client or,
/// idle for `idle` seconds (a client gone), by the next request that finds it so.
final class ReceivingLeases: Sendable {
    static let idle: Double = 600
    private let leases = Mutex<[String: (row: Int64, used: Double)]>([:])
    let repo: Repository

    init(repo: Repository) { self.repo = repo }

    func begin() throws(AetherError) -> String {
        reap()
        let row = try domain { try repo.metadata.beginWrite(WriteLease(host: SessionLock.thisHost, pid: getpid(), started: secondsNow())) }
        let id = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        leases.withLock { $0[id] = (row, secondsNow()) }
        return id
    }

    /// Marks a lease used; false when there is no such lease (ended or reaped).
    func touch(_ id: String) -> Bool {
        reap()
        return leases.withLock { l in
            guard var lease = l[id] else { return false }
            lease.used = secondsNow()
            l[id] = lease
            return true
        }
    }

    func end(_ id: String) -> Bool {
        guard let lease = leases.withLock({ $0.removeValue(forKey: id) }) else { return false }
        try? repo.metadata.endWrite(lease.row)
        return true
    }

    private func reap() {
        let now = secondsNow()
        let stale = leases.withLock { l -> [Int64] in
            let old = l.filter { now - $0.value.used > ReceivingLeases.idle }
            for k in old.keys { l.removeValue(forKey: k) }
            return old.values.map(\.row)
        }
        for row in stale { try? repo.metadata.endWrite(row) }
    }
}

extension Handlers {
    /// `{"ids": [hex…]}` (at most `Sync.batchIDs`).
    func ids(_ r: Request) async throws -> [ObjectID] {
        let fields = try object(try await body(r), known: ["ids"])
        guard let list = fields["ids"] as? [String], list.count <= 4096 else { throw APIError(.badRequest, "invalid", "\"ids\" must be a list of at most 4,096 object ids") }
        return try list.map { hex in
            guard let id = ObjectID(hex: hex) else { throw APIError(.badRequest, "invalid", "\"\(hex.prefix(80))\" is not an object id") }
            return id
        }
    }

    func syncMissing(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, ids = try await ids(r)
        return json(["missing": try await blocking { () throws(AetherError) in try LocalPeer(repo).missing(ids).map(\.hex) }])
    }

    func syncFetch(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, ids = try await ids(r)
        let frames = try await blocking { () throws(AetherError) in ObjectFrames.encode(Array(zip(ids, try LocalPeer(repo).stored(ids)))) }
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: frames)))
    }

    func syncReceive(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo
        try lease(r)
        var r = r
        let buffer: ByteBuffer
        do { buffer = try await r.collectBody(upTo: Int(min(options.maxUpload, 64 << 20))) } catch {
            throw APIError(.contentTooLarge, "too_big", "a batch of objects is at most 64 MiB")
        }
        let data = Array(buffer.readableBytesView)
        let count = try await blocking { () throws(AetherError) -> Int in
            let objects = try ObjectFrames.decode(data)
            try LocalPeer(repo).receive(objects)
            return objects.count
        }
        return json(["received": count])
    }

    func syncBranch(_ c: APIContext) async throws -> Response {
        let repo = self.repo, name = try parameter(c, "name")
        guard let (head, commits) = try await blocking({ () throws(AetherError) in try LocalPeer(repo).branch(name) }) else {
            throw APIError(.notFound, "not_found", "not found: branch \(name)")
        }
        return json(BranchLineage(head: head, commits: commits))
    }

    func syncSession(_ c: APIContext) async throws -> Response {
        let repo = self.repo, name = try parameter(c, "name")
        guard let s = try await blocking({ () throws(AetherError) in try LocalPeer(repo).session(name) }) else {
            throw APIError(.notFound, "not_found", "not found: session \(name)")
        }
        return json(s)
    }

    func syncKnown(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo
        let fields = try object(try await body(r), known: ["sids"])
        guard let sids = fields["sids"] as? [String], sids.count <= 100_000 else { throw APIError(.badRequest, "invalid", "\"sids\" must be a list of snapshot ids") }
        return json(["known": try await blocking { () throws(AetherError) in Array(try LocalPeer(repo).knownSnapshots(sids)).sorted() }])
    }

    func syncApply(_ r: Request, _ c: APIContext) async throws -> Response {
        let repo = self.repo, caller = c.token!.uid
        try lease(r)
        let text = try await body(r)
        let records: SyncRecords
        do { records = try JSONDecoder().decode(SyncRecords.self, from: Data(text.utf8)) } catch {
            throw APIError(.badRequest, "invalid", "the body is not sync records: \(error)".prefix(300).description)
        }
        try await blocking { () throws(AetherError) in try LocalPeer(repo).apply(records, caller: caller) }
        return json(["applied": true])
    }

    func beginLease(_ c: APIContext) async throws -> Response {
        let leases = self.leases
        return json(["lease": try await blocking { () throws(AetherError) in try leases.begin() }], status: .created)
    }

    func endLease(_ c: APIContext) async throws -> Response {
        let id = try parameter(c, "id")
        guard leases.end(id) else { throw APIError(.notFound, "not_found", "not found: lease \(id)") }
        return json(["ended": id])
    }

    /// A receiving request names its lease (`?lease=ID`), which it keeps alive.
    func lease(_ r: Request) throws {
        guard let id = r.uri.queryParameters.get("lease").map({ String($0) }), leases.touch(id) else {
            throw APIError(.conflict, "no_lease", "this request needs ?lease=ID of a live receiving lease (POST /v1/sync/leases); it lapsed or was never taken")
        }
    }
}

struct BranchLineage: Codable {
    var head: String
    var commits: [SyncSnapshot]
}
