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

    public func get(_ id: ObjectID) throws -> [UInt8]? {
        do { return try FileIO.readFile(path(of: id)) } catch StoreError.io(ENOENT, _) { return nil }
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
        for top in FileIO.entries(of: directory) where top.isDirectory && top.name.utf8.count == 2 {
            for file in FileIO.entries(of: "\(directory)/\(top.name)") where file.name.utf8.count == 62 {
                var st = stat()
                guard let id = ObjectID(hex: top.name + file.name), stat("\(directory)/\(top.name)/\(file.name)", &st) == 0 else {
                    continue  // a temp file of a put in progress, or one removed meanwhile
                }
                try body(id, Int64(st.st_size))
            }
        }
    }

    public func delete(_ id: ObjectID) throws {
        if unlink(path(of: id)) != 0 && errno != ENOENT { throw StoreError.fromErrno("remove object \(id.hex)") }
    }

    public func flush() throws { try FileIO.syncFileSystem(of: directory) }

    public func available() -> Int64? { FileIO.freeBytes(on: directory) }
}
