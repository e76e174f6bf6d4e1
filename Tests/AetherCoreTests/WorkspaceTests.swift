import Testing
import Glibc
import AetherModel
@testable import AetherCore
import AetherStore
@testable import AetherMeta
import TestSupport

let root = Workspace.rootIno
let me = Caller(uid: 1000, gid: 1000)

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

extension Workspace {
    func write(_ ino: UInt64, _ text: String, at offset: UInt64 = 0) throws {
        _ = try Array(text.utf8).withUnsafeBytes { (b) throws(AetherError) in try write(ino, offset: offset, data: b) }
    }
    func text(_ ino: UInt64) throws -> String {
        String(decoding: try repo.content.read(try read(ino, offset: 0, count: 1 << 20)), as: UTF8.self)
    }
    func path(_ p: String) throws -> UInt64 {
        var ino = root
        for part in p.split(separator: "/") { ino = try lookup(parent: ino, name: Array(part.utf8)).ino }
        return ino
    }
}

/// A store and one session in a temp dir.
final class Fixture {
    let dir = TempDir()
    let repo: Repository
    var session: SessionRecord
    init() throws {
        repo = try Repository(path: dir.path + "/store", blobs: MemoryBlobStore(), metadata: MemoryMetadataStore())
        session = try repo.createSession(name: "w", owner: 1000)
    }
    /// The working layer's SQLite database.
    var catalog: Catalog { repo.working as! Catalog }
    func open() throws -> Workspace { try Workspace(repo: repo, session: try repo.session(named: "w")) }
    deinit { dir.remove() }
}

@Suite struct WorkspaceTests {
    @Test func changesSurviveReopening() throws {
        let f = try Fixture()
        do {
            let ws = try f.open()
            let d = try ws.mkdir(parent: root, name: bytes("d"), mode: 0o755, caller: me)
            let a = try ws.create(parent: d.ino, name: bytes("a"), mode: 0o644, caller: me)
            try ws.write(a.ino, "hello")
            try ws.fsync(a.ino, dataOnly: false)
            _ = try ws.symlink(parent: root, name: bytes("l"), target: bytes("d/a"), caller: me)
            try ws.rename(parent: d.ino, name: bytes("a"), newParent: root, newName: bytes("b"), flags: [])
        }
        let ws = try f.open()
        #expect(try ws.text(try ws.path("b")) == "hello")
        #expect(try ws.readlink(try ws.path("l")) == bytes("d/a"))
        #expect(try ws.list(try ws.path("d")).isEmpty)
    }

    /// The kernel hands a file's times back after each link and unlink (writeback caching): with the
    /// mtime it had from us that changes nothing; any other attribute or mtime is saved with a new ctime.
    @Test func timesHandedBackChangeNothing() throws {
        let f = try Fixture()
        let a: Attributes
        do {
            let ws = try f.open()
            let created = try ws.create(parent: root, name: bytes("a"), mode: 0o644, caller: me)
            usleep(20_000)  // past the coarse clock's tick, so a new ctime would differ
            var same = AttributeChange()
            same.mtime = created.mtime
            let handedBack = try ws.setAttributes(created.ino, same)
            #expect(handedBack.ctime == created.ctime && handedBack.mtime == created.mtime)
            var other = AttributeChange()
            other.mtime = created.mtime - 1_000_000_000
            a = try ws.setAttributes(created.ino, other)
            #expect(a.mtime == created.mtime - 1_000_000_000)
        }
        let ws = try f.open()
        let reopened = try ws.attributes(try ws.path("a"))
        #expect(reopened.mtime == a.mtime && reopened.ctime == a.ctime)
    }

    @Test func checkpointRestoreAndReopen() throws {
        let f = try Fixture()
        let ws = try f.open()
        let a = try ws.create(parent: root, name: bytes("a"), mode: 0o644, caller: me)
        try ws.write(a.ino, "one")
        let cp1 = try ws.checkpoint(CheckpointRequest(message: "first"), author: 1000)
        #expect(cp1.name == "cp-1" && cp1.filesChanged == 1)
        try ws.write(a.ino, "two")
        try ws.unlink(parent: root, name: bytes("a"))
        _ = try ws.create(parent: root, name: bytes("new"), mode: 0o644, caller: me)
        let inv = try ws.restore(to: cp1, caller: 1000)
        #expect(inv.contains(.entry(parent: root, name: bytes("new"))))
        #expect(try ws.text(try ws.path("a")) == "one")
        #expect(throws: AetherError.self) { try ws.path("new") }
        let again = try f.open()
        #expect(try again.text(try again.path("a")) == "one")
    }

