#if canImport(Glibc)
import Glibc
#endif
import Foundation
import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import Crypto
import Synchronization
import AetherStore

/// Named byte strings in a bucket: what a packed store needs of object storage — whole puts, ranged
/// gets, deletes and listings. `S3Client` is the real one, `MemoryBucket` the tests'. Failures are
/// `StoreError`s (`io` with an errno: `EIO` for a network or server failure, `EACCES` for refused
/// credentials, `ENOENT` for a missing bucket).
public protocol ObjectBucket: AnyObject, Sendable {
    /// Stores `bytes` under `key`; with `ifAbsent`, only when nothing is there (false when something was).
    @discardableResult
    func put(_ key: String, _ bytes: [UInt8], ifAbsent: Bool) throws -> Bool
    /// The bytes under `key` (`range` of them), or nil when there is no such key.
    func get(_ key: String, range: Range<Int64>?) throws -> [UInt8]?
    /// Removes `key`; removing what is not there is not an error.
    func delete(_ key: String) throws
    /// The keys that start with `prefix`, with their sizes.
    func list(prefix: String) throws -> [(key: String, size: Int64)]
    /// Requests made so far, by kind (`PUT`, `GET`, `DELETE`, `LIST`), and bytes sent and received.
    var requests: RequestCounts { get }
}

/// Where a store's objects live on S3-compatible storage, and how to reach it.
public struct S3Location: Sendable, Equatable {
    public var bucket: String
    /// Keys start with this (no leading slash; empty, or ending in `/`).
    public var prefix: String
    /// `http(s)://host[:port]`; AWS's regional endpoint when nil.
    public var endpoint: String
    public var region: String

    /// Parses `s3://BUCKET[/PREFIX]`.
    public init(url: String, endpoint: String?, region: String?) throws(StoreError) {
        guard url.hasPrefix("s3://") else { throw .io(EINVAL, "\(url) is not an s3://BUCKET/PREFIX address") }
        let rest = url.dropFirst(5)
        let bucket = String(rest.prefix { $0 != "/" })
        let valid = bucket.utf8.count >= 3 && bucket.utf8.count <= 63 && bucket.utf8.allSatisfy {
            ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 46
        }
        guard valid else { throw .io(EINVAL, "\(url): a bucket name is 3-63 of lower-case letters, digits, '.' and '-'") }
        var prefix = String(rest.dropFirst(bucket.count)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if !prefix.isEmpty { prefix += "/" }
        self.bucket = bucket
        self.prefix = prefix
        let region = region ?? ProcessInfo.processInfo.environment["AWS_REGION"] ?? ProcessInfo.processInfo.environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
        self.region = region
        var e = endpoint ?? "https://s3.\(region).amazonaws.com"
        while e.hasSuffix("/") { e.removeLast() }
        guard let u = URL(string: e), let scheme = u.scheme, ["http", "https"].contains(scheme), u.host != nil, u.path.isEmpty else {
            throw .io(EINVAL, "--s3-endpoint \(e) is not an http(s)://HOST[:PORT] address")
        }
        self.endpoint = e
    }

    public var url: String { "s3://\(bucket)/\(prefix)" }
}

/// Credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), else from
/// the profile `AWS_PROFILE` (or `default`) of `~/.aws/credentials`.
public struct S3Credentials: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var sessionToken: String?

    public static func fromEnvironment() throws(StoreError) -> S3Credentials {
        let env = ProcessInfo.processInfo.environment
        if let a = env["AWS_ACCESS_KEY_ID"], let s = env["AWS_SECRET_ACCESS_KEY"], !a.isEmpty, !s.isEmpty {
            return S3Credentials(accessKey: a, secretKey: s, sessionToken: env["AWS_SESSION_TOKEN"])
        }
        let file = env["AWS_SHARED_CREDENTIALS_FILE"] ?? ((env["HOME"] ?? "/root") + "/.aws/credentials")
        let profile = env["AWS_PROFILE"] ?? "default"
        if let text = try? String(contentsOfFile: file, encoding: .utf8) {
            var section = "", found: [String: String] = [:]
            for raw in text.split(whereSeparator: \.isNewline) {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.hasPrefix("[") && line.hasSuffix("]") { section = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces); continue }
                guard section == profile, let eq = line.firstIndex(of: "=") else { continue }
                found[line[..<eq].trimmingCharacters(in: .whitespaces)] = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            }
            if let a = found["aws_access_key_id"], let s = found["aws_secret_access_key"] {
                return S3Credentials(accessKey: a, secretKey: s, sessionToken: found["aws_session_token"])
            }
        }
        throw .io(EACCES, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give profile \(profile) in \(file)")
    }
}

