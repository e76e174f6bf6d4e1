import Testing
import Glibc
import AetherModel
@testable import AetherMeta
import TestSupport
import AetherMetaPostgres

/// The metadata backends every conformance test runs against.
enum MetadataBackend: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, memory, postgres
    var testDescription: String { rawValue }

    /// PostgreSQL only where a server can be started (always in CI, where its absence fails).
    static var testable: [MetadataBackend] {
        PostgresServer.available || PostgresServer.required ? allCases : [.sqlite, .memory]
    }

    func make(in dir: TempDir) throws -> any MetadataStore {
        switch self {
        case .sqlite: try Catalog(path: dir.path + "/meta.db")
        case .memory: MemoryMetadataStore()
        case .postgres: try MetadataBackend.newPostgres()
        }
    }

    /// A new database in the process's PostgreSQL server, claimed for a store, opened.
    static func newPostgres(store: String = "test-store") throws -> PostgresMetadata {
        let url = try PostgresServer.shared.get().newDatabase()
        #expect(try PostgresMetadata.claim(url: url, store: store) == store)
        return try PostgresMetadata(config: MetaConfig(url: url, store: store))
    }
}

/// What every shared-metadata backend must do.
@Suite struct MetadataConformance {
    let rootA = ObjectID.of(.tree, [1]), rootB = ObjectID.of(.tree, [2])

    func snapshot(_ session: Int64, _ kind: SnapshotKind, _ name: String, sid: String, root: ObjectID) -> SnapshotRecord {
        SnapshotRecord(sid: sid, kind: kind, session: session, name: name, root: root, parent: nil, time: 1.5, author: 1000,
                       message: "m", meta: ["ticket": "T-1", "quote": "a \"b\"/c"], filesChanged: 2, bytesAdded: 3,
                       branch: kind == .commit ? "main" : nil)
    }

