#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore

// The chunker alone and the chunker with SHA-256 object ids, on one core, over pseudo-random bytes in
// memory (no I/O, no compression). Used by Scripts/bench; prints one JSON object.
// Usage: aetherfs-chunkbench [MiB] (default 256)

let mib = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 256 : 256
var data = [UInt8](repeating: 0, count: mib << 20)
var state: UInt64 = 0x9E37_79B9_7F4A_7C15
data.withUnsafeMutableBytes { b in
    let words = b.bindMemory(to: UInt64.self)
    for i in words.indices {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        words[i] = state
    }
}

func seconds(_ body: () -> Void) -> Double {
    var a = timespec(), b = timespec()
    clock_gettime(CLOCK_MONOTONIC, &a)
    body()
    clock_gettime(CLOCK_MONOTONIC, &b)
    return Double(b.tv_sec - a.tv_sec) + Double(b.tv_nsec - a.tv_nsec) / 1e9
}

/// Cuts all of `data`, calling `each` with every chunk; returns the number of chunks.
func cutAll(_ data: [UInt8], _ each: (UnsafeRawBufferPointer) -> Void) -> Int {
    data.withUnsafeBytes { all in
        var offset = 0, count = 0
        while offset < all.count {
            let rest = UnsafeRawBufferPointer(rebasing: all[offset...])
            let n = FastCDC.cut(rest)
            each(UnsafeRawBufferPointer(rebasing: rest[..<n]))
            offset += n
            count += 1
        }
        return count
    }
}

var chunks = 0
var sink: UInt64 = 0
var chunkTimes: [Double] = [], hashTimes: [Double] = []
for _ in 0..<3 {
    chunkTimes.append(seconds { chunks = cutAll(data) { sink &+= UInt64($0.count) } })
    hashTimes.append(seconds { _ = cutAll(data) { sink &+= ObjectID.of(.chunk, $0).w0 } })
}
let bytes = Double(data.count)
let chunkRate = bytes / chunkTimes.sorted()[1] / 1e6
let hashRate = bytes / hashTimes.sorted()[1] / 1e6
print("{\"bytes\":\(data.count),\"chunks\":\(chunks),\"chunker_mb_s\":\(Int(chunkRate)),\"chunker_sha256_mb_s\":\(Int(hashRate)),\"sink\":\(sink % 2)}")
