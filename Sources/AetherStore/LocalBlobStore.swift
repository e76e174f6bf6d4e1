#if canImport(Glibc)
import Glibc
#endif
import AetherModel

/// Objects as files in a directory on the local disk: `XX/YYYY…` (the first two hex digits of the id,
/// then the other 62), each published by rename, all made durable at once by `syncfs`. Puts keep the
/// disk's headroom free when one is given (the store's metadata shares the disk).
public final class LocalBlobStore: BlobStore {
    public let directory: String
    private let headroom: Headroom?

    public init(directory: String, headroom: Headroom? = nil) throws {
        self.directory = directory
        self.headroom = headroom
        try FileIO.makeDirectories(directory)
    }

    func path(of id: ObjectID) -> String {
        let hex = id.hex
        return "\(directory)/\(hex.prefix(2))/\(hex.dropFirst(2))"
    }

    /// Where a condemned object waits: `condemned/XX/YYYY…` inside the directory.
    func condemnedPath(of id: ObjectID) -> String {
        let hex = id.hex
        return "\(directory)/condemned/\(hex.prefix(2))/\(hex.dropFirst(2))"
    }

    public func get(_ id: ObjectID) throws -> [UInt8]? {
        do { return try FileIO.readFile(path(of: id)) } catch StoreError.io(ENOENT, _) {}
        do { return try FileIO.readFile(condemnedPath(of: id)) } catch StoreError.io(ENOENT, _) { return nil }
    }

    public func listAged(_ body: (ObjectID, Int64, Double) throws -> Void) throws {
        try walk(directory) { id, st in try body(id, Int64(st.st_size), Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9) }
    }

    public func condemn(_ id: ObjectID) throws {
        let target = condemnedPath(of: id)
        let dir = String(target.dropLast(63))
        _ = StoreFiles.makeDirectory(directory + "/condemned")
        if !StoreFiles.makeDirectory(dir) && errno != EEXIST { throw StoreError.fromErrno("mkdir \(dir)") }
        if rename(path(of: id), target) != 0 {
            if errno == ENOENT { return }
            throw StoreError.fromErrno("condemn object \(id.hex)")
        }
        // Its mtime says when it was condemned.
        if utimensat(AT_FDCWD, target, nil, 0) != 0 { throw StoreError.fromErrno("time of condemned object \(id.hex)") }
    }

    public func resurrect(_ id: ObjectID) throws {
        let from = condemnedPath(of: id), to = path(of: id)
        if FileIO.exists(to) { unlink(from); return }
        let dir = String(to.dropLast(63))
        if !StoreFiles.makeDirectory(dir) && errno != EEXIST { throw StoreError.fromErrno("mkdir \(dir)") }
        if rename(from, to) != 0 && errno != ENOENT { throw StoreError.fromErrno("resurrect object \(id.hex)") }
    }

    public func listCondemned(_ body: (ObjectID, Int64, Double) throws -> Void) throws {
        try walk(directory + "/condemned") { id, st in try body(id, Int64(st.st_size), Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9) }
    }

    public func purge(_ id: ObjectID) throws {
        if unlink(condemnedPath(of: id)) != 0 && errno != ENOENT { throw StoreError.fromErrno("purge object \(id.hex)") }
    }

    /// The objects of a fan-out directory, with their stat.
    private func walk(_ top: String, _ body: (ObjectID, stat) throws -> Void) throws {
        for d in FileIO.entries(of: top) where d.isDirectory && d.name.utf8.count == 2 {
            for file in FileIO.entries(of: "\(top)/\(d.name)") where file.name.utf8.count == 62 {
                var st = stat()
                guard let id = ObjectID(hex: d.name + file.name), stat("\(top)/\(d.name)/\(file.name)", &st) == 0 else { continue }
                try body(id, st)
            }
        }
    }

    public func put(_ id: ObjectID, _ bytes: [UInt8]) throws {
        try headroom?.ensure(for: bytes.count)
        let target = path(of: id)
        let dir = String(target.dropLast(63))
        if !StoreFiles.makeDirectory(dir) && errno != EEXIST { throw StoreError.fromErrno("mkdir \(dir)") }
        try FileIO.atomicWrite(target, bytes, sync: false)
    }

    public func missing(of ids: [ObjectID]) throws -> [ObjectID] { ids.filter { !FileIO.exists(path(of: $0)) } }

    public func contains(_ id: ObjectID) throws -> Bool { FileIO.exists(path(of: id)) }

    public func list(_ body: (ObjectID, Int64) throws -> Void) throws {
        // Temp files of puts in progress, and objects removed meanwhile, are passed over.
        try walk(directory) { id, st in try body(id, Int64(st.st_size)) }
    }

    public func delete(_ id: ObjectID) throws {
        if unlink(path(of: id)) != 0 && errno != ENOENT { throw StoreError.fromErrno("remove object \(id.hex)") }
    }

    public func flush() throws { try FileIO.syncFileSystem(of: directory) }

    public func available() -> Int64? { FileIO.freeBytes(on: directory) }
}
