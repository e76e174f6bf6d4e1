import AetherModel

/// One decision of `aetherfs prune`: what it removes, retires, deletes or keeps, by which rule.
public struct PruneItem: Codable, Sendable, Equatable {
    /// `remove` (a checkpoint), `retire` or `delete` (a session), `keep` (either).
    public var action: String
    /// `checkpoint` or `session`.
    public var what: String
    public var session: String
    public var checkpoint: String?
    public var sid: String?
    /// The rule that decided: `keep_last`, `keep_within`, `keep_named`, `idle_ttl`, `retired_ttl`,
    /// `losers_ttl`; or what protects it: `base` (another session, fork or the session itself builds on
    /// it), `proposal`, `in_use`, `owner`.
    public var rule: String
    /// The decision in words.
    public var reason: String
}

/// What a prune did (or, dry, would do).
public struct PruneReport: Codable, Sendable {
    public var dryRun: Bool
    public var items: [PruneItem] = []
    /// False when the policy sets no retention rule (nothing is pruned then).
    public var rules: Bool

    public var removed: Int { items.count { $0.action == "remove" } }
    public var retired: Int { items.count { $0.action == "retire" } }
    public var deleted: Int { items.count { $0.action == "delete" } }

    enum CodingKeys: String, CodingKey { case dryRun = "dry_run", items, rules, removed, retired, deleted }

    public init(dryRun: Bool, rules: Bool) { self.dryRun = dryRun; self.rules = rules }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dryRun = try c.decode(Bool.self, forKey: .dryRun)
        items = try c.decode([PruneItem].self, forKey: .items)
        rules = try c.decode(Bool.self, forKey: .rules)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(dryRun, forKey: .dryRun)
        try c.encode(rules, forKey: .rules)
        try c.encode(removed, forKey: .removed)
        try c.encode(retired, forKey: .retired)
        try c.encode(deleted, forKey: .deleted)
        try c.encode(items, forKey: .items)
    }
}

extension Repository {
    /// Applies the policy's retention rules (`Policy.Retention`) to the sessions `uid` may prune (its
    /// own; root: all): retires sessions idle for `idle_ttl`, deletes sessions retired `retired_ttl`
    /// ago (forks a promotion retired: `losers_ttl`), and removes checkpoints of live sessions that no
    /// keep rule holds. Never removed: commits (and so branches' lineage), a checkpoint a session, fork
    /// or open proposal builds on, a session something builds on, a session in use. Removing only drops
    /// records: `gc` frees the objects nothing reaches any more. `now` is the time the rules count from.
    public func prune(dryRun: Bool, uid: UInt32, now: Double = secondsNow()) throws(AetherError) -> PruneReport {
        try audited(uid: uid, action: "prune", session: "", detail: dryRun ? "--dry-run" : "") { () throws(AetherError) in
            let rules = try policy().retention
            var report = PruneReport(dryRun: dryRun, rules: rules != Policy.Retention())
            guard report.rules else { return report }
            let commits = try domain { try metadata.snapshots(kind: .commit) }
            for s in try sessions() {
                guard uid == 0 || uid == s.owner else {
                    report.items.append(PruneItem(action: "keep", what: "session", session: s.name, rule: "owner",
                                                  reason: "owned by uid \(s.owner): only its owner and root prune it"))
                    continue
                }
                if let item = try sessionDecision(s, rules, commits: commits, now: now) {
                    var decided = item
                    if !dryRun && item.action != "keep" {
                        do throws(AetherError) {
                            if item.action == "retire" { try retire(name: s.name, uid: uid) } else { try deleteSession(name: s.name, uid: uid) }
                        } catch {
                            // Taken meanwhile (mounted, or built on): kept, saying why.
                            decided = PruneItem(action: "keep", what: "session", session: s.name, rule: "in_use", reason: error.description)
                        }
                    }
                    report.items.append(decided)
                    if decided.action != "keep" || s.isRetired { continue }
                } else if s.isRetired {
                    continue
                }
                if rules.prunesCheckpoints { report.items += try pruneCheckpoints(of: s, rules, dryRun: dryRun, uid: uid, now: now) }
            }
            return report
        }
    }