    /// Upper files a checkpoint or an unlink drops become empty spares (their blocks freed on another
    /// thread); new files are made from them and start empty; after a reopen the pool is still there and
    /// strays are gone.
    @Test func upperFilesAreReusedEmpty() throws {
        let f = try Fixture()
        var st = stat()
        do {
            let ws = try f.open()
            var first: UInt64 = 0
            for i in 0..<20 {
                let n = try ws.create(parent: root, name: bytes("f\(i)"), mode: 0o644, caller: me)
                try ws.write(n.ino, String(repeating: "data \(i)\n", count: 500))
                if i == 0 { first = n.ino }
            }
            try ws.unlink(parent: root, name: bytes("f0"))
            ws.forgotten(first)
            _ = try ws.checkpoint(CheckpointRequest(message: "all"), author: 1000)
            ws.upper.settle()
            let spare = ws.upper.directory + "/spare"
            let spares = try FileManagerless.names(spare)
            #expect(spares.count == 20)
            for name in spares {
                #expect(stat(spare + "/" + name, &st) == 0 && st.st_size == 0 && st.st_blocks == 0)
            }
            let g = try ws.create(parent: root, name: bytes("g"), mode: 0o644, caller: me)
            #expect(try FileManagerless.names(spare).count == 19)
            #expect(try ws.text(g.ino) == "")
            try ws.write(try ws.path("f3"), "new start")
            #expect(try ws.text(try ws.path("f3")).hasPrefix("new startta 3\ndata 3"))
            #expect(try FileManagerless.names(spare).count == 18)
            // A stray upper file (as a crash between creating it and its row would leave).
            close(open(ws.upper.path(999_999), O_CREAT | O_WRONLY, 0o600))
            // A removed file whose blocks were not freed yet (the daemon stopped first).
            let fd = open(ws.upper.directory + "/reclaim/777777", O_CREAT | O_WRONLY, 0o600)
            #expect(write(fd, "left", 4) == 4)
            close(fd)
        }
        let ws = try f.open()
        ws.upper.settle()
        #expect(stat(ws.upper.path(999_999), &st) != 0)
        #expect(try FileManagerless.names(ws.upper.directory + "/reclaim").isEmpty)
        #expect(try FileManagerless.names(ws.upper.directory + "/spare").count == 20)
        #expect(stat(ws.upper.directory + "/spare/777777", &st) == 0 && st.st_size == 0)
        #expect(try ws.text(try ws.path("g")) == "")
        #expect(try ws.text(try ws.path("f3")).hasPrefix("new startta 3\ndata 3"))
        #expect(try ws.text(try ws.path("f5")) == String(repeating: "data 5\n", count: 500))
    }

    @Test func checkpointOnlyCutsWhatChanged() throws {
        let f = try Fixture()
        let ws = try f.open()
        for i in 0..<50 {
            let n = try ws.create(parent: root, name: bytes("f\(i)"), mode: 0o644, caller: me)
            try ws.write(n.ino, String(repeating: "line \(i)\n", count: 100))
        }
        let first = try ws.checkpoint(CheckpointRequest(message: "all"), author: 1000)
        #expect(first.filesChanged == 50)
        try ws.write(try ws.path("f7"), "changed", at: 3)
        let second = try ws.checkpoint(CheckpointRequest(message: "one"), author: 1000)
        #expect(second.filesChanged == 1)
        let third = try ws.checkpoint(CheckpointRequest(message: "none"), author: 1000)
        #expect(third.root == second.root && third.filesChanged == 0)
        #expect(try ws.text(try ws.path("f7")).hasPrefix("linchanged"))
    }