    @Test(arguments: MetadataBackend.testable) func sessionsKeepTheirFieldsAndNamesAreUnique(_ backend: MetadataBackend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let m = try backend.make(in: dir)
        let id = try m.insertSession(SessionRecord(name: "s", baseRoot: rootA, baseSnapshot: nil, parentSession: nil, owner: 1000))
        let other = try m.insertSession(SessionRecord(name: "t", baseRoot: rootB, baseSnapshot: nil, parentSession: id, owner: 0))
        #expect(id != other)
        #expect(throws: (any Error).self) {
            try m.insertSession(SessionRecord(name: "s", baseRoot: rootB, baseSnapshot: nil, parentSession: nil, owner: 1))
        }
        try m.updateSessionBase(id, baseRoot: rootB, baseSnapshot: 7, head: 7)
        try m.setNextIno(id, 42)
        try m.setBaseCommit(session: id, 9)
        let s = try #require(try m.session(named: "s"))
        #expect(s.id == id && s.baseRoot == rootB && s.baseSnapshot == 7 && s.head == 7 && s.nextIno == 42 && s.baseCommit == 9)
        #expect(s.owner == 1000 && s.parentSession == nil)
        #expect(try m.session(id: other)?.parentSession == id)
        #expect(try m.sessions().map(\.name) == ["s", "t"])
        try m.deleteSession(id)
        #expect(try m.session(named: "s") == nil && m.sessions().map(\.name) == ["t"])
    }

    @Test(arguments: MetadataBackend.testable) func snapshotsAreFoundEveryWayAndRoundTrip(_ backend: MetadataBackend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let m = try backend.make(in: dir)
        let version0 = try m.snapshotsVersion()
        let a = try m.insertSnapshot(snapshot(1, .checkpoint, "cp-1", sid: "aaaa000000000001", root: rootA))
        let b = try m.insertSnapshot(snapshot(1, .commit, "main/x", sid: "aaab000000000002", root: rootB))
        let c = try m.insertSnapshot(snapshot(1, .checkpoint, "cp-2", sid: "bbbb000000000003", root: rootB))
        let d = try m.insertSnapshot(snapshot(2, .checkpoint, "cp-1", sid: "cccc000000000004", root: rootA))
        #expect(a < b && b < c && c < d, "ids grow")
        #expect(try m.snapshotsVersion() != version0)
        #expect(throws: (any Error).self) { try m.insertSnapshot(snapshot(1, .checkpoint, "cp-1", sid: "dddd000000000005", root: rootA)) }
        let back = try #require(try m.snapshot(id: a))
        #expect(back == { var s = snapshot(1, .checkpoint, "cp-1", sid: "aaaa000000000001", root: rootA); s.id = a; return s }())
        #expect(try m.checkpoints(session: 1).map(\.name) == ["cp-1", "cp-2"])
        #expect(try m.snapshots(sidPrefix: "aaa").map(\.id) == [a, b])
        #expect(try m.snapshots(kind: .checkpoint).map(\.id) == [d, c, a], "newest first")
        #expect(try m.snapshots(kind: .commit).map(\.id) == [b])
        #expect(try m.snapshotIDs() == [a, b, c, d])
        #expect(try m.snapshot(id: 999) == nil)
    }

    @Test(arguments: MetadataBackend.testable) func branchesMoveOnlyByCompareAndSwap(_ backend: MetadataBackend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let m = try backend.make(in: dir)
        try m.createBranch("main", head: 1)
        #expect(throws: (any Error).self) { try m.createBranch("main", head: 2) }
        let before = try m.snapshotsVersion()
        #expect(try m.moveBranch("main", from: 1, to: 2))
        #expect(try m.snapshotsVersion() != before, "a moved branch changes the version")
        #expect(try !m.moveBranch("main", from: 1, to: 3), "a stale expectation does not move it")
        #expect(try m.branch("main") == 2)
        try m.createBranch("dev", head: 5)
        #expect(try m.branches() == [BranchRecord(name: "dev", head: 5), BranchRecord(name: "main", head: 2)])
        #expect(try m.deleteBranch("dev") && !m.deleteBranch("dev"))
        #expect(try m.branch("dev") == nil && !m.moveBranch("dev", from: 5, to: 6))
    }

    /// The audit log is a hash chain: entries written inside and outside transactions link up, a
    /// rolled-back one leaves no link, and a changed or removed entry breaks the chain at that point.
    @Test(arguments: MetadataBackend.testable) func theAuditLogIsAChainThatShowsTampering(_ backend: MetadataBackend) throws {
        struct Stop: Error {}
        let dir = TempDir(); defer { dir.remove() }
        let m = try backend.make(in: dir)
        try m.audit(uid: 1, action: "commit", session: "s", detail: "one")
        try m.transaction(durable: true) { try m.audit(uid: 2, action: "review", session: "s", detail: "two", result: "refused: no") }
        #expect(throws: Stop.self) { try m.transaction(durable: false) { try m.audit(uid: 3, action: "x", session: "", detail: ""); throw Stop() } }
        try m.audit(uid: 4, action: "restore", session: "s", detail: "three")
        let log = try m.auditRecords()
        #expect(log.map(\.detail) == ["one", "two", "three"] && log.map(\.id) == [1, 2, 3])
        #expect(log[1].result == "refused: no" && log[0].pid == getpid())
        #expect(AuditRecord.firstBreak(log) == nil)
        var edited = log
        edited[1].detail = "TWO"
        #expect(AuditRecord.firstBreak(edited)?.id == 2)
        var removed = log
        removed.remove(at: 1)
        #expect(AuditRecord.firstBreak(removed)?.id == 3)
        #expect(AuditRecord.firstBreak(Array(log.dropFirst()))?.id == 2)
    }

    /// Proposals, their reviews, states that move only from the state expected, the policy's text
    /// and a session's writers.
    @Test(arguments: MetadataBackend.testable) func proposalsReviewsPolicyAndWriters(_ backend: MetadataBackend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let m = try backend.make(in: dir)
        let p = ProposalRecord(pid: "abcd000000000001", session: 1, author: 1000, branch: "main", root: rootA, snapshot: 3, baseCommit: nil,
                               title: "t", message: "m", meta: ["ticket": "T-1"], writers: [1000, 1002])
        let id = try m.insertProposal(p)
        #expect(throws: (any Error).self) { try m.insertProposal(p) }
        var stored = p
        stored.id = id
        #expect(try m.proposal(id: id) == stored)
        #expect(try m.proposals(pidPrefix: "abcd").map(\.id) == [id] && m.proposals(pidPrefix: "abce").isEmpty)
        #expect(try m.setProposalState(id, from: .open, to: .approved))
        #expect(try !m.setProposalState(id, from: .open, to: .rejected), "a stale expectation moves nothing")
        #expect(try m.proposals().map(\.state) == [.approved])
        _ = try m.insertReview(ReviewRecord(proposal: id, reviewer: 1001, verdict: .approve, comment: "ok", root: rootA))
        _ = try m.insertReview(ReviewRecord(proposal: id + 1, reviewer: 1001, verdict: .reject, comment: "", root: rootA))
        #expect(try m.reviews(proposal: id).map(\.reviewer) == [1001] && m.reviews(proposal: id).first?.verdict == .approve)
        #expect(try m.policyText() == nil)
        try m.setPolicyText("{}")
        #expect(try m.policyText() == "{}")
        try m.addWriter(session: 1, uid: 1001); try m.addWriter(session: 1, uid: 1000); try m.addWriter(session: 1, uid: 1001)
        try m.addWriter(session: 2, uid: 5)
        #expect(try m.writers(session: 1) == [1000, 1001])
        try m.resetWriters(session: 1)
        #expect(try m.writers(session: 1).isEmpty && m.writers(session: 2) == [5])
    }

    @Test(arguments: MetadataBackend.testable) func aTransactionThatThrowsChangesNothing(_ backend: MetadataBackend) throws {
        struct Stop: Error {}
        let dir = TempDir(); defer { dir.remove() }
        let m = try backend.make(in: dir)
        try m.createBranch("main", head: 1)
        #expect(throws: Stop.self) {
            try m.transaction(durable: true) {
                _ = try m.insertSession(SessionRecord(name: "s", baseRoot: rootA, baseSnapshot: nil, parentSession: nil, owner: 1))
                _ = try m.insertSnapshot(snapshot(1, .commit, "main/y", sid: "eeee000000000001", root: rootA))
                _ = try m.moveBranch("main", from: 1, to: 2)
                try m.audit(uid: 1, action: "commit", session: "s", detail: "")
                throw Stop()
            }
        }
        #expect(try m.sessions().isEmpty && m.snapshotIDs().isEmpty && m.branch("main") == 1)
        let id = try m.transaction(durable: false) {
            try m.insertSession(SessionRecord(name: "s", baseRoot: rootA, baseSnapshot: nil, parentSession: nil, owner: 1))
        }
        #expect(try m.session(id: id)?.name == "s")
        #expect(try m.integrityCheck() == ["ok"])
    }

    @Test(arguments: MetadataBackend.testable) func aLeaseHasOneHolderUntilItIsReleasedOrStale(_ backend: MetadataBackend) throws {
        let dir = TempDir(); defer { dir.remove() }
        let m = try backend.make(in: dir)
        let a = LeaseRecord(session: 1, host: "h1", pid: 10, mountpoint: nil, acquired: 1, expires: 100)
        var b = LeaseRecord(session: 1, host: "h2", pid: 20, mountpoint: nil, acquired: 2, expires: 200)
        #expect(try m.takeLease(a) { _ in false } == nil)
        #expect(try m.takeLease(b) { _ in false } == a, "a standing lease is another's")
        var renewed = a
        renewed.expires = 150; renewed.mountpoint = "/m"
        #expect(try m.renewLease(renewed))
        #expect(try !m.renewLease(b), "only its holder renews it")
        #expect(try m.lease(session: 1) == renewed)
        #expect(try m.takeLease(b) { $0.expires < 160 } == nil, "a stale lease is taken over")
        #expect(try !m.renewLease(renewed), "the old holder lost it")
        try m.releaseLease(renewed)
        #expect(try m.lease(session: 1) == b, "releasing another's lease changes nothing")
        b.session = 2
        #expect(try m.takeLease(b) { _ in false } == nil)
        #expect(try m.leases().map(\.session) == [1, 2])
        try m.releaseLease(b)
        #expect(try m.leases().map(\.session) == [1])
    }

    /// What schemas 7 to 10 added, taken away again.
    static let backToSchema6 = """
        DROP TABLE pack_objects; DROP TABLE packs; DROP TABLE tokens; DROP TABLE writes;
        ALTER TABLE audit DROP COLUMN pid; ALTER TABLE audit DROP COLUMN result; ALTER TABLE audit DROP COLUMN prev;
        ALTER TABLE audit DROP COLUMN hash; DROP TABLE proposals; DROP TABLE reviews; DROP TABLE writers;
        UPDATE meta SET value='6' WHERE key='schema';
        """

    /// Schema 7 chains the audit log: the entries written before it are sealed, in order, when the
    /// database is opened, and the chain then holds and goes on.
    @Test func aSchema6StoresAuditEntriesAreSealedIntoTheChain() throws {
        let dir = TempDir(); defer { dir.remove() }
        do {
            let c = try Catalog(path: dir.path + "/meta.db")
            try c.db.execute(Self.backToSchema6)
            for i in 0..<3 {
                try c.db.execute("INSERT INTO audit(time, uid, action, session, detail) VALUES(\(i), 7, 'commit', 's', 'old \(i)')")
            }
        }
        let c = try Catalog(path: dir.path + "/meta.db")
        try c.audit(uid: 1, action: "restore", session: "s", detail: "new")
        let log = try c.auditRecords()
        #expect(log.map(\.detail) == ["old 0", "old 1", "old 2", "new"])
        #expect(AuditRecord.firstBreak(log) == nil)
        #expect(log[0].prev == AuditRecord.genesis && log[3].prev == log[2].hash)
    }

    /// Schema 6 gave commits a branch column; commits made before it get theirs from their name.
    @Test func aSchema5StoreLearnsItsCommitsBranches() throws {
        let dir = TempDir(); defer { dir.remove() }
        do {
            let c = try Catalog(path: dir.path + "/meta.db")
            _ = try c.insertSnapshot(snapshot(1, .commit, "dev/aaaa000000000001", sid: "aaaa000000000001", root: rootA))
            _ = try c.insertSnapshot(snapshot(1, .checkpoint, "cp-1", sid: "bbbb000000000002", root: rootA))
            try c.db.execute(Self.backToSchema6 + "ALTER TABLE snapshots DROP COLUMN branch; UPDATE meta SET value='5' WHERE key='schema'")
        }
        let c = try Catalog(path: dir.path + "/meta.db")
        #expect(try c.snapshots(kind: .commit).map(\.branch) == ["dev"])
        #expect(try c.snapshots(kind: .checkpoint).map(\.branch) == [nil])
    }
}