/// An S3 bucket over HTTP(S), path-style (`ENDPOINT/BUCKET/KEY`, which AWS and every S3-compatible
/// server take), each request signed with SigV4 and its payload's SHA-256 (also sent as
/// `x-amz-checksum-sha256`, so the server refuses a body damaged on the way). A request that fails on
/// the network or with a 5xx or 429 is tried again up to `attempts` times, waiting 0.1 s, 0.2 s, 0.4 s…
/// between; the calls block their thread (never call them on an event loop).
public final class S3Client: ObjectBucket, @unchecked Sendable {
    public let location: S3Location
    let signer: SigV4
    let client: HTTPClient
    let host: String
    let attempts: Int
    let timeout: TimeAmount
    private let counts = Mutex(RequestCounts())

    public init(location: S3Location, credentials: S3Credentials, attempts: Int = 5, timeout: TimeAmount = .seconds(60)) {
        self.location = location
        signer = SigV4(accessKey: credentials.accessKey, secretKey: credentials.secretKey, sessionToken: credentials.sessionToken,
                       region: location.region)
        let u = URL(string: location.endpoint)!
        let defaultPort = u.scheme == "https" ? 443 : 80
        host = u.port.map { $0 == defaultPort ? u.host! : "\(u.host!):\($0)" } ?? u.host!
        client = S3Client.http
        self.attempts = attempts
        self.timeout = timeout
    }

    public var requests: RequestCounts { counts.withLock { $0 } }

    /// The process's client for object storage: a failed connection fails its attempt at once (the
    /// attempts above retry, with backoff) instead of AsyncHTTPClient's retrying until the deadline,
    /// which made a checkpoint with the server gone wait 5 × 60 s for its EIO; connections time out
    /// after 5 s, reads after 60 s.
    static let http: HTTPClient = {
        var c = HTTPClient.Configuration()
        c.timeout = .init(connect: .seconds(5), read: .seconds(60))
        c.connectionPool.retryConnectionEstablishment = false
        c.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: c)
    }()

    func path(_ key: String) -> String { "/\(location.bucket)/" + SigV4.uriEncode(location.prefix + key, slash: false) }

    @discardableResult
    public func put(_ key: String, _ bytes: [UInt8], ifAbsent: Bool = false) throws -> Bool {
        let digest = SHA256.hash(data: bytes)
        var headers = [("content-type", "application/octet-stream"), ("x-amz-checksum-sha256", Data(digest).base64EncodedString())]
        if ifAbsent { headers.append(("if-none-match", "*")) }
        let r = try send("PUT", path(key), headers: headers, body: bytes, payloadHash: SigV4.hex(digest))
        counts.withLock { $0.puts += 1; $0.bytesSent += Int64(bytes.count) }
        if ifAbsent && (r.status == 412 || r.status == 409) { return false }
        try check(r, "PUT \(key)")
        return true
    }

    public func get(_ key: String, range: Range<Int64>?) throws -> [UInt8]? {
        var headers: [(String, String)] = []
        if let range { headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")) }
        let r = try send("GET", path(key), headers: headers, body: nil, payloadHash: SigV4.emptyHash)
        counts.withLock { $0.gets += 1; $0.bytesReceived += Int64(r.body.count) }
        if r.status == 404 && S3Client.code(r.body) != "NoSuchBucket" { return nil }
        try check(r, "GET \(key)")
        if let range, r.status == 200, r.body.count > range.count {
            // A server that ignores Range sends it all.
            return Array(r.body[Int(range.lowerBound)..<min(r.body.count, Int(range.upperBound))])
        }
        return r.body
    }

    public func delete(_ key: String) throws {
        let r = try send("DELETE", path(key), headers: [], body: nil, payloadHash: SigV4.emptyHash)
        counts.withLock { $0.deletes += 1 }
        if r.status == 404 && S3Client.code(r.body) != "NoSuchBucket" { return }
        try check(r, "DELETE \(key)")
    }

    public func list(prefix: String) throws -> [(key: String, size: Int64)] {
        var out: [(key: String, size: Int64)] = []
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", location.prefix + prefix)]
            if let token { query.append(("continuation-token", token)) }
            let r = try send("GET", "/\(location.bucket)", query: query, headers: [], body: nil, payloadHash: SigV4.emptyHash)
            counts.withLock { $0.lists += 1; $0.bytesReceived += Int64(r.body.count) }
            try check(r, "LIST \(prefix)")
            let xml = String(decoding: r.body, as: UTF8.self)
            for item in S3Client.elements("Contents", in: xml) {
                guard let key = S3Client.elements("Key", in: item).first.map(S3Client.unescape),
                      let size = S3Client.elements("Size", in: item).first.flatMap({ Int64($0) }) else { continue }
                out.append((String(key.dropFirst(location.prefix.count)), size))
            }
            token = S3Client.elements("IsTruncated", in: xml).first == "true" ? S3Client.elements("NextContinuationToken", in: xml).first.map(S3Client.unescape) : nil
        } while token != nil
        return out
    }

    struct Response { var status: Int; var body: [UInt8] }

    /// One signed request, tried again on network failures, 5xx and 429.
    func send(_ method: String, _ path: String, query: [(String, String)] = [], headers: [(String, String)], body: [UInt8]?,
              payloadHash: String) throws -> Response {
        var url = location.endpoint + path
        if !query.isEmpty { url += "?" + SigV4.canonicalQuery(query) }
        var lastFailure = ""
        for attempt in 0..<attempts {
            if attempt > 0 { usleep(useconds_t(100_000 << min(attempt - 1, 5))) }
            var all = headers + [("host", host)]
            all += signer.sign(method: method, path: path, query: query, headers: all, payloadHash: payloadHash, date: Date())
            do {
                var request = try HTTPClient.Request(url: url, method: HTTPMethod(rawValue: method), headers: HTTPHeaders(all))
                if let body { request.body = .bytes(body) }
                let response = try client.execute(request: request, deadline: .now() + timeout).wait()
                let bytes = response.body.map { Array($0.readableBytesView) } ?? []
                let status = Int(response.status.code)
                if status >= 500 || status == 429 {
                    lastFailure = "HTTP \(status)\(S3Client.code(bytes).map { " \($0)" } ?? "")"
                    continue
                }
                return Response(status: status, body: bytes)
            } catch {
                lastFailure = "\(error)".prefix(200).description
            }
        }
        throw StoreError.io(EIO, "S3 \(method) \(location.endpoint)\(path) failed \(attempts) times (last: \(lastFailure))")
    }

    /// Throws the error a non-2xx answer stands for.
    func check(_ r: Response, _ what: String) throws {
        guard !(200..<300).contains(r.status) else { return }
        let code = S3Client.code(r.body) ?? "HTTP \(r.status)"
        let message = S3Client.elements("Message", in: String(decoding: r.body, as: UTF8.self)).first.map { ": \(S3Client.unescape($0))" } ?? ""
        let errno: Int32 = switch (r.status, code) {
        case (403, _), (401, _): EACCES
        case (_, "NoSuchBucket"): ENOENT
        case (400, _): EINVAL
        default: EIO
        }
        throw StoreError.io(errno, "S3 \(what) in \(location.url): \(code)\(message)")
    }

    /// The `Code` of an S3 error body.
    static func code(_ body: [UInt8]) -> String? { elements("Code", in: String(decoding: body, as: UTF8.self)).first }

    /// The texts of every `<name>…</name>` in `xml` (S3's answers nest simply; no attributes on these).
    static func elements(_ name: String, in xml: String) -> [String] {
        var out: [String] = []
        var rest = xml[...]
        while let open = rest.range(of: "<\(name)>"), let close = rest.range(of: "</\(name)>", range: open.upperBound..<rest.endIndex) {
            out.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return out
    }

    static func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}

