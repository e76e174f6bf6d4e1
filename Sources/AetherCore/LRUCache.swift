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
