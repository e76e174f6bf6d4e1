#if canImport(Glibc)
import Glibc
#endif

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

/// A small least-recently-used cache with a cost budget.
struct LRUCache<Key: Hashable, Value> {
    private var items: [Key: (value: Value, cost: Int, tick: UInt64)] = [:]
    private var tick: UInt64 = 0
    private var total = 0
    let budget: Int

    init(budget: Int) { self.budget = budget }

    mutating func get(_ key: Key) -> Value? {
        guard var item = items[key] else { return nil }
        tick += 1
        item.tick = tick
        items[key] = item
        return item.value
    }

    /// Whether `key` is cached (without making it recent).
    func contains(_ key: Key) -> Bool { items[key] != nil }

    mutating func put(_ key: Key, _ value: Value, cost: Int) {
        tick += 1
        if let old = items[key] { total -= old.cost }
        items[key] = (value, cost, tick)
        total += cost
        if total > budget { evict() }
    }

    private mutating func evict() {
        // Drop the older half by tick: amortized O(1) per insert.
        let sorted = items.sorted { $0.value.tick < $1.value.tick }
        for (key, item) in sorted.prefix(max(1, sorted.count / 2)) {
            items[key] = nil
            total -= item.cost
            if total <= budget / 2 { break }
        }
    }
}
