#if canImport(Glibc)
import Glibc
#endif
import AetherModel

/// History: commits and the branches that point at them. A commit is a frozen tree (`Workspace.freeze`)
/// published here by one compare-and-swap of its branch; an approved review will publish the same way.
extension Repository {
    /// Records `commit` (its `parent` the branch's head it builds on) and moves `branch` to it by
    /// compare-and-swap from `expected`, or creates the branch when `expected` is nil: `.branchMoved`
    /// when the branch is elsewhere by now, and nothing is recorded. Runs inside the caller's
    /// transaction; returns the record with its id.
    public func publish(_ commit: SnapshotRecord, on branch: String, from expected: Int64?) throws(AetherError) -> SnapshotRecord {
        var record = commit
        try domain {
            record.id = try metadata.insertSnapshot(record)
            if let expected {
                guard try metadata.moveBranch(branch, from: expected, to: record.id) else {
                    throw AetherError.branchMoved("branch \(branch) moved while committing")
                }
            } else if try metadata.branch(branch) != nil {
                throw AetherError.branchMoved("branch \(branch) was created while committing")
            } else {
                try metadata.createBranch(branch, head: record.id)
            }
        }
        return record
    }

    /// Branches and the commits they point at.
    public func branches() throws(AetherError) -> [(name: String, head: SnapshotRecord)] {
        try domain {
            try metadata.branches().compactMap { b in try metadata.snapshot(id: b.head).map { (b.name, $0) } }
        }
    }

    /// Creates a branch at a commit (a branch name or a commit id).
    /// Who may create or delete a branch: whoever may commit to it. Audited, refusals too.
    public func createBranch(_ name: String, at ref: String, uid: UInt32) throws(AetherError) {
        try audited(uid: uid, action: "branch-create", session: "", detail: "\(name) \(ref)") { () throws(AetherError) in
            try Repository.validateName(name, what: "branch")
            try mayCommit(uid, rule: try policy().rule(for: name), branch: name)
            if try domain({ try metadata.branch(name) }) != nil { throw .exists("branch \(name)") }
            let target = try resolveSnapshot(ref, session: nil)
            guard target.kind == .commit else { throw .invalid("a branch points at a commit; \(ref) is a \(target.kind.rawValue)") }
            try domain {
                try transaction(durable: true) {
                    try metadata.createBranch(name, head: target.id)
                    try metadata.audit(uid: uid, action: "branch-create", session: "", detail: "\(name) \(target.sid)")
                }
            }
        }
    }

    public func deleteBranch(_ name: String, uid: UInt32) throws(AetherError) {
        try audited(uid: uid, action: "branch-delete", session: "", detail: name) { () throws(AetherError) in
            try mayCommit(uid, rule: try policy().rule(for: name), branch: name)
            try domain {
                try transaction(durable: true) {
                    guard try metadata.deleteBranch(name) else { throw AetherError.notFound("branch \(name)") }
                    try metadata.audit(uid: uid, action: "branch-delete", session: "", detail: name)
                }
            }
        }
    }

    /// The commits reachable from a branch or commit, newest first.
    public func history(_ ref: String, limit: Int = 10_000) throws(AetherError) -> [SnapshotRecord] {
        var out: [SnapshotRecord] = []
        var next: SnapshotRecord? = try resolveSnapshot(ref, session: nil)
        while let s = next, out.count < limit {
            out.append(s)
            next = try s.parent.flatMap { (p) throws(AetherError) in try domain { try metadata.snapshot(id: p) } }
        }
        return out
    }
}

