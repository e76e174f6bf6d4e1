import Synchronization
import AetherModel
import AetherCore

/// What a mount's daemon does: requests per operation with their count, errors and latency
/// percentiles, the bytes read and written through it, the session actions it ran. The FUSE adapter
/// records every request it answers (from its I/O hook: one clock per request); `.aether/stats` and
/// `aetherfs stats` show it with the content store's cache and object counts.
public final class RequestStats: Sendable {
    /// The one a daemon records into (one mount per process).
    public static let shared = RequestStats()

    struct Operation {
        var count: UInt64 = 0
        var errors: UInt64 = 0
        var totalNanos: UInt64 = 0
        var maxNanos: UInt64 = 0
        /// Latencies in buckets of an eighth of an octave (`bucket(of:)`).
        var buckets = [UInt32](repeating: 0, count: 512)
    }

    struct State {
        var operations: [String: Operation] = [:]
        var bytesRead: UInt64 = 0
        var bytesWritten: UInt64 = 0
        var actions: [String: UInt64] = [:]
    }

    private let state = Mutex(State())
    let since = secondsNow()

    public init() {}

    static func bucket(of nanos: UInt64) -> Int {
        guard nanos >= 8 else { return Int(nanos) }
        let octave = 63 - nanos.leadingZeroBitCount
        return min(511, octave * 8 + Int((nanos >> (octave - 3)) & 7))
    }

    /// The smallest latency of bucket `b`.
    static func floor(of b: Int) -> UInt64 {
        guard b >= 8 else { return UInt64(b) }
        let octave = b / 8
        return (UInt64(8 + b % 8)) << (octave - 3)
    }

    public func record(_ op: String, nanos: UInt64, failed: Bool) {
        state.withLock { s in
            var o = s.operations[op] ?? Operation()
            o.count += 1
            if failed { o.errors += 1 }
            o.totalNanos &+= nanos
            o.maxNanos = max(o.maxNanos, nanos)
            o.buckets[RequestStats.bucket(of: nanos)] += 1
            s.operations[op] = o
        }
    }

    public func transferred(read: UInt64 = 0, written: UInt64 = 0) {
        state.withLock { $0.bytesRead &+= read; $0.bytesWritten &+= written }
    }

    /// A session action (checkpoint, restore, …) the control surface ran.
    public func action(_ verb: String) { state.withLock { $0.actions[verb, default: 0] += 1 } }

    public struct Latency: Codable, Equatable, Sendable {
        public var count: UInt64
        public var errors: UInt64
        public var meanUs: Double
        public var p50Us: Double
        public var p90Us: Double
        public var p99Us: Double
        public var maxUs: Double
        enum CodingKeys: String, CodingKey {
            case count, errors, meanUs = "mean_us", p50Us = "p50_us", p90Us = "p90_us", p99Us = "p99_us", maxUs = "max_us"
        }
    }

    public struct Snapshot: Codable, Sendable {
        public var since: String
        public var requests: [String: Latency]
        public var bytesRead: UInt64
        public var bytesWritten: UInt64
        public var actions: [String: UInt64]
        public var cache: ContentStore.CacheCounts
        public var objects: ObjectCounts
        enum CodingKeys: String, CodingKey {
            case since, requests, bytesRead = "bytes_read", bytesWritten = "bytes_written", actions, cache, objects
        }
    }

    public struct ObjectCounts: Codable, Sendable {
        public var written: Int64
        public var writtenBytes: Int64
        public var read: Int64
        public var readBytes: Int64
        enum CodingKeys: String, CodingKey { case written, writtenBytes = "written_bytes", read, readBytes = "read_bytes" }
    }

    /// The counts now, with the content store's.
    public func snapshot(content: ContentStore) -> Snapshot {
        let s = state.withLock { $0 }
        var requests: [String: Latency] = [:]
        for (op, o) in s.operations {
            func percentile(_ q: Double) -> Double {
                let rank = UInt64((Double(o.count) * q).rounded(.up))
                var seen: UInt64 = 0
                for (b, n) in o.buckets.enumerated() where n > 0 {
                    seen += UInt64(n)
                    if seen >= rank { return Double(RequestStats.floor(of: b)) / 1000 }
                }
                return Double(o.maxNanos) / 1000
            }
            requests[op] = Latency(count: o.count, errors: o.errors, meanUs: o.count == 0 ? 0 : Double(o.totalNanos) / Double(o.count) / 1000,
                                   p50Us: percentile(0.5), p90Us: percentile(0.9), p99Us: percentile(0.99), maxUs: Double(o.maxNanos) / 1000)
        }
        let objects = content.objects
        return Snapshot(since: isoTime(since), requests: requests, bytesRead: s.bytesRead, bytesWritten: s.bytesWritten, actions: s.actions,
                        cache: content.cacheCounts,
                        objects: ObjectCounts(written: objects.writtenCount, writtenBytes: objects.written, read: objects.readCount, readBytes: objects.readBytes))
    }
}
