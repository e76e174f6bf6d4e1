#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import CLinux

/// The store's one chokepoint for file system calls: each failure becomes a `StoreError` naming the path.
public enum FileIO {
    /// lseek's SEEK_DATA and SEEK_HOLE (Glibc's Swift module does not show them: they need _GNU_SOURCE).
    public static let seekData: Int32 = 3, seekHole: Int32 = 4
    /// Opens a file of the store; one it creates gets the store's mode (`StoreFiles`).
    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = StoreFiles.fileMode) throws -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        if fd < 0 { throw StoreError.fromErrno("open \(path)") }
        if flags & O_CREAT != 0 { StoreFiles.settle(fd: fd) }
        return fd
    }

    /// Writes all of `buffer` at `offset`.
    public static func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64, _ what: @autoclosure () -> String) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError.fromErrno(what())
            }
            done += n
        }
    }

    /// Reads up to `count` bytes at `offset`; fewer only at end of file.
    public static func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, _ what: @autoclosure () -> String) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError.fromErrno(what())
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads a whole file, including /proc files whose size reads as 0.
    public static func readFile(_ path: String) throws -> [UInt8] {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StoreError.fromErrno("stat \(path)") }
        var out = [UInt8](repeating: 0, count: max(Int(st.st_size), 4096))
        var used = 0
        while true {
            if used == out.count { out += [UInt8](repeating: 0, count: out.count) }
            let n = try out.withUnsafeMutableBytes { b in
                try pread(fd, into: UnsafeMutableRawBufferPointer(rebasing: b[used...]), at: Int64(used), "read \(path)")
            }
            used += n
            if used < out.count { break }
        }
        out.removeLast(out.count - used)
        return out
    }

    /// fallocate(2) on a descriptor (Glibc's Swift module does not show it).
    public static func fallocate(_ fd: Int32, mode: Int32, offset: UInt64, length: UInt64, _ what: String) throws {
        if CLinux.fallocate(fd, mode, Int(offset), Int(length)) != 0 { throw StoreError.fromErrno(what) }
    }

    /// Publishes `bytes` at `path` atomically: a temp file beside it, optionally fsync'ed, renamed into place.
    public static func atomicWrite(_ path: String, _ bytes: [UInt8], sync: Bool) throws {
        let temp = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = try open(temp, O_WRONLY | O_CREAT | O_EXCL)
        do {
            try bytes.withUnsafeBytes { (b) in try pwriteAll(fd, b, at: 0, "write \(temp)") }
            if sync && fsync(fd) != 0 { throw StoreError.fromErrno("fsync \(temp)") }
        } catch {
            close(fd); unlink(temp)
            throw error
        }
        close(fd)
        if rename(temp, path) != 0 {
            let e = StoreError.fromErrno("rename \(temp)")
            unlink(temp)
            throw e
        }
    }

    /// Creates a directory and its parents (with the store's mode); existing ones are fine.
    public static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if !StoreFiles.makeDirectory(current) && errno != EEXIST { throw StoreError.fromErrno("mkdir \(current)") }
        }
    }

    /// An extended attribute's value, or nil when it cannot be read.
    public static func xattr(_ path: String, _ name: String) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { getxattr(path, name, $0.baseAddress, $0.count) }
        return n < 0 ? nil : Array(buffer[0..<n])
    }

    /// The names in a directory (without `.` and `..`), each with whether it is a directory; empty when
    /// it cannot be opened.
    public static func entries(of path: String) -> [(name: String, isDirectory: Bool)] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var out: [(name: String, isDirectory: Bool)] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { out.append((name, e.pointee.d_type == UInt8(DT_DIR))) }
        }
        return out
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// Bytes an unprivileged writer may still use on the file system holding `path`; nil when unknown.
    public static func freeBytes(on path: String) -> Int64? {
        var st = statvfs()
        return statvfs(path, &st) == 0 ? Int64(st.f_bavail) * Int64(st.f_frsize) : nil
    }

    /// Flushes every file system buffer of the file system holding `path` (one call instead of an fsync per file).
    public static func syncFileSystem(of path: String) throws {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        if syncfs(fd) != 0 { throw StoreError.fromErrno("syncfs \(path)") }
    }
}
