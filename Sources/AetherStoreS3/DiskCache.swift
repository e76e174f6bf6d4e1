#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import AetherModel
import AetherStore

/// Objects fetched from object storage, kept on the local disk up to `budget` bytes: `XX/YYYY…` files as
/// in a local store, each written whole by rename, the least recently used evicted first. A cache is
/// only a copy: what it cannot keep (a full disk, a failed write) is fetched again, never an error;
/// every object read is still verified against its id by `ObjectStore`.
public final class DiskCache: Sendable {
    public let directory: String
    public let budget: Int64
    private let headroom: Headroom?
    private struct State {
        var entries: [ObjectID: (size: Int64, used: UInt64)] = [:]
        var total: Int64 = 0
        var tick: UInt64 = 0
        var hits = 0, misses = 0
    }
    private let state = Mutex(State())

    public init(directory: String, budget: Int64, headroom: Headroom? = nil) throws {
        self.directory = directory
        self.budget = budget
        self.headroom = headroom
        try FileIO.makeDirectories(directory)
        // What an earlier process cached, oldest first.
        var found: [(ObjectID, Int64, Int)] = []
        for d in FileIO.entries(of: directory) where d.isDirectory && d.name.utf8.count == 2 {
            for f in FileIO.entries(of: "\(directory)/\(d.name)") where f.name.utf8.count == 62 {
                var st = stat()
                guard let id = ObjectID(hex: d.name + f.name), stat("\(directory)/\(d.name)/\(f.name)", &st) == 0 else {
                    unlink("\(directory)/\(d.name)/\(f.name)")   // a temp file a crash left
                    continue
                }
                found.append((id, Int64(st.st_size), st.st_atim.tv_sec))
            }
        }
        found.sort { $0.2 < $1.2 }
        state.withLock { s in
            for (id, size, _) in found { s.tick += 1; s.entries[id] = (size, s.tick); s.total += size }
        }
        evict()
    }

    func path(_ id: ObjectID) -> String {
        let hex = id.hex
        return "\(directory)/\(hex.prefix(2))/\(hex.dropFirst(2))"
    }

    public var stats: (objects: Int, bytes: Int64, hits: Int, misses: Int) {
        state.withLock { ($0.entries.count, $0.total, $0.hits, $0.misses) }
    }

    public func get(_ id: ObjectID) -> [UInt8]? {
        let known = state.withLock { s in
            guard s.entries[id] != nil else { s.misses += 1; return false }
            s.tick += 1
            s.entries[id]!.used = s.tick
            s.hits += 1
            return true
        }
        guard known, let bytes = try? FileIO.readFile(path(id)) else { return nil }
        return bytes
    }

    public func put(_ id: ObjectID, _ bytes: [UInt8]) {
        guard Int64(bytes.count) <= budget / 4, state.withLock({ $0.entries[id] == nil }) else { return }
        if let headroom, (try? headroom.ensure(for: bytes.count)) == nil { return }
        let target = path(id)
        _ = StoreFiles.makeDirectory(String(target.dropLast(63)))
        guard (try? FileIO.atomicWrite(target, bytes, sync: false)) != nil else { return }
        state.withLock { s in
            s.tick += 1
            if s.entries[id] == nil { s.total += Int64(bytes.count) }
            s.entries[id] = (Int64(bytes.count), s.tick)
        }
        evict()
    }

    public func remove(_ id: ObjectID) {
        let had = state.withLock { s in
            guard let e = s.entries.removeValue(forKey: id) else { return false }
            s.total -= e.size
            return true
        }
        if had { unlink(path(id)) }
    }

    /// Drops the least recently used until the cache is 90% of its budget, once it is over it.
    private func evict() {
        let victims: [ObjectID] = state.withLock { s in
            guard s.total > budget else { return [] }
            var out: [ObjectID] = []
            for (id, e) in s.entries.sorted(by: { $0.value.used < $1.value.used }) {
                guard s.total > budget - budget / 10 else { break }
                s.entries[id] = nil
                s.total -= e.size
                out.append(id)
            }
            return out
        }
        for id in victims { unlink(path(id)) }
    }
}
