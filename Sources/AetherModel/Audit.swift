#if canImport(Glibc)
import Glibc
#endif
import Crypto

/// One entry of the audit log: who did what, to which session, with what result. The log is
/// append-only and hash-chained: each entry's `hash` seals its fields and the `prev` hash of the entry
/// before it, so an entry altered or removed breaks the chain at the next one.
public struct AuditRecord: Sendable, Equatable, Codable {
    public var id: Int64
    public var time: Double
    public var uid: UInt32
    /// The acting process, where known (0 otherwise).
    public var pid: Int32
    public var action: String
    public var session: String
    public var detail: String
    /// `ok`, or `refused: REASON`.
    public var result: String
    public var prev: String
    public var hash: String

    /// The `prev` of the first entry.
    public static let genesis = String(repeating: "0", count: 64)

    public init(id: Int64 = 0, time: Double = secondsNow(), uid: UInt32, pid: Int32 = getpid(), action: String, session: String,
                detail: String, result: String = "ok", prev: String = "", hash: String = "") {
        self.id = id; self.time = time; self.uid = uid; self.pid = pid; self.action = action; self.session = session
        self.detail = detail; self.result = result; self.prev = prev; self.hash = hash
    }

    /// The hash of this entry's fields after `prev`: SHA-256 over each field, length-prefixed (the
    /// time as its IEEE bits), so no two entries' fields run together the same way.
    public func computedHash() -> String {
        var h = SHA256()
        func field(_ bytes: [UInt8]) {
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { h.update(bufferPointer: $0) }
            bytes.withUnsafeBytes { h.update(bufferPointer: $0) }
        }
        func number(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { h.update(bufferPointer: $0) } }
        field(Array("aetherfs-audit-1".utf8))
        number(UInt64(bitPattern: id))
        number(time.bitPattern)
        number(UInt64(uid))
        number(UInt64(UInt32(bitPattern: pid)))
        for s in [action, session, detail, result, prev] { field(Array(s.utf8)) }
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: h.finalize().flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    /// This entry as the next after `prev` (the last entry's hash, or `genesis`), numbered `id`.
    public func sealed(id: Int64, after prev: String) -> AuditRecord {
        var r = self
        r.id = id
        r.prev = prev
        r.hash = r.computedHash()
        return r
    }

    /// The first entry of `records` (oldest first, the whole log) that breaks the chain, with why;
    /// nil when every entry holds.
    public static func firstBreak(_ records: [AuditRecord]) -> (id: Int64, reason: String)? {
        var prev = genesis
        for r in records {
            if r.prev != prev {
                return (r.id, prev == genesis ? "it is the first entry but follows another" : "the entry before it was altered or removed")
            }
            if r.computedHash() != r.hash { return (r.id, "its fields were altered") }
            prev = r.hash
        }
        return nil
    }
}
