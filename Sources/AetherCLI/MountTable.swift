#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore

/// `path` made absolute against the working directory, without touching the path itself.
func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buffer, buffer.count) != nil else { return path }
    return String(cString: buffer) + "/" + path
}

/// Reads /proc/self/mountinfo.
enum MountTable {
    /// Detaches the aetherfs mount at `path` when its daemon is gone (every access fails with
    /// ENOTCONN, "Transport endpoint is not connected"). A live mount, or another file system, is left.
    static func detachIfDead(_ path: String) {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard isMounted(trimmed, type: "fuse.aetherfs") else { return }
        // statvfs always reaches the daemon (a stat may be answered from the kernel's cache).
        var st = statvfs()
        guard statvfs(trimmed, &st) != 0, errno == ENOTCONN else { return }
        if umount2(trimmed, Int32(MNT_DETACH)) != 0 { _ = try? Spawn.wait(["fusermount3", "-uz", trimmed]) }
    }

    static func isMounted(_ path: String, type: String? = nil) -> Bool {
        guard let bytes = try? FileIO.readFile("/proc/self/mountinfo") else { return false }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { continue }
            guard unescape(String(fields[4])) == path else { continue }
            guard let type else { return true }
            if let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields[dash + 1] == type { return true }
        }
        return false
    }

    private static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.first {
            if b == UInt8(ascii: "\\"), bytes.count >= 4, let v = UInt8(String(decoding: bytes.dropFirst().prefix(3), as: UTF8.self), radix: 8) {
                out.append(v); bytes = bytes.dropFirst(4)
            } else {
                out.append(b); bytes = bytes.dropFirst()
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
