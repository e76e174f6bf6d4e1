#if canImport(Glibc)
import Glibc
#endif
import AetherModel

/// A plain mutex for state touched from libfuse's threads (never held across a kernel notification).
public final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    public init() { pthread_mutex_init(mutex, nil) }
    deinit { pthread_mutex_destroy(mutex); mutex.deallocate() }
    @inline(__always)
    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Runs `body` with the lock let go; the caller holds it before and after.
    public func unlocked<T>(_ body: () -> T) -> T {
        pthread_mutex_unlock(mutex)
        defer { pthread_mutex_lock(mutex) }
        return body()
    }

    /// Waits for `condition` (the caller holds the lock; it is let go while waiting).
    public func wait(_ condition: Condition) { pthread_cond_wait(condition.cond, mutex) }
}

/// A condition variable used with a `Lock`.
public final class Condition: @unchecked Sendable {
    let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    public init() { pthread_cond_init(cond, nil) }
    deinit { pthread_cond_destroy(cond); cond.deallocate() }
    public func broadcast() { pthread_cond_broadcast(cond) }
}
