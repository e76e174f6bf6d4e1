import Crypto
import Foundation

/// AWS Signature Version 4 for requests with headers (the `Authorization` header form), as S3 and every
/// S3-compatible server check it. A value: the credentials, the region and the service; `sign` is pure
/// (the time is given), so AWS's published examples pin it.
public struct SigV4: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var sessionToken: String?
    public var region: String
    public var service: String

    public init(accessKey: String, secretKey: String, sessionToken: String? = nil, region: String, service: String = "s3") {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.sessionToken = sessionToken
        self.region = region
        self.service = service
    }

    /// The hex SHA-256 of no bytes: the payload hash of a request without a body.
    public static let emptyHash = sha256Hex([])

    /// The hex SHA-256 of `bytes` (a payload hash).
    public static func sha256Hex(_ bytes: [UInt8]) -> String { hex(SHA256.hash(data: bytes)) }

    /// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256` (for S3), the session
    /// token when there is one, and `Authorization`. `path` is the URI path already percent-encoded the
    /// way it is sent; `query` the decoded parameters; `headers` every other header that is sent
    /// (`host` among them), all of which are signed.
    public func sign(method: String, path: String, query: [(String, String)] = [], headers: [(String, String)],
                     payloadHash: String, date: Date) -> [(String, String)] {
        let (stamp, day) = SigV4.timestamps(date)
        var signed = headers.map { ($0.0.lowercased(), SigV4.trimmed($0.1)) }
        var added = [("x-amz-date", stamp)]
        if service == "s3" && !signed.contains(where: { $0.0 == "x-amz-content-sha256" }) { added.append(("x-amz-content-sha256", payloadHash)) }
        if let sessionToken { added.append(("x-amz-security-token", sessionToken)) }
        signed += added
        signed.sort { $0.0 < $1.0 }
        let names = signed.map(\.0).joined(separator: ";")
        let canonical = [
            method,
            path.isEmpty ? "/" : path,
            SigV4.canonicalQuery(query),
            signed.map { "\($0.0):\($0.1)\n" }.joined(),
            names,
            payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let toSign = "AWS4-HMAC-SHA256\n\(stamp)\n\(scope)\n\(SigV4.hex(SHA256.hash(data: Array(canonical.utf8))))"
        let signature = SigV4.hex(HMAC<SHA256>.authenticationCode(for: Array(toSign.utf8), using: signingKey(day: day)))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(accessKey)/\(scope), SignedHeaders=\(names), Signature=\(signature)"
        return added + [("Authorization", authorization)]
    }

    /// The key of one day: HMACs of the date, the region, the service and `aws4_request` in turn.
    func signingKey(day: String) -> SymmetricKey {
        var key = SymmetricKey(data: Array("AWS4\(secretKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        return key
    }

    /// `20130524T000000Z` and `20130524`, in UTC.
    static func timestamps(_ date: Date) -> (String, String) {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        let day = String(format: "%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday)
        return (day + String(format: "T%02d%02d%02dZ", tm.tm_hour, tm.tm_min, tm.tm_sec), day)
    }

    /// Parameters sorted by encoded name (then value), each side encoded, joined by `&`.
    static func canonicalQuery(_ query: [(String, String)]) -> String {
        let encoded: [(String, String)] = query.map { (uriEncode($0.0, slash: true), uriEncode($0.1, slash: true)) }
        let sorted = encoded.sorted { (a: (String, String), b: (String, String)) -> Bool in a.0 == b.0 ? a.1 < b.1 : a.0 < b.0 }
        return sorted.map { (k: String, v: String) -> String in k + "=" + v }.joined(separator: "&")
    }

    /// RFC 3986 encoding as SigV4 wants it: unreserved characters stay, every other byte is `%XX`
    /// (upper case); `/` stays unless `slash` is set (object keys keep theirs in paths).
    public static func uriEncode(_ s: String, slash: Bool) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            case UInt8(ascii: "/") where !slash:
                out += "/"
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    /// A header value with its ends trimmed and inner runs of spaces made one.
    static func trimmed(_ v: String) -> String {
        v.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