    /// What the session rules say of `s`, or nil when none applies to it.
    private func sessionDecision(_ s: SessionRecord, _ rules: Policy.Retention, commits: [SnapshotRecord], now: Double) throws(AetherError) -> PruneItem? {
        let age = now - s.lastUsed
        func item(_ action: String, _ rule: String, _ reason: String) -> PruneItem {
            PruneItem(action: action, what: "session", session: s.name, rule: rule, reason: reason)
        }
        if s.isRetired {
            // A fork a promotion retired: a commit after its creation names it as promoted over.
            let lost = commits.contains { c in
                c.time >= s.created && (c.meta["promoted_over"] ?? "").split(separator: ",").contains { $0 == s.name }
            }
            let (rule, ttl) = lost && rules.losersTTL != nil ? ("losers_ttl", rules.losersTTL) : ("retired_ttl", rules.retiredTTL)
            guard let ttl else { return nil }
            let what = lost ? "lost a promotion and was retired" : "retired"
            guard age >= ttl.seconds else {
                return item("keep", rule, "\(what) \(Self.span(age)) ago; deleted once \(rule) \(ttl) has passed")
            }
            if let refusal = try dependents(of: s).refusal { return item("keep", "base", refusal) }
            if let holder = holder(of: s) { return item("keep", "in_use", "in use by pid \(holder.pid) on \(holder.host)") }
            return item("delete", rule, "\(what) \(Self.span(age)) ago (\(rule) \(ttl))")
        }
        guard let ttl = rules.idleTTL else { return nil }
        if let holder = holder(of: s) { return item("keep", "in_use", "in use by pid \(holder.pid) on \(holder.host)") }
        guard age >= ttl.seconds else { return item("keep", "idle_ttl", "used \(Self.span(age)) ago; retired once idle_ttl \(ttl) has passed") }
        return item("retire", "idle_ttl", "unused for \(Self.span(age)) (idle_ttl \(ttl))")
    }

