#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The one clock of AetherFS: records' times, files' times and intervals each read it here.

/// Now, as a file's time: the kernel's coarse clock, which it stamps files with itself. With the
/// writeback cache the kernel keeps a file's mtime and sends it back only when its own stamp differs:
/// a finer clock here makes every created-then-written file cost one more SETATTR round trip.
public func fileTimeNow() -> Int64 { read(CLOCK_REALTIME_COARSE) }

/// Nanoseconds since the epoch.
public func nanosecondsNow() -> Int64 { read(CLOCK_REALTIME) }

/// Seconds since the epoch, as records store them.
public func secondsNow() -> Double { Double(nanosecondsNow()) / 1e9 }

/// Nanoseconds of the monotonic clock (intervals only).
public func monotonicNanoseconds() -> Int64 { read(CLOCK_MONOTONIC) }

private func read(_ clock: clockid_t) -> Int64 {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// A time in seconds since the epoch as ISO 8601 in UTC, to the second.
public func isoTime(_ t: Double) -> String {
    var seconds = time_t(t)
    var tmv = tm()
    gmtime_r(&seconds, &tmv)
    return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour, tmv.tm_min, tmv.tm_sec)
}

/// A length of time as people write it: a number and `s`, `m`, `h` or `d` (`0s`, `90s`, `30m`, `1h`,
/// `2.5d`). Kept with its text, which is how it is shown again.
public struct TimeSpan: Sendable, Equatable, Codable, CustomStringConvertible {
    public let text: String
    public let seconds: Double

    /// Nil when `text` is not of that form.
    public init?(_ text: String) {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        guard let unit = text.last, let scale = units[unit], let n = Double(text.dropLast()), n >= 0, n.isFinite,
              !text.dropLast().contains(where: { !$0.isNumber && $0 != "." }) else { return nil }
        self.text = text
        seconds = n * scale
    }

    public static let form = "a number and s, m, h or d (e.g. 0s, 30m, 1h, 7d)"

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        guard let span = TimeSpan(text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "\"\(text)\" is not \(TimeSpan.form)")
        }
        self = span
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }

    public var description: String { text }
}
