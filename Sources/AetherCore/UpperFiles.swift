#if canImport(Glibc)
import Glibc
#endif
import AetherStore

/// A session's upper files: one file per inode whose bytes the working layer holds, named by the inode
/// in one directory, and a pool of empty spare files in `spare/` that new upper files are renamed from.
///
/// Why spares: ext4 without a journal (as here) skips inodes freed in the last minute or more when it
/// allocates one, testing each in turn, so creating files after many were deleted (a checkpoint drops
/// every upper file it stored, `rm -rf` drops a tree) cost ~500 µs each instead of ~25 µs. A rename
/// allocates no inode. A spare is only ever empty; a crash leaves at most a spare unused or an upper
/// file without a row, which loading removes as before.
final class UpperFiles {
    let directory: String
    private let spareDirectory: String
    /// The names of the spare files in `spare/`, and the next name to give one.
    private var spares: [String] = []
    private var nextSpare = 0
    /// Beyond this many spares a removed upper file is unlinked.
    static let maxSpares = 65_536

    init(directory: String) throws(AetherError) {
        self.directory = directory
        spareDirectory = directory + "/spare"
        try domain { try FileIO.makeDirectories(spareDirectory) }
        for name in UpperFiles.names(in: spareDirectory) {
            if let n = Int(name) { spares.append(name); nextSpare = max(nextSpare, n + 1) } else { unlink(spareDirectory + "/" + name) }
        }
    }

    func path(_ ino: UInt64) -> String { "\(directory)/\(ino)" }

    /// Makes the upper file of `ino` exist and be empty; returns it opened read-write when `open`.
    @discardableResult
    func createEmpty(_ ino: UInt64, open: Bool = false) throws(AetherError) -> Int32 {
        let target = path(ino)
        while let spare = spares.popLast() {
            if rename(spareDirectory + "/" + spare, target) == 0 {
                guard open else { return -1 }
                let fd = Glibc.open(target, O_RDWR | O_TRUNC | O_CLOEXEC)
                if fd >= 0 { return fd }
                break
            }
        }
        let fd = Glibc.open(target, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { throw AetherError.from(StoreError.fromErrno("create upper file")) }
        if !open { close(fd); return -1 }
        return fd
    }

    /// Removes the upper file of `ino` (its bytes are freed now); it becomes a spare while there is room.
    func remove(_ ino: UInt64) {
        let source = path(ino)
        if spares.count < UpperFiles.maxSpares, truncate(source, 0) == 0 {
            let name = String(nextSpare)
            if rename(source, spareDirectory + "/" + name) == 0 {
                nextSpare += 1
                spares.append(name)
                return
            }
        }
        unlink(source)
    }

    /// Removes the upper files for which `keep` says no (a crash can leave some behind).
    func removeStrays(keep: (UInt64) -> Bool) {
        for name in UpperFiles.names(in: directory) {
            guard let ino = UInt64(name) else { continue }
            if !keep(ino) { remove(ino) }
        }
    }

    private static func names(in path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." && e.pointee.d_type != UInt8(DT_DIR) { names.append(name) }
        }
        return names
    }
}