    @Test func badRequestsChangeNothing() throws {
        let f = try Fixture()
        let ws = try f.open()
        #expect(throws: AetherError.invalid("a checkpoint needs a non-empty message")) {
            try ws.checkpoint(CheckpointRequest(message: "  \n"), author: 1000)
        }
        _ = try ws.checkpoint(CheckpointRequest(message: "x", name: "keep"), author: 1000)
        #expect(throws: AetherError.exists("checkpoint keep in session w")) {
            try ws.checkpoint(CheckpointRequest(message: "y", name: "keep"), author: 1000)
        }
        #expect(throws: AetherError.self) { try ws.checkpoint(CheckpointRequest(message: "y", name: "../bad"), author: 1000) }
        #expect(try f.repo.checkpoints(of: f.session).count == 1)
        #expect(throws: AetherError.self) { try f.repo.resolveSnapshot("nope", session: f.session) }
    }

    @Test func hardLinksSurviveCheckpointAndRestore() throws {
        let f = try Fixture()
        let ws = try f.open()
        let a = try ws.create(parent: root, name: bytes("a"), mode: 0o644, caller: me)
        try ws.write(a.ino, "shared")
        let d = try ws.mkdir(parent: root, name: bytes("d"), mode: 0o755, caller: me)
        _ = try ws.link(a.ino, newParent: d.ino, newName: bytes("b"))
        let cp = try ws.checkpoint(CheckpointRequest(message: "links"), author: 1000)
        // A fresh session from the checkpoint sees one inode under two names.
        let other = try f.repo.createSession(name: "o", from: cp.sid, owner: 1)
        let ws2 = try Workspace(repo: f.repo, session: other)
        let x = try ws2.path("a"), y = try ws2.path("d/b")
        #expect(x == y)
        #expect(try ws2.attributes(x).nlink == 2)
        _ = try ws.restore(to: cp, caller: 1000)
        #expect(try ws.text(try ws.path("d/b")) == "shared")
    }

    /// A session made from a checkpoint numbers its inodes anew: hard links it makes must not take the
    /// id of a group its base already holds (with inode numbers as ids, one of sixty new groups did,
    /// and the base's two names and the new ones became one file).
    @Test func hardLinkGroupsOfAForkStayApart() throws {
        let f = try Fixture()
        let ws = try f.open()
        for i in 0..<40 {
            _ = try ws.create(parent: root, name: bytes("pad\(i)"), mode: 0o644, caller: me)
            try ws.unlink(parent: root, name: bytes("pad\(i)"))
        }
        let a = try ws.create(parent: root, name: bytes("a"), mode: 0o644, caller: me)
        try ws.write(a.ino, "base")
        _ = try ws.link(a.ino, newParent: root, newName: bytes("b"))
        let cp = try ws.checkpoint(CheckpointRequest(message: "base links"), author: 1000)
        let fork = try f.repo.createSession(name: "fork", from: cp.sid, owner: 1000)
        let ws2 = try Workspace(repo: f.repo, session: fork)
        for i in 0..<60 {
            let n = try ws2.create(parent: root, name: bytes("n\(i)"), mode: 0o644, caller: me)
            try ws2.write(n.ino, "new \(i)")
            _ = try ws2.link(n.ino, newParent: root, newName: bytes("m\(i)"))
        }
        let cp2 = try ws2.checkpoint(CheckpointRequest(message: "new links"), author: 1000)
        let groups = try f.repo.tree(cp2.root).entries.filter { $0.linkGroup != 0 }.map(\.linkGroup)
        #expect(groups.count == 122)
        #expect(Set(groups).count == 61)
        let ws3 = try Workspace(repo: f.repo, session: try f.repo.createSession(name: "again", from: cp2.sid, owner: 1000))
        #expect(try ws3.text(try ws3.path("b")) == "base")
        #expect(try ws3.path("a") != (try ws3.path("n0")))
        for i in 0..<60 { #expect(try ws3.text(try ws3.path("m\(i)")) == "new \(i)") }
    }

    /// `usage`: a fork shares its parent's data; what each wrote after is its own; a commit keeps
    /// what it holds from being anyone's alone; the session's first (empty) tree is the only garbage.
    @Test func usageTellsWhatEachSessionAloneHolds() throws {
        let f = try Fixture()
        let ws = try f.open()
        let shared = try ws.create(parent: root, name: bytes("shared"), mode: 0o644, caller: me)
        try ws.write(shared.ino, String(repeating: "s", count: 300_000))
        let cp = try ws.checkpoint(CheckpointRequest(message: "base"), author: 1000)
        let other = try Workspace(repo: f.repo, session: try f.repo.createSession(name: "other", from: cp.sid, owner: 1000))
        let mine = try ws.create(parent: root, name: bytes("mine"), mode: 0o644, caller: me)
        try ws.write(mine.ino, String(repeating: "m", count: 100_000) + String(decoding: noise(200_000, seed: 3), as: UTF8.self))
        _ = try ws.checkpoint(CheckpointRequest(message: "mine"), author: 1000)
        let theirs = try other.create(parent: root, name: bytes("theirs"), mode: 0o644, caller: me)
        try other.write(theirs.ino, String(decoding: noise(150_000, seed: 4), as: UTF8.self))
        _ = try other.checkpoint(CheckpointRequest(message: "theirs"), author: 1000)
        let u = try f.repo.usage()
        let w = try #require(u.sessions.first { $0.name == "w" }), o = try #require(u.sessions.first { $0.name == "other" })
        #expect(w.shared == o.shared && w.shared > 0, "the base's bytes are shared")
        #expect(w.exclusive > 150_000 && o.exclusive > 100_000 && w.exclusive != o.exclusive)
        #expect(w.referenced == w.exclusive + w.shared && u.dedupRatio > 1)
        #expect(u.reclaimable > 0 && u.reclaimable < 200, "only w's first, empty tree is garbage: \(u.reclaimable)")
        _ = try other.commit(CommitRequest(message: "keep"), author: 1000)
        let after = try f.repo.usage(of: ["other"])
        #expect(after.sessions.count == 1 && after.sessions[0].exclusive == 0, "a commit holds what other wrote")
        #expect(throws: AetherError.self) { try f.repo.usage(of: ["nosuch"]) }
    }

    /// Deleting a session takes its checkpoints' records with it, so it is refused while another
    /// session builds on one of them or a proposal of it is open; `--force` goes ahead (audited), the
    /// other session keeps its tree, and the store still verifies.
    @Test func aSessionOthersBuildOnIsDeletedOnlyByForce() throws {
        let f = try Fixture()
        let ws = try f.open()
        let a = try ws.create(parent: root, name: bytes("a"), mode: 0o644, caller: me)
        try ws.write(a.ino, "kept")
        let cp = try ws.checkpoint(CheckpointRequest(message: "base"), author: 1000)
        _ = try ws.fork(name: "child", at: cp.name, owner: 1000)
        _ = try ws.propose(ProposeRequest(message: "p"), caller: 1000)
        #expect { try f.repo.deleteSession(name: "w", uid: 1000) } throws: { error in
            guard case AetherError.busy(let why) = error else { return false }
            return why.contains("child")
        }
        #expect(try f.repo.sessions().count == 2, "a refusal deletes nothing")
        try f.repo.deleteSession(name: "w", uid: 1000, force: true)
        #expect(try f.repo.sessions().map(\.name) == ["child"])
        #expect(try f.repo.metadata.snapshots(kind: .checkpoint).isEmpty)
        #expect(try f.repo.metadata.proposals().map(\.state) == [.withdrawn])
        let child = try Workspace(repo: f.repo, session: try f.repo.session(named: "child"))
        #expect(try child.text(try child.path("a")) == "kept" && child.session.baseSnapshot == nil)
        #expect(try f.repo.verify(readData: true).problems.isEmpty)
        #expect((f.repo.metadata as! MemoryMetadataStore).auditLog.last { $0.action == "session-delete" }?.detail.hasPrefix("--force") == true)
    }

    /// gc deletes what nothing reaches once no write in flight could still reference it: a deleted
    /// session's own data goes, what another shares stays; an object a lease may reference waits for a
    /// later run; a condemned object that becomes reachable again is put back.
    @Test func gcDeletesOnlyWhatNothingReachesAndNothingInFlightMayReference() throws {
        let f = try Fixture()
        let ws = try f.open()
        let shared = try ws.create(parent: root, name: bytes("shared"), mode: 0o644, caller: me)
        _ = try noise(300_000, seed: 7).withUnsafeBytes { (b) throws(AetherError) in try ws.write(shared.ino, offset: 0, data: b) }
        let cp = try ws.checkpoint(CheckpointRequest(message: "base"), author: 1000)
        let other = try Workspace(repo: f.repo, session: try f.repo.createSession(name: "other", from: cp.sid, owner: 1000))
        let own = try ws.create(parent: root, name: bytes("own"), mode: 0o644, caller: me)
        _ = try noise(400_000, seed: 8).withUnsafeBytes { (b) throws(AetherError) in try ws.write(own.ino, offset: 0, data: b) }
        _ = try ws.checkpoint(CheckpointRequest(message: "own"), author: 1000)
        let before = try f.repo.objects.blobs.usage()
        let exclusive = try #require(try f.repo.usage(of: ["w"]).sessions.first).exclusive
        try f.repo.deleteSession(name: "w", uid: 1000, force: true)
        let dry = try f.repo.collect(dryRun: true, minAge: 0)
        let unchanged = try f.repo.objects.blobs.usage()
        #expect(dry.deleted > 0 && dry.deletedBytes > 0 && unchanged == before, "a dry run changes nothing")
        // A write in flight since before: nothing unreachable is deleted while it lasts.
        let lease = try f.repo.metadata.beginWrite(WriteLease(host: SessionLock.thisHost, pid: getpid(), started: secondsNow() - 10))
        let held = try f.repo.collect(dryRun: false, minAge: 0)
        #expect(held.deleted == 0 && held.condemned == 0 && held.keptInFlight > 0)
        try f.repo.metadata.endWrite(lease)
        let run = try f.repo.collect(dryRun: false, minAge: 0)
        #expect(run.deleted == dry.deleted && run.deletedBytes == dry.deletedBytes)
        let after = try f.repo.objects.blobs.usage()
        #expect(before.bytes - after.bytes == run.deletedBytes && run.deletedBytes >= exclusive / 2, "\(run) \(exclusive)")
        let back = try other.repo.content.read(try other.read(try other.path("shared"), offset: 0, count: 1 << 20))
        #expect(back == noise(300_000, seed: 7))
        #expect(try f.repo.verify(readData: true).problems.isEmpty)
        #expect(try f.repo.collect(dryRun: false, minAge: 0).deleted == 0, "a second run finds nothing")
        // The window keeps what is young.
        let young = try other.create(parent: root, name: bytes("young"), mode: 0o644, caller: me)
        try other.write(young.ino, "y")
        _ = try other.digest(young.ino)   // its chunks stored, nothing records them
        #expect(try f.repo.collect(dryRun: true, minAge: 3600).keptYoung > 0)
    }

    /// prune: of 50 checkpoints ten minutes apart, keep_last 5 and keep_within 1h keep the newest six,
    /// keep_named the named one, and a fork's base stays; the rest go, their successors' parents
    /// skipping them; a second run removes nothing.
    @Test func pruneRemovesExactlyTheCheckpointsNoRuleKeeps() throws {
        let f = try Fixture()
        let s = f.session
        let now = secondsNow()
        var ids: [Int64] = [], sids: [String] = []
        for i in 1...50 {
            let r = SnapshotRecord(sid: Workspace.newSnapshotID(), kind: .checkpoint, session: s.id, name: i == 10 ? "release" : "cp-\(i)",
                                   root: s.baseRoot, parent: ids.last, time: now - Double(50 - i) * 600, author: 1000, message: "m",
                                   meta: [:], filesChanged: 0, bytesAdded: 0)
            ids.append(try f.repo.metadata.insertSnapshot(r))
            sids.append(r.sid)
        }
        try f.repo.metadata.updateSessionBase(s.id, baseRoot: s.baseRoot, baseSnapshot: ids[49], head: ids[49])
        _ = try f.repo.createSession(name: "fork", from: sids[19], owner: 1000)
        #expect(try f.repo.prune(dryRun: true, uid: 1000, now: now).rules == false, "no rule: nothing to do")
        _ = try f.repo.setPolicy(#"{"retention": {"keep_last": 5, "keep_within": "1h"}}"#, uid: 0)
        let dry = try f.repo.prune(dryRun: true, uid: 1000, now: now)
        let goes = Set((1...44).filter { $0 != 10 && $0 != 20 }.map { "cp-\($0)" })
        #expect(Set(dry.items.filter { $0.action == "remove" }.compactMap(\.checkpoint)) == goes)
        let why = Dictionary(uniqueKeysWithValues: dry.items.compactMap { i in i.checkpoint.map { ($0, i.rule) } })
        #expect(why["cp-50"] == "base" && why["cp-47"] == "keep_last" && why["cp-45"] == "keep_within" && why["release"] == "keep_named" && why["cp-20"] == "base")
        #expect(try f.repo.checkpoints(of: s).count == 50, "a dry run changes nothing")
        let run = try f.repo.prune(dryRun: false, uid: 1000, now: now)
        #expect(run.removed == goes.count && run.items == dry.items)
        let left = try f.repo.checkpoints(of: s)
        #expect(Set(left.map(\.name)) == ["release", "cp-20", "cp-45", "cp-46", "cp-47", "cp-48", "cp-49", "cp-50"])
        let byID = Dictionary(uniqueKeysWithValues: left.map { ($0.id, $0.name) })
        #expect(left.first { $0.name == "cp-45" }?.parent.flatMap { byID[$0] } == "cp-20")
        #expect(left.first { $0.name == "cp-20" }?.parent.flatMap { byID[$0] } == "release")
        #expect(try f.repo.prune(dryRun: false, uid: 1000, now: now).removed == 0)
        #expect((f.repo.metadata as! MemoryMetadataStore).auditLog.contains { $0.action == "prune" && $0.detail.hasPrefix("removed 42") })
        // Another uid's sessions are not its to prune.
        #expect(try f.repo.prune(dryRun: true, uid: 1001, now: now).items.allSatisfy { $0.action == "keep" && $0.rule == "owner" })
        // A bad rule is refused whole.
        #expect(throws: AetherError.self) { try f.repo.setPolicy(#"{"retention": {"keep_within": "an hour"}}"#, uid: 0) }
        #expect(throws: AetherError.self) { try f.repo.setPolicy(#"{"retention": {"keep_last": 0}}"#, uid: 0) }
        #expect(throws: AetherError.self) { try f.repo.setPolicy(#"{"retention": {"keep_forever": true}}"#, uid: 0) }
        #expect(try f.repo.policy().retention.keepLast == 5)
    }

    /// prune's session rules: an idle session is retired, a retired one deleted after retired_ttl unless
    /// a fork builds on it, a fork a promotion retired after losers_ttl.
    @Test func pruneRetiresIdleSessionsAndDeletesRetiredOnes() throws {
        let f = try Fixture()
        let ws = try f.open()
        try ws.write(try ws.create(parent: root, name: bytes("a"), mode: 0o644, caller: me).ino, "a")
        _ = try ws.checkpoint(CheckpointRequest(message: "base", name: "base"), author: 1000)
        let winner = try Workspace(repo: f.repo, session: try ws.fork(name: "winner", owner: 1000))
        _ = try ws.fork(name: "loser", owner: 1000)
        _ = try f.repo.createSession(name: "idle", owner: 1000)
        try winner.write(try winner.create(parent: root, name: bytes("b"), mode: 0o644, caller: me).ino, "b")
        _ = try winner.promote(CommitRequest(message: "won"), caller: 1000)
        _ = try f.repo.setPolicy(#"{"retention": {"idle_ttl": "1d", "retired_ttl": "7d", "losers_ttl": "1h"}}"#, uid: 0)
        let now = secondsNow()
        let soon = try f.repo.prune(dryRun: false, uid: 1000, now: now + 7200)
        let decided = Dictionary(uniqueKeysWithValues: soon.items.filter { $0.what == "session" }.map { ($0.session, $0.action + " " + $0.rule) })
        #expect(decided == ["w": "keep idle_ttl", "winner": "keep idle_ttl", "idle": "keep idle_ttl", "loser": "delete losers_ttl"], "\(soon.items)")
        #expect(try f.repo.sessions().map(\.name).sorted() == ["idle", "w", "winner"])
        let later = try f.repo.prune(dryRun: false, uid: 1000, now: now + 2 * 86400)
        let all = try f.repo.sessions()
        #expect(later.retired == 3 && all.allSatisfy(\.isRetired))
        // Retired now: deleted a week on, but w only once no fork builds on it.
        let week = try f.repo.prune(dryRun: true, uid: 1000, now: now + 9 * 86400)
        let rules = Dictionary(uniqueKeysWithValues: week.items.map { ($0.session, $0.action + " " + $0.rule) })
        #expect(rules == ["w": "keep base", "winner": "delete retired_ttl", "idle": "delete retired_ttl"], "\(week.items)")
    }

    /// gc's mark filter never forgets an object it was given, and keeps few it was not (16 bits an
    /// object: about 0.1% false positives).
    @Test func theMarkFilterHasNoFalseNegativesAndFewFalsePositives() throws {
        let f = try Fixture()
        var mark = ReachableMark(content: f.repo.content, objects: 100_000)
        var rng = SystemRandomNumberGenerator()
        func random() -> ObjectID { ObjectID(w0: rng.next(), w1: rng.next(), w2: rng.next(), w3: rng.next()) }
        let given = (0..<100_000).map { _ in random() }
        for id in given { mark.insert(id) }
        #expect(given.allSatisfy(mark.contains))
        let falsePositives = (0..<100_000).count { _ in mark.contains(random()) }
        #expect(falsePositives < 500, "\(falsePositives) of 100,000")
    }

    /// Tokens: the secret is shown once and only its hash kept; it authenticates until revoked; only
    /// the store's owner and root make them, only root for another uid; scopes nest as documented.
    @Test func tokensAuthenticateUntilRevokedAndOnlyTheOwnerMakesThem() throws {
        let f = try Fixture()
        let owner = f.repo.ownerUID
        let (ci, secret) = try f.repo.createToken(name: "ci", scope: .write, as: nil, caller: owner)
        #expect(ci.uid == owner && ci.hash != secret && !ci.hash.contains(secret))
        #expect(try f.repo.authenticate(secret)?.name == "ci")
        #expect(try f.repo.authenticate(String(secret.dropLast()) + (secret.last == "0" ? "1" : "0")) == nil)
        #expect(try f.repo.authenticate("Bearer " + secret) == nil && f.repo.authenticate("") == nil)
        #expect(throws: AetherError.self) { try f.repo.createToken(name: "ci", scope: .read, as: nil, caller: owner) }
        #expect(throws: AetherError.self) { try f.repo.createToken(name: "../x", scope: .read, as: nil, caller: owner) }
        #expect(throws: AetherError.self) { try f.repo.createToken(name: "mine", scope: .read, as: nil, caller: owner &+ 4242) }
        if owner != 0 {
            #expect(throws: AetherError.self) { try f.repo.createToken(name: "bob", scope: .review, as: owner &+ 1, caller: owner) }
        }
        let (bob, _) = try f.repo.createToken(name: "bob", scope: .review, as: 1001, caller: 0)
        #expect(bob.uid == 1001)
        #expect(try f.repo.tokens(caller: owner).map(\.name) == ["ci", "bob"])
        try f.repo.revokeToken(name: "ci", caller: owner)
        #expect(try f.repo.authenticate(secret) == nil)
        #expect(throws: AetherError.self) { try f.repo.revokeToken(name: "ci", caller: owner) }
        let scopes = TokenScope.allCases
        let allowed = scopes.map { have in scopes.filter { have.allows($0) }.map(\.rawValue) }
        #expect(allowed == [["read"], ["read", "write"], ["read", "write", "review"], ["read", "write", "review", "admin"]])
    }

    /// A hard-link group formed since the last checkpoint takes the id an import would give it (from
    /// its first name in tree order), unless the tree has that id already: then another, and the two
    /// groups stay two files.
    @Test func aNewLinkGroupsIdIsTheOneAnImportDerivesUnlessTaken() throws {
        let f = try Fixture()
        let ws = try f.open()
        let d = try ws.mkdir(parent: root, name: bytes("d"), mode: 0o755, caller: me)
        let a = try ws.create(parent: d.ino, name: bytes("z"), mode: 0o644, caller: me)
        try ws.write(a.ino, "one")
        _ = try ws.link(a.ino, newParent: root, newName: bytes("b"))
        _ = try ws.link(a.ino, newParent: d.ino, newName: bytes("c"))
        let cp = try ws.checkpoint(CheckpointRequest(message: "one"), author: 1000)
        func group(_ tree: ObjectID, _ path: String) throws -> UInt64 {
            var id = tree
            let parts = path.split(separator: "/")
            for part in parts.dropLast() { id = try #require(try f.repo.tree(id).entries.first { $0.name == bytes(String(part)) }?.content) }
            return try #require(try f.repo.tree(id).entries.first { $0.name == bytes(String(parts.last!)) }).linkGroup
        }
        // Names in tree order: b, d/c, d/z; the first is b.
        let first = Workspace.linkGroup(firstPath: [bytes("b")])
        #expect(try group(cp.root, "b") == first && group(cp.root, "d/z") == first)
        // b goes; a new group's first name is b again: its id is taken by the group of d/c and d/z.
        try ws.unlink(parent: root, name: bytes("b"))
        let n = try ws.create(parent: root, name: bytes("b"), mode: 0o644, caller: me)
        try ws.write(n.ino, "two")
        _ = try ws.link(n.ino, newParent: root, newName: bytes("b2"))
        let cp2 = try ws.checkpoint(CheckpointRequest(message: "two"), author: 1000)
        #expect(try group(cp2.root, "d/c") == first && group(cp2.root, "b") != first && group(cp2.root, "b") == group(cp2.root, "b2"))
        let again = try Workspace(repo: f.repo, session: try f.repo.session(named: "w"))
        #expect(try again.text(try again.path("b2")) == "two" && again.text(try again.path("d/z")) == "one")
        #expect(try again.path("b2") == again.path("b") && again.path("d/c") == again.path("d/z") && again.path("b") != again.path("d/z"))
    }

    /// A sync's receiver takes an object only when it hashes to its id and everything it names is
    /// there already, a paged tree's pages' entries included: what it holds stays closed.
    @Test func aSyncReceiverRefusesWhatWouldLeaveItsStoreOpen() throws {
        let f = try Fixture()
        let ws = try f.open()
        let d = try ws.mkdir(parent: root, name: bytes("d"), mode: 0o755, caller: me)
        for i in 0..<1100 { try ws.write(try ws.create(parent: d.ino, name: bytes("f\(i)"), mode: 0o644, caller: me).ino, "file \(i)") }
        let cp = try ws.checkpoint(CheckpointRequest(message: "big"), author: 1000)
        let dir = try #require(try f.repo.tree(cp.root).entries.first { $0.name == bytes("d") }?.content)
        let head = try f.repo.content.treeHead(dir)
        let pages = try #require(head.pages)
        let file = try #require(try f.repo.content.page(pages[0]).first?.content)
        let chunk = try #require(try f.repo.content.manifest(file).manifest.chunks.first?.id)
        let stored = { (id: ObjectID) in try f.repo.objects.stored(id) }
        let other = try Repository(path: f.dir.path + "/other", blobs: MemoryBlobStore(), metadata: MemoryMetadataStore())
        let peer = LocalPeer(other)
        // A manifest before its chunk; a page's head before the page's own files; a damaged chunk.
        #expect(throws: AetherError.self) { try peer.receive([(file, try stored(file))]) }
        #expect(throws: AetherError.self) { try peer.receive(try pages.map { ($0.id, try stored($0.id)) } + [(dir, try stored(dir))]) }
        var bad = try stored(chunk)
        bad[bad.count - 1] ^= 1
        #expect(throws: AetherError.self) { try peer.receive([(chunk, bad)]) }
        #expect(try other.objects.missing(of: [dir, file, chunk] + pages.map(\.id)).count == 3 + pages.count, "nothing that was refused was kept")
        // In order, everything goes in, and the tree reads back.
        _ = try Sync.copy(from: LocalPeer(f.repo), to: peer, branches: [], sessions: ["w"], force: false, caller: 1000)
        #expect(try other.verify(readData: true).problems.isEmpty)
        #expect(try other.tree(dir).entries.count == 1100)
    }

    @Test func largeDirectoriesCheckpointWhatChangedAndReadBackWhole() throws {
        let f = try Fixture()
        /// The stored tree of `dir` in checkpoint `cp`, checked to be the one a whole rewrite gives.
        func storedTree(_ cp: SnapshotRecord, _ dir: String) throws -> Tree {
            var id = cp.root
            for part in dir.split(separator: "/") {
                id = try #require(try f.repo.tree(id).entries.first { $0.name == bytes(String(part)) }?.content)
            }
            var whole = try f.repo.tree(id)
            whole.pages = nil
            #expect(try f.repo.content.putTree(whole) == id, "written in part, the tree is the one written whole")
            return whole
        }
        let cp2: SnapshotRecord
        do {
            let ws = try f.open()
            let big = try ws.mkdir(parent: root, name: bytes("big"), mode: 0o755, caller: me)
            for i in 0..<1500 {
                let n = try ws.create(parent: big.ino, name: bytes("f\(i)"), mode: 0o644, caller: me)
                try ws.write(n.ino, "\(i)")
            }
            _ = try ws.link(try ws.path("big/f1"), newParent: root, newName: bytes("h1"))
            let cp1 = try ws.checkpoint(CheckpointRequest(message: "big"), author: 1000)
            #expect(try f.repo.content.treeHead(try #require(storedTree(cp1, "").entries.first { $0.name == bytes("big") }?.content)).pages != nil)
            try ws.write(try ws.path("big/f5"), "five")
            try ws.unlink(parent: big.ino, name: bytes("f7"))
            try ws.rename(parent: big.ino, name: bytes("f8"), newParent: big.ino, newName: bytes("zz"), flags: [])
            _ = try ws.create(parent: big.ino, name: bytes("a-new"), mode: 0o600, caller: me)
            try ws.write(try ws.path("h1"), "one, through the other name")
            cp2 = try ws.checkpoint(CheckpointRequest(message: "few changes"), author: 1000)
            #expect(cp2.filesChanged == 3)
        }
        // After reopening, which names changed is not known: the next checkpoint writes big whole.
        let ws = try f.open()
        try ws.write(try ws.path("big/f9"), "nine")
        let cp3 = try ws.checkpoint(CheckpointRequest(message: "after reopening"), author: 1000)
        for (cp, nine) in [(cp2, "9"), (cp3, "nine")] {
            let tree = try storedTree(cp, "big")
            #expect(tree.entries.count == 1500)
            let other = try f.repo.createSession(name: "check-\(cp.name)", from: cp.sid, owner: 1)
            let view = try Workspace(repo: f.repo, session: other)
            #expect(try view.text(try view.path("big/f5")) == "five")
            #expect(try view.text(try view.path("big/f1")) == "one, through the other name")
            #expect(try view.text(try view.path("big/zz")) == "8")
            #expect(try view.text(try view.path("big/f9")) == nine)
            #expect(try view.text(try view.path("big/f1499")) == "1499")
            #expect(throws: AetherError.self) { try view.path("big/f7") }
            #expect(try view.attributes(try view.path("big/a-new")).mode == 0o600)
            #expect(try view.list(try view.path("big")).count == 1500)
        }
    }

    @Test func restoreVisitsOnlyWhatDiffers() throws {
        let f = try Fixture()
        let ws = try f.open()
        let big = try ws.mkdir(parent: root, name: bytes("big"), mode: 0o755, caller: me)
        for i in 0..<1200 {
            let n = try ws.create(parent: big.ino, name: bytes("f\(i)"), mode: 0o644, caller: me)
            try ws.write(n.ino, "\(i)")
        }
        let still = try ws.mkdir(parent: root, name: bytes("still"), mode: 0o755, caller: me)
        let kept = try ws.create(parent: still.ino, name: bytes("k"), mode: 0o644, caller: me)
        let cp1 = try ws.checkpoint(CheckpointRequest(message: "before"), author: 1000)
        try ws.write(try ws.path("big/f3"), "three")
        _ = try ws.checkpoint(CheckpointRequest(message: "between"), author: 1000)
        try ws.write(try ws.path("big/f5"), "five")
        try ws.unlink(parent: big.ino, name: bytes("f7"))
        _ = try ws.create(parent: big.ino, name: bytes("new"), mode: 0o644, caller: me)
        let inv = try ws.restore(to: cp1, caller: 1000)
        for name in ["f3", "f5", "f7", "new"] {
            #expect(inv.contains(.entry(parent: big.ino, name: bytes(name))), "\(name) is visited")
        }
        #expect(!inv.contains(.entry(parent: big.ino, name: bytes("f100"))), "an unchanged name is left alone")
        #expect(!inv.contains(.inode(still.ino)), "an unchanged directory is left alone")
        #expect(try ws.text(try ws.path("big/f3")) == "3")
        #expect(try ws.text(try ws.path("big/f5")) == "5")
        #expect(try ws.text(try ws.path("big/f7")) == "7")
        #expect(throws: AetherError.self) { try ws.path("big/new") }
        #expect(try ws.path("still/k") == kept.ino)
        #expect(try ws.list(big.ino).count == 1200)
    }

    @Test func restoreAfterReopeningFindsEveryChange() throws {
        let f = try Fixture()
        let cp1: SnapshotRecord
        do {
            let ws = try f.open()
            let big = try ws.mkdir(parent: root, name: bytes("big"), mode: 0o755, caller: me)
            for i in 0..<1100 { _ = try ws.create(parent: big.ino, name: bytes("f\(i)"), mode: 0o644, caller: me) }
            cp1 = try ws.checkpoint(CheckpointRequest(message: "before"), author: 1000)
            try ws.write(try ws.path("big/f9"), "nine")
            _ = try ws.create(parent: big.ino, name: bytes("extra"), mode: 0o644, caller: me)
        }
        let ws = try f.open()
        _ = try ws.restore(to: cp1, caller: 1000)
        #expect(try ws.text(try ws.path("big/f9")) == "")
        #expect(throws: AetherError.self) { try ws.path("big/extra") }
        let again = try f.open()
        #expect(try again.list(try again.path("big")).count == 1100)
    }

    /// A file's next hard link, an unlink of one of its names, and setting one of its many extended
    /// attributes each write a few catalog rows, however many links and attributes the file has (N
    /// links cost N rows, not N²); all of it reads back after reopening and after a checkpoint, also
    /// from a node row of schema 3, which kept its attributes in itself.
    @Test func linksAndXattrsCostWhatTheyChange() throws {
        let f = try Fixture()
        let rows = { f.catalog.db.rowsChanged }
        let value = [UInt8](repeating: 7, count: 40)
        do {
            let ws = try f.open()
            let d = try ws.mkdir(parent: root, name: bytes("d"), mode: 0o755, caller: me)
            let a = try ws.create(parent: root, name: bytes("a"), mode: 0o644, caller: me)
            for i in 0..<300 { _ = try ws.link(a.ino, newParent: d.ino, newName: bytes("l\(i)")) }
            var before = rows()
            _ = try ws.link(a.ino, newParent: d.ino, newName: bytes("l300"))
            #expect(rows() - before <= 5)
            before = rows()
            try ws.unlink(parent: d.ino, name: bytes("l0"))
            #expect(rows() - before <= 5)
            for i in 0..<1000 { try ws.setXattr(a.ino, name: "user.k\(i)", value: value, create: true, replace: false) }
            before = rows()
            try ws.setXattr(a.ino, name: "user.k500", value: bytes("new"), create: false, replace: true)
            try ws.removeXattr(a.ino, name: "user.k7")
            #expect(rows() - before <= 4)
            let stored = try f.catalog.db.query("SELECT max(length(xattrs)) FROM nodes").first?.first?.int
            #expect(stored == 0)
        }
        func check(_ ws: Workspace) throws {
            let a = try ws.path("a")
            #expect(try ws.attributes(a).nlink == 301)
            #expect(try ws.list(try ws.path("d")).count == 300)
            #expect(try ws.listXattrs(a).count == 999)
            #expect(try ws.getXattr(a, name: "user.k500") == bytes("new"))
            #expect(try ws.getXattr(a, name: "user.k9") == value)
        }
        try check(try f.open())
        // A row as schema 3 wrote it: the attributes inside the node row, none of their own.
        let a = try f.open().path("a")
        let all = try f.catalog.db.query("SELECT name, value FROM xattrs WHERE ino=?", .int(Int64(a)))
        var map = XattrMap()
        for r in all { map[String(decoding: r[0].blob!, as: UTF8.self)] = r[1].blob! }
        _ = try f.catalog.db.run("UPDATE nodes SET xattrs=? WHERE ino=?", .blob(encodeXattrs(map)), .int(Int64(a)))
        _ = try f.catalog.db.run("DELETE FROM xattrs")
        do {
            let ws = try f.open()
            try check(ws)
            try ws.setXattr(a, name: "user.k9", value: value, create: false, replace: true)
        }
        #expect(try f.catalog.db.query("SELECT count(*) FROM xattrs").first?.first?.int == 999)
        do {
            let ws = try f.open()
            try check(ws)
            _ = try ws.checkpoint(CheckpointRequest(message: "all"), author: 1000)
        }
        try check(try f.open())
    }

    @Test func sessionLockRefusesASecondHolder() throws {
        let f = try Fixture()
        let lock = try SessionLock(repository: f.repo, session: f.session)
        #expect(throws: AetherError.self) { try SessionLock(repository: f.repo, session: f.session) }
        #expect(throws: AetherError.self) { try f.repo.deleteSession(name: "w", uid: 0) }
        lock.release()
        try f.repo.deleteSession(name: "w", uid: 0)
        #expect(throws: AetherError.notFound("session w")) { try f.repo.session(named: "w") }
    }
}

enum FileManagerless {
    static func names(_ path: String) throws -> [String] {
        guard FileIO.exists(path) else { throw AetherError.notFound(path) }
        return FileIO.entries(of: path).map(\.name)
    }
}

@Suite struct SessionLeases {
    @Test func oneHolderAtATimeAndADeadOrLapsedHolderIsTakenOver() throws {
        let f = try Fixture()
        let first = try SessionLock(repository: f.repo, session: f.session)
        #expect(throws: AetherError.self) { try SessionLock(repository: f.repo, session: f.session) }
        first.mounted(at: "/mnt/w")
        #expect(f.repo.mountpoint(of: f.session) == "/mnt/w")
        #expect(f.repo.holder(of: f.session)?.pid == getpid())
        first.release()
        #expect(f.repo.mountpoint(of: f.session) == nil)
        #expect(try f.repo.metadata.lease(session: f.session.id) == nil)

        // A lease of this host left by a process that died (its flock is gone): taken over at once.
        let dead = LeaseRecord(session: f.session.id, host: SessionLock.thisHost, pid: 999_999, mountpoint: "/gone",
                               acquired: 1, expires: secondsNow() + 1000)
        #expect(try f.repo.metadata.takeLease(dead) { _ in true } == nil)
        #expect(f.repo.mountpoint(of: f.session) == nil, "no live process holds this host's flock")
        let second = try SessionLock(repository: f.repo, session: f.session)
        #expect(try f.repo.metadata.lease(session: f.session.id)?.pid == getpid())
        second.release()

        // Another host's lease stands until it lapses.
        let other = LeaseRecord(session: f.session.id, host: "another-host", pid: 7, mountpoint: "/there",
                                acquired: 1, expires: secondsNow() + 1000)
        #expect(try f.repo.metadata.takeLease(other) { _ in true } == nil)
        #expect(f.repo.holder(of: f.session)?.mountpoint == "/there")
        #expect(f.repo.mountpoint(of: f.session) == nil, "another host's mount is not reachable from here")
        do {
            _ = try SessionLock(repository: f.repo, session: f.session)
            Issue.record("another host's standing lease was taken")
        } catch {
            #expect(error.description.contains("pid 7 on host another-host"))
        }
        var lapsed = other
        lapsed.expires = secondsNow() - 1
        #expect(try f.repo.metadata.renewLease(lapsed))
        #expect(f.repo.holder(of: f.session) == nil)
        let third = try SessionLock(repository: f.repo, session: f.session)
        #expect(try f.repo.metadata.lease(session: f.session.id)?.host == SessionLock.thisHost)
        third.release()
    }
}
