#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import Synchronization

/// Space kept free on the local disk that holds a store's metadata and working files: writes of file
/// data fail with ENOSPC before the disk is full, so that deleting files (which writes to the database)
/// still works on a full store. The working layer checks it before it writes file data; the local blob
/// store before it writes an object.
public final class Headroom: Sendable {
    /// Bytes kept free for metadata.
    public static let reserve: Int64 = 16 << 20

    public let directory: String
    private struct State {
        var waiters: [@Sendable () -> Void] = []
        /// The last measurement of free space, the bytes checked since and when it was taken.
        var room: (free: Int64, spent: Int64, measured: Int64) = (0, 0, 0)
    }
    private let state = Mutex(State())

    /// Keeps the reserve on the file system holding `directory`.
    public init(directory: String) { self.directory = directory }

    /// Throws `noSpace` when writing `bytes` would eat into the reserve. The free space is measured
    /// again when 100 ms have passed or the writes since the last measurement come near the reserve,
    /// so that small writes do not each cost a `statvfs`.
    public func ensure(for bytes: Int) throws {
        let now = monotonicNanoseconds()
        try state.withLock { (st) throws(StoreError) in
            st.room.spent += Int64(bytes)
            if now - st.room.measured < 100_000_000 && st.room.free - st.room.spent > 4 * Headroom.reserve { return }
            guard var free = FileIO.freeBytes(on: directory) else { return }
            if free - Int64(bytes) < Headroom.reserve && !st.waiters.isEmpty {
                // Space that removals are still freeing on other threads counts: wait for it, measure again.
                for wait in st.waiters { wait() }
                free = FileIO.freeBytes(on: directory) ?? free
            }
            st.room = (free: free, spent: 0, measured: now)
            if free - Int64(bytes) < Headroom.reserve {
                st.room.measured = 0
                throw .noSpace("\(free >> 20) MiB free, \(Headroom.reserve >> 20) MiB are kept for metadata")
            }
        }
    }

    /// Adds a wait for space being freed elsewhere (files removed on another thread), run before a
    /// write is refused for lack of space.
    public func addWaiter(_ wait: @escaping @Sendable () -> Void) {
        state.withLock { $0.waiters.append(wait) }
    }
}
