#if canImport(Glibc)
import Glibc
#endif
import Foundation
import AsyncHTTPClient
import NIOCore
import NIOSSL
import NIOHTTP1
import Synchronization
import AetherModel
import AetherCore

/// A store behind `aetherfs serve` as one side of a sync: each call is one request of the sync routes,
/// made with the token; the server's JSON errors come back as the domain's.
public final class RemotePeer: SyncPeer, Sendable {
    let base: String
    let token: String
    private let lease = Mutex<String?>(nil)
    /// The shared client, or one of its own that trusts `caFile`'s certificates (shut down with it).
    private let client: HTTPClient
    private let ownsClient: Bool

    public init(url: String, token: String, caFile: String? = nil) throws(AetherError) {
        guard let u = URL(string: url), let scheme = u.scheme, ["http", "https"].contains(scheme), u.host != nil else {
            throw .invalid("\(url) is not an http(s) URL")
        }
        base = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.token = token
        if let caFile {
            guard FileManager.default.isReadableFile(atPath: caFile) else { throw .notFound("\(caFile) (not a readable file)") }
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caFile)
            client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            ownsClient = true
        } else {
            client = HTTPClient.shared
            ownsClient = false
        }
    }

    deinit { if ownsClient { try? client.syncShutdown() } }

    public func missing(_ ids: [ObjectID]) throws(AetherError) -> [ObjectID] {
        let answer: [String: [String]] = try call(.POST, "/v1/sync/missing", json: ["ids": ids.map(\.hex)])
        return try (answer["missing"] ?? []).map(Self.id)
    }

    public func stored(_ ids: [ObjectID]) throws(AetherError) -> [[UInt8]] {
        let frames = try ObjectFrames.decode(try request(.POST, "/v1/sync/fetch", body: Array(JSONText.encode(["ids": ids.map(\.hex)]).utf8)))
        guard frames.map(\.0) == ids else { throw .failed("\(base) sent other objects than asked for") }
        return frames.map(\.1)
    }

    public func receive(_ objects: [(ObjectID, [UInt8])]) throws(AetherError) {
        _ = try request(.POST, "/v1/sync/objects?lease=\(lease.withLock { $0 } ?? "")", body: ObjectFrames.encode(objects), type: "application/octet-stream")
    }

    public func branch(_ name: String) throws(AetherError) -> (head: String, commits: [SyncSnapshot])? {
        do {
            let b: BranchLineage = try call(.GET, "/v1/sync/branches/\(Self.escape(name))", json: nil as String?)
            return (b.head, b.commits)
        } catch .notFound { return nil }
    }

    public func session(_ name: String) throws(AetherError) -> SyncSession? {
        do { return try call(.GET, "/v1/sync/sessions/\(Self.escape(name))", json: nil as String?) } catch .notFound { return nil }
    }

    public func knownSnapshots(_ sids: [String]) throws(AetherError) -> Set<String> {
        let answer: [String: [String]] = try call(.POST, "/v1/sync/known", json: ["sids": sids])
        return Set(answer["known"] ?? [])
    }

    public func apply(_ records: SyncRecords, caller: UInt32) throws(AetherError) {
        let _: [String: Bool] = try call(.POST, "/v1/sync/apply?lease=\(lease.withLock { $0 } ?? "")", json: records)
    }

    public func beginReceiving() throws(AetherError) {
        let answer: [String: String] = try call(.POST, "/v1/sync/leases", json: nil as String?)
        lease.withLock { $0 = answer["lease"] }
    }

    public func endReceiving() {
        if let id = lease.withLock({ l -> String? in defer { l = nil }; return l }) { _ = try? request(.DELETE, "/v1/sync/leases/\(id)", body: nil) }
    }

    // MARK: requests

    private func call<T: Decodable>(_ method: HTTPMethod, _ path: String, json body: (some Encodable)?) throws(AetherError) -> T {
        let bytes = try request(method, path, body: body.map { Array(JSONText.encode($0).utf8) })
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw .failed("\(base)\(path) answered what is not the JSON expected: \(String(decoding: bytes.prefix(200), as: UTF8.self))")
        }
    }

    /// One request, waited for; a status other than 2xx is the error its JSON body names.
    private func request(_ method: HTTPMethod, _ path: String, body: [UInt8]?, type: String = "application/json") throws(AetherError) -> [UInt8] {
        let url = base + path, token = self.token, client = self.client
        let result = Mutex<Result<(UInt, [UInt8]), any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                var req = HTTPClientRequest(url: url)
                req.method = method
                req.headers.add(name: "Authorization", value: "Bearer \(token)")
                if let body {
                    req.headers.add(name: "Content-Type", value: type)
                    req.body = .bytes(body)
                }
                let response = try await client.execute(req, timeout: .seconds(600))
                let buffer = try await response.body.collect(upTo: 1 << 30)
                result.withLock { $0 = .success((response.status.code, Array(buffer.readableBytesView))) }
            } catch {
                result.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        switch result.withLock({ $0 })! {
        case .failure(let error):
            let text = "\(error)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                throw .accessDenied("\(base): the server's certificate is not one this host trusts (give --ca-file)")
            }
            throw .failed("\(method.rawValue) \(url): \(text.prefix(300))")
        case .success(let (status, bytes)):
            guard (200..<300).contains(status) else { throw Self.error(status, bytes, url: url) }
            return bytes
        }
    }

    /// The domain error a server's error body stands for (its code, through the status table backwards).
    static func error(_ status: UInt, _ body: [UInt8], url: String) -> AetherError {
        struct Body: Decodable { struct Detail: Decodable { var code: String; var message: String }; var error: Detail }
        guard let e = try? JSONDecoder().decode(Body.self, from: Data(body)) else {
            return .failed("\(url): HTTP \(status) \(String(decoding: body.prefix(200), as: UTF8.self))")
        }
        let m = "\(e.error.message) (from \(url))"
        switch e.error.code {
        case "not_found": return .notFound(m)
        case "exists": return .exists(m)
        case "busy": return .busy(m)
        case "branch_moved": return .branchMoved(m)
        case "permission_denied", "unauthenticated": return .accessDenied(m)
        case "not_permitted": return .notPermitted(m)
        case "invalid": return .invalid(m)
        case "no_space": return .noSpace(m)
        case "damaged": return .damaged(m)
        default: return .failed("\(e.error.code): \(m)")
        }
    }

    static func id(_ hex: String) throws(AetherError) -> ObjectID {
        guard let id = ObjectID(hex: hex) else { throw .failed("the server named \"\(hex.prefix(80))\", which is not an object id") }
        return id
    }

    static func escape(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? s }
}
