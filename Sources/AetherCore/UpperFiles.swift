#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherStore
import Dispatch

/// A session's upper files: one file per inode whose bytes the working layer holds, named by the inode
/// in one directory; a pool of empty spare files in `spare/` that new upper files are renamed from; and
/// `reclaim/`, where removed upper files wait for a thread of their own to free their blocks.
///
/// Measured on this machine (ext4 without a journal, mounted with `discard`): creating a file after many
/// were deleted costs ~500 µs, as ext4 then tests each inode freed in the last minute or more before it
/// hands out one; unlinking or truncating a small written file ~185 µs (the blocks are discarded as they
/// are freed); a rename ~26 µs. So a removal is a rename into `reclaim/` under the caller's lock, the
/// freeing happens beside the requests, and a creation is a rename out of `spare/`. A spare is only
/// ever empty; a crash leaves at most files in `reclaim/` (emptied when the session is next opened) or
/// an upper file without a row, which loading removes as before.
final class UpperFiles: @unchecked Sendable {
    let directory: String
    private let spareDirectory: String
    private let reclaimDirectory: String
    private let reclaimer = DispatchQueue(label: "aetherfs.upper-reclaim")
    private let lock = Lock()
    /// The names of the empty files in `spare/` (guarded by `lock`).
    private var spares: [String] = []
    /// Spares plus files on their way to become one (guarded by `lock`).
    private var reserved = 0
    /// The next name for a file in `reclaim/` or `spare/` (guarded by `lock`).
    private var nextName = 0
    /// Beyond this many spares a removed upper file is unlinked (on the reclaiming thread).
    static let maxSpares = 65_536

    init(directory: String) throws(AetherError) {
        self.directory = directory
        spareDirectory = directory + "/spare"
        reclaimDirectory = directory + "/reclaim"
        try domain {
            try FileIO.makeDirectories(spareDirectory)
            try FileIO.makeDirectories(reclaimDirectory)
        }
        for name in UpperFiles.names(in: spareDirectory) {
            guard let n = Int(name) else { unlink(spareDirectory + "/" + name); continue }
            spares.append(name)
            nextName = max(nextName, n + 1)
        }
        for name in UpperFiles.names(in: reclaimDirectory) {
            if let n = Int(name), spares.count < UpperFiles.maxSpares, truncate(reclaimDirectory + "/" + name, 0) == 0,
               rename(reclaimDirectory + "/" + name, spareDirectory + "/" + name) == 0 {
                spares.append(name)
                nextName = max(nextName, n + 1)
            } else {
                unlink(reclaimDirectory + "/" + name)
            }
        }
        reserved = spares.count
    }

    func path(_ ino: UInt64) -> String { "\(directory)/\(ino)" }

    /// Makes the upper file of `ino` exist and be empty; returns it opened read-write when `open`.
    @discardableResult
    func createEmpty(_ ino: UInt64, open: Bool = false) throws(AetherError) -> Int32 {
        let target = path(ino)
        while let spare = lock.withLock({ () -> String? in
            guard let s = spares.popLast() else { return nil }
            reserved -= 1
            return s
        }) {
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

    /// Removes the upper file of `ino` now; its blocks are freed soon after, on another thread, and it
    /// becomes a spare while there is room.
    func remove(_ ino: UInt64) {
        let (name, keep) = lock.withLock { () -> (String, Bool) in
            nextName += 1
            let keep = reserved < UpperFiles.maxSpares
            if keep { reserved += 1 }
            return (String(nextName - 1), keep)
        }
        let pending = reclaimDirectory + "/" + name
        guard rename(path(ino), pending) == 0 else {
            if keep { lock.withLock { reserved -= 1 } }
            unlink(path(ino))
            return
        }
        reclaimer.async { [self] in
            if keep, truncate(pending, 0) == 0, rename(pending, spareDirectory + "/" + name) == 0 {
                lock.withLock { spares.append(name) }
            } else {
                unlink(pending)
                if keep { lock.withLock { reserved -= 1 } }
            }
        }
    }

    /// Waits until every removed file is freed (tests).
    func settle() { reclaimer.sync {} }

    /// Removes the upper files for which `keep` says no (a crash can leave some behind).
    func removeStrays(keep: (UInt64) -> Bool) {
        for name in UpperFiles.names(in: directory) {
            guard let ino = UInt64(name) else { continue }
            if !keep(ino) { remove(ino) }
        }
    }

    /// What a session no process holds has left in its upper directory `directory`: files in
    /// `reclaim/` (a crash before they were freed), upper files of inodes `upper` does not name (a crash
    /// before their rows went), and, with `spares`, the pool of empty spares. Removes them unless
    /// `dryRun`; returns their number and bytes.
    static func sweep(_ directory: String, upper: Set<UInt64>, spares: Bool, dryRun: Bool) -> (files: Int, bytes: Int64) {
        var files = 0, bytes: Int64 = 0
        func take(_ path: String) {
            var st = stat()
            guard stat(path, &st) == 0 else { return }
            files += 1
            bytes += Int64(st.st_blocks) * 512
            if !dryRun { unlink(path) }
        }
        for name in names(in: directory + "/reclaim") { take(directory + "/reclaim/" + name) }
        if spares { for name in names(in: directory + "/spare") { take(directory + "/spare/" + name) } }
        for name in names(in: directory) where UInt64(name).map({ !upper.contains($0) }) ?? false { take(directory + "/" + name) }
        return (files, bytes)
    }

    /// The files (not directories) in `path`.
    private static func names(in path: String) -> [String] {
        FileIO.entries(of: path).filter { !$0.isDirectory }.map(\.name)
    }
}