/// A bucket in memory (tests); `failing` makes every request fail as a cut-off network does.
public final class MemoryBucket: ObjectBucket, @unchecked Sendable {
    private struct State { var objects: [String: [UInt8]] = [:]; var counts = RequestCounts(); var failing = false }
    private let state = Mutex(State())

    public init() {}

    public var failing: Bool {
        get { state.withLock { $0.failing } }
        set { state.withLock { $0.failing = newValue } }
    }

    public var requests: RequestCounts { state.withLock { $0.counts } }

    public var keys: [String] { state.withLock { $0.objects.keys.sorted() } }

    func guardNetwork(_ what: String) throws {
        if failing { throw StoreError.io(EIO, "S3 \(what) failed 5 times (last: connection refused)") }
    }

    @discardableResult
    public func put(_ key: String, _ bytes: [UInt8], ifAbsent: Bool) throws -> Bool {
        try guardNetwork("PUT \(key)")
        return state.withLock { s in
            s.counts.puts += 1
            s.counts.bytesSent += Int64(bytes.count)
            if ifAbsent && s.objects[key] != nil { return false }
            s.objects[key] = bytes
            return true
        }
    }

    public func get(_ key: String, range: Range<Int64>?) throws -> [UInt8]? {
        try guardNetwork("GET \(key)")
        return state.withLock { s in
            s.counts.gets += 1
            guard let all = s.objects[key] else { return nil }
            let part = range.map { Array(all[Int($0.lowerBound)..<min(all.count, Int($0.upperBound))]) } ?? all
            s.counts.bytesReceived += Int64(part.count)
            return part
        }
    }

    public func delete(_ key: String) throws {
        try guardNetwork("DELETE \(key)")
        state.withLock { s in s.counts.deletes += 1; s.objects[key] = nil }
    }

    public func list(prefix: String) throws -> [(key: String, size: Int64)] {
        try guardNetwork("LIST \(prefix)")
        return state.withLock { s in
            s.counts.lists += 1
            return s.objects.filter { $0.key.hasPrefix(prefix) }.map { ($0.key, Int64($0.value.count)) }.sorted { $0.key < $1.key }
        }
    }
}