    /// The checkpoint rules over one live session: newest first, each kept by the first rule that
    /// holds it, the rest removed in one transaction that checks again that nothing builds on them.
    private func pruneCheckpoints(of s: SessionRecord, _ rules: Policy.Retention, dryRun: Bool, uid: UInt32, now: Double) throws(AetherError) -> [PruneItem] {
        let checkpoints = try self.checkpoints(of: s).sorted { ($0.time, $0.id) > ($1.time, $1.id) }
        var protected = try checkpointsBuiltOn()
        var items: [PruneItem] = []
        var doomed: [SnapshotRecord] = []
        for (i, cp) in checkpoints.enumerated() {
            func item(_ action: String, _ rule: String, _ reason: String) -> PruneItem {
                PruneItem(action: action, what: "checkpoint", session: s.name, checkpoint: cp.name, sid: cp.sid, rule: rule, reason: reason)
            }
            if let (rule, why) = protected[cp.id] {
                items.append(item("keep", rule, why))
            } else if let n = rules.keepLast, i < n {
                items.append(item("keep", "keep_last", "one of the newest \(n)"))
            } else if let within = rules.keepWithin, now - cp.time < within.seconds {
                items.append(item("keep", "keep_within", "made \(Self.span(now - cp.time)) ago, within \(within)"))
            } else if rules.keepNamed ?? true, !Self.isAutomatic(cp.name) {
                items.append(item("keep", "keep_named", "named by its author"))
            } else {
                var why: [String] = []
                if let n = rules.keepLast { why.append("not among the newest \(n)") }
                if let within = rules.keepWithin { why.append("older than \(within)") }
                let rule = [rules.keepLast.map { _ in "keep_last" }, rules.keepWithin.map { _ in "keep_within" }].compactMap { $0 }.joined(separator: ",")
                items.append(item("remove", rule, "made \(Self.span(now - cp.time)) ago, \(why.joined(separator: " and "))"))
                doomed.append(cp)
            }
        }
        guard !dryRun, !doomed.isEmpty else { return items }
        try domain {
            try transaction(durable: true) {
                // What began to build on one meanwhile keeps it.
                protected = try checkpointsBuiltOnUnchecked()
                let gone = doomed.filter { protected[$0.id] == nil }
                let goneIDs = Set(gone.map(\.id))
                let parents = Dictionary(uniqueKeysWithValues: checkpoints.map { ($0.id, $0.parent) })
                // Each remaining checkpoint's parent becomes its nearest remaining ancestor.
                func ancestor(_ id: Int64?) -> Int64? {
                    var p = id
                    while let q = p, goneIDs.contains(q) { p = parents[q] ?? nil }
                    return p
                }
                for cp in checkpoints where !goneIDs.contains(cp.id) && cp.parent.map(goneIDs.contains) == true {
                    try metadata.setSnapshotParent(cp.id, ancestor(cp.parent))
                }
                for cp in gone { try metadata.deleteSnapshot(cp.id) }
                for i in items.indices where items[i].action == "remove" {
                    if let id = checkpoints.first(where: { $0.sid == items[i].sid })?.id, let (rule, why) = protected[id] {
                        items[i] = PruneItem(action: "keep", what: "checkpoint", session: s.name, checkpoint: items[i].checkpoint,
                                             sid: items[i].sid, rule: rule, reason: why)
                    }
                }
                if !gone.isEmpty {
                    try metadata.audit(uid: uid, action: "prune", session: s.name,
                                       detail: "removed \(gone.count) checkpoint(s): \(gone.map(\.name).joined(separator: ","))")
                }
            }
        }
        return items
    }

    /// The checkpoints something builds on, with the rule and reason that keep each: sessions' bases and
    /// heads, the parents of other sessions' snapshots (forks), open proposals.
    private func checkpointsBuiltOn() throws(AetherError) -> [Int64: (String, String)] {
        try domain { try checkpointsBuiltOnUnchecked() }
    }

    private func checkpointsBuiltOnUnchecked() throws -> [Int64: (String, String)] {
        var protected: [Int64: (String, String)] = [:]
        let sessions = try metadata.sessions()
        let names = Dictionary(uniqueKeysWithValues: sessions.map { ($0.id, $0.name) })
        for o in sessions {
            if let b = o.baseSnapshot { protected[b] = protected[b] ?? ("base", "session \(o.name)'s tree builds on it") }
            if let h = o.head { protected[h] = protected[h] ?? ("base", "the newest checkpoint of session \(o.name)") }
            for c in try metadata.checkpoints(session: o.id) {
                if let p = c.parent, protected[p] == nil, try metadata.snapshot(id: p)?.session != o.id {
                    protected[p] = ("base", "session \(o.name) was forked from it")
                }
            }
        }
        for p in try metadata.proposals() where p.state == .open || p.state == .approved {
            protected[p.snapshot] = ("proposal", "proposal \(p.pid) of session \(names[p.session] ?? "?") is \(p.state.rawValue)")
        }
        return protected
    }

    /// Whether a checkpoint's name is one AetherFS gave it (`cp-N`), not its author.
    static func isAutomatic(_ name: String) -> Bool {
        name.hasPrefix("cp-") && name.count > 3 && name.dropFirst(3).allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// A duration in its largest whole unit: `40s`, `12m`, `3h`, `9d`.
    static func span(_ seconds: Double) -> String {
        let s = max(0, Int(seconds))
        if s < 120 { return "\(s)s" }
        if s < 7200 { return "\(s / 60)m" }
        if s < 172_800 { return "\(s / 3600)h" }
        return "\(s / 86400)d"
    }
}
