#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Immutable objects (chunks, manifests, trees) in a directory, one file each, named by id.
///
/// An object file is: magic `AEO`, format version 1, kind, compression (0 none, 1 zstd), the raw
/// length as 8 little-endian bytes, then the payload. Every read decompresses and re-hashes: an object
/// whose bytes do not match its id is reported as damaged, never returned.
public final class ObjectStore: @unchecked Sendable {
    public static let formatVersion: UInt8 = 1
    static let magic: [UInt8] = Array("AEO".utf8)
    static let headerSize = 14

    public let directory: String
    let logger: Logger

    public init(directory: String, logger: Logger = Logger(label: "aetherfs.store")) throws {
        self.directory = directory
        self.logger = logger
        try FileIO.makeDirectories(directory)
    }

    deinit {
        pthread_mutex_destroy(roomMutex)
        roomMutex.deallocate()
    }

    func path(of id: ObjectID) -> String {
        let hex = id.hex
        return "\(directory)/\(hex.prefix(2))/\(hex.dropFirst(2))"
    }

    public func contains(_ id: ObjectID) -> Bool { FileIO.exists(path(of: id)) }

    /// Stores `content` as `kind` unless an object with its id exists; returns the id.
    /// Not durable until `sync()` returns.
    @discardableResult
    public func put(_ kind: ObjectKind, _ content: UnsafeRawBufferPointer) throws -> ObjectID {
        let id = ObjectID.of(kind, content)
        try put(id, kind, content)
        return id
    }

    @discardableResult
    public func put(_ kind: ObjectKind, _ content: [UInt8]) throws -> ObjectID {
        try content.withUnsafeBytes { (b) in try put(kind, b) }
    }

    /// Stores `content` under a precomputed id (the caller hashed it already).
    public func put(_ id: ObjectID, _ kind: ObjectKind, _ content: UnsafeRawBufferPointer) throws {
        let target = path(of: id)
        if FileIO.exists(target) { return }
        try ensureRoom(for: content.count)
        var file = ObjectStore.magic + [ObjectStore.formatVersion, kind.rawValue, 0]
        withUnsafeBytes(of: UInt64(content.count).littleEndian) { file += $0 }
        if content.count > 64, let packed = Zstd.compress(content), packed.count < content.count - content.count / 32 {
            file[5] = 1
            file += packed
        } else {
            file += content
        }
        let dir = String(target.dropLast(62))
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw StoreError.fromErrno("mkdir \(dir)") }
        try FileIO.atomicWrite(target, file, sync: false)
    }

    /// Reads, decompresses and verifies an object of the expected kind.
    public func get(_ id: ObjectID, _ kind: ObjectKind) throws -> [UInt8] {
        let file: [UInt8]
        do { file = try FileIO.readFile(path(of: id)) } catch StoreError.io(ENOENT, _) {
            throw StoreError.missing(id)
        }
        guard file.count >= ObjectStore.headerSize, Array(file[0..<3]) == ObjectStore.magic else {
            throw StoreError.damaged(id, "not an object file")
        }
        guard file[3] == ObjectStore.formatVersion else {
            throw StoreError.unsupportedFormat("object \(id.hex) has format \(file[3]); this aetherfs reads format \(ObjectStore.formatVersion)")
        }
        guard file[4] == kind.rawValue else { throw StoreError.damaged(id, "holds kind \(file[4]), expected a \(kind.name)") }
        var raw: UInt64 = 0
        for i in 0..<8 { raw |= UInt64(file[6 + i]) << UInt64(8 * i) }
        guard raw <= 1 << 32 else { throw StoreError.damaged(id, "impossible length \(raw)") }
        let content: [UInt8]
        switch file[5] {
        case 0:
            content = Array(file[ObjectStore.headerSize...])
        case 1:
            guard let out = file.withUnsafeBytes({ Zstd.decompress(UnsafeRawBufferPointer(rebasing: $0[ObjectStore.headerSize...]), size: Int(raw)) }) else {
                throw StoreError.damaged(id, "zstd data does not decode")
            }
            content = out
        default:
            throw StoreError.damaged(id, "unknown compression \(file[5])")
        }
        guard content.count == Int(raw) else { throw StoreError.damaged(id, "length \(content.count) instead of \(raw)") }
        guard ObjectID.of(kind, content) == id else {
            logger.error("object failed verification", metadata: ["id": "\(id.hex)"])
            throw StoreError.damaged(id, "content does not match its hash")
        }
        return content
    }

    /// Space kept free for metadata: data writes fail with ENOSPC before the disk is full, so that
    /// deleting files (which writes to the database) still works on a full store.
    public static let headroom: Int64 = 16 << 20

    /// Throws `noSpace` when writing `bytes` would eat into the headroom. The free space is measured
    /// again when 100 ms have passed or the writes since the last measurement come near the headroom,
    /// so that small writes do not each cost a `statvfs`.
    public func ensureRoom(for bytes: Int) throws {
        let now = monotonicNanoseconds()
        pthread_mutex_lock(roomMutex)
        defer { pthread_mutex_unlock(roomMutex) }
        room.spent += Int64(bytes)
        if now - room.measured < 100_000_000 && room.free - room.spent > 4 * ObjectStore.headroom { return }
        func measure() -> Int64? {
            var st = statvfs()
            return statvfs(directory, &st) == 0 ? Int64(st.f_bavail) * Int64(st.f_frsize) : nil
        }
        guard var free = measure() else { return }
        if free - Int64(bytes) < ObjectStore.headroom && !spaceWaiters.isEmpty {
            // Space that removals are still freeing on other threads counts: wait for it, measure again.
            for wait in spaceWaiters { wait() }
            free = measure() ?? free
        }
        room = (free: free, spent: 0, measured: now)
        if free - Int64(bytes) < ObjectStore.headroom {
            room.measured = 0
            throw StoreError.noSpace("\(free >> 20) MiB free, \(ObjectStore.headroom >> 20) MiB are kept for metadata")
        }
    }

    /// Adds a wait for space being freed elsewhere (files removed on another thread), run before a
    /// write is refused for lack of space.
    public func addSpaceWaiter(_ wait: @escaping () -> Void) {
        pthread_mutex_lock(roomMutex)
        defer { pthread_mutex_unlock(roomMutex) }
        spaceWaiters.append(wait)
    }
    private var spaceWaiters: [() -> Void] = []

    private let roomMutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    /// The last measurement of free space, the bytes checked since and when it was taken.
    private var room: (free: Int64, spent: Int64, measured: Int64) = (0, 0, 0)

    /// Makes every object put so far durable.
    public func sync() throws { try FileIO.syncFileSystem(of: directory) }

    /// Removes an object (garbage collection only).
    public func remove(_ id: ObjectID) { unlink(path(of: id)) }

    /// Number of object files and their bytes on disk.
    public func usage() -> (objects: Int, bytes: Int64) {
        var count = 0
        var bytes: Int64 = 0
        guard let top = opendir(directory) else { return (0, 0) }
        defer { closedir(top) }
        while let e = readdir(top) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.count == 2, let sub = opendir("\(directory)/\(name)") else { continue }
            while let f = readdir(sub) {
                let fname = withUnsafeBytes(of: f.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard fname.count == 62 else { continue }
                var st = stat()
                if stat("\(directory)/\(name)/\(fname)", &st) == 0 { count += 1; bytes += Int64(st.st_size) }
            }
            closedir(sub)
        }
        return (count, bytes)
    }
}

private func monotonicNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
