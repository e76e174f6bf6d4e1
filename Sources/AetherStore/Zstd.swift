import AetherModel
import CZstd

/// zstd compression of single objects.
enum Zstd {
    static let level: Int32 = 3

    static func compress(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        let bound = ZSTD_compressBound(input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let written = out.withUnsafeMutableBytes { o in
            ZSTD_compress(o.baseAddress, bound, input.baseAddress, input.count, level)
        }
        if ZSTD_isError(written) != 0 { return nil }
        out.removeLast(bound - written)
        return out
    }

    /// Decompresses into exactly `size` bytes, or nil when the frame is damaged or of another size.
    static func decompress(_ input: UnsafeRawBufferPointer, size: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: size)
        let got = out.withUnsafeMutableBytes { o in
            ZSTD_decompress(o.baseAddress, size, input.baseAddress, input.count)
        }
        if ZSTD_isError(got) != 0 || got != size { return nil }
        return out
    }
}
