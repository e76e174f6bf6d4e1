import AetherModel
/// Content-defined chunking with FastCDC: a gear rolling hash with normalized chunking.
///
/// Sizes: minimum 16 KiB, average 64 KiB, maximum 256 KiB. Below the average a cut needs 18 zero bits
/// of the hash, above it 14 (normalization level 2), so chunk sizes cluster near the average. The gear
/// table comes from splitmix64 with a fixed seed; it is part of the store format (changing it changes
/// every chunk boundary, not correctness).
public enum FastCDC {
    public static let minSize = 16 * 1024
    public static let averageSize = 64 * 1024
    public static let maxSize = 256 * 1024

    /// The top 18 bits: harder to match, used before the average size.
    static let maskSmall: UInt64 = ((1 << 18) - 1) << (64 - 18)
    /// The top 14 bits: easier to match, used after the average size.
    static let maskLarge: UInt64 = ((1 << 14) - 1) << (64 - 14)

    static let gear: [UInt64] = {
        var state: UInt64 = 0xAE7E_5F5C_0DE0_0001
        return (0..<256).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }()

    /// The length of the first chunk of `data`. When `data` is shorter than the maximum and more input
    /// follows, call again with more bytes: a cut is only final when it lies before `data.count`,
    /// or `data` is the end of the input.
    @inline(__always)
    public static func cut(_ data: UnsafeRawBufferPointer) -> Int {
        let n = data.count
        if n <= minSize { return n }
        let end = min(n, maxSize)
        let normal = min(end, averageSize)
        var fp: UInt64 = 0
        var i = minSize
        return gear.withUnsafeBufferPointer { g in
            let p = data.baseAddress!.assumingMemoryBound(to: UInt8.self)
            // Two bytes per step with the same cut points as one: the hash two bytes on is
            // (fp << 2) + (gear[a] << 1) + gear[b], so the loop-carried chain is one shift and one add
            // per two bytes; the hash in between is still computed and checked.
            @inline(__always) func scan(_ mask: UInt64, _ limit: Int) -> Int? {
                while i + 1 < limit {
                    let a = g[Int(p[i])], b = g[Int(p[i + 1])]
                    if ((fp << 1) &+ a) & mask == 0 { return i + 1 }
                    fp = (fp << 2) &+ ((a << 1) &+ b)
                    if fp & mask == 0 { return i + 2 }
                    i += 2
                }
                if i < limit {
                    fp = (fp << 1) &+ g[Int(p[i])]
                    if fp & mask == 0 { return i + 1 }
                    i += 1
                }
                return nil
            }
            if let cut = scan(maskSmall, normal) { return cut }
            if let cut = scan(maskLarge, end) { return cut }
            return end
        }
    }
}
