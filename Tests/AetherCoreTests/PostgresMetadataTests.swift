import Testing
import Foundation
import AetherModel
import AetherMeta
import AetherMetaPostgres
import TestSupport

/// What PostgreSQL adds to the conformance suite: several hosts (connections) at once, claiming a
/// database for a store, and a server that goes away and comes back.
@Suite struct PostgresMetadataTests {
    func available() -> Bool {
        if PostgresServer.available { return true }
        if PostgresServer.required { Issue.record("no PostgreSQL server to test with (Scripts/setup installs postgresql)") }
        return false
    }

    /// Hosts racing for one session's lease: exactly one gets it; and their audit entries, appended at
    /// once, form one unbroken chain.
    @Test func hostsRacingForALeaseAndTheAuditChainSerialize() throws {
        guard available() else { return }
        let url = try PostgresServer.shared.get().newDatabase()
        #expect(try PostgresMetadata.claim(url: url, store: "s1") == "s1")
        let hosts = try (0..<6).map { _ in try PostgresMetadata(config: MetaConfig(url: url, store: "s1")) }
        let won = Counter()
        DispatchQueue.concurrentPerform(iterations: hosts.count) { i in
            let lease = LeaseRecord(session: 7, host: "h\(i)", pid: Int32(i), mountpoint: nil, acquired: 1, expires: secondsNow() + 60)
            if (try? hosts[i].takeLease(lease) { $0.expires < secondsNow() }) == .some(nil) { won.add() }
            for n in 0..<20 { _ = try? hosts[i].audit(uid: UInt32(i), action: "x", session: "", detail: "\(i)-\(n)") }
        }
        #expect(won.value == 1, "one host holds the lease")
        let log = try hosts[0].auditRecords()
        #expect(log.count == 120 && log.map(\.id) == Array(1...120))
        #expect(AuditRecord.firstBreak(log) == nil)
    }

    /// The first claim makes the database the store's; a later claim learns that store (attach); a
    /// store opened over another's database is refused in one line.
    @Test func aDatabaseHoldsOneStore() throws {
        guard available() else { return }
        let url = try PostgresServer.shared.get().newDatabase()
        #expect(try PostgresMetadata.claim(url: url, store: "first") == "first")
        #expect(try PostgresMetadata.claim(url: url, store: "second") == "first")
        #expect(throws: MetadataError.self) { try PostgresMetadata(config: MetaConfig(url: url, store: "second")) }
        do {
            _ = try PostgresMetadata(config: MetaConfig(url: url, store: "second"))
        } catch {
            #expect("\(error)".contains("holds store first, not this store (second)"))
        }
    }

    /// Malformed addresses, a password in the URL, a server that is not there, a database that does not
    /// exist: each a `MetadataError` with a readable line, none a hang.
    @Test func badAddressesAreRefusedInOneLine() throws {
        guard available() else { return }
        let server = try PostgresServer.shared.get()
        func refusal(_ url: String) -> MetadataError? {
            do { _ = try PostgresMetadata.claim(url: url, store: "x"); return nil } catch { return error as? MetadataError }
        }
        #expect(refusal("mysql://u@h/db")?.code == .invalid)
        #expect(refusal("postgres://u:secret@127.0.0.1/db")?.message.contains("PGPASSWORD") == true)
        #expect(refusal("postgres://u@127.0.0.1:5432/")?.code == .invalid)
        #expect(refusal("postgres://aether@127.0.0.1:\(server.port)/db?sslmode=verify-full")?.code == .invalid)
        let closed = try PostgresServer.freePort()
        let gone = refusal("postgres://aether@127.0.0.1:\(closed)/db")
        #expect(gone?.code == .unavailable && gone?.message.contains("cannot be reached") == true, "\(String(describing: gone))")
        let missing = refusal(server.url("nosuchdb"))
        #expect(missing?.code == .unavailable && missing?.message.contains("nosuchdb") == true, "\(String(describing: missing))")
    }

    /// A server restarted under an open store: the next call connects again and finds everything.
    @Test func aRestartedServerIsReconnectedTo() throws {
        guard available() else { return }
        let server = try PostgresServer(); defer { server.stop() }
        let url = try server.newDatabase("store")
        _ = try PostgresMetadata.claim(url: url, store: "s")
        let m = try PostgresMetadata(config: MetaConfig(url: url, store: "s"))
        try m.createBranch("main", head: 1)
        server.kill()
        #expect(throws: MetadataError.self) { try m.branch("main") }
        try server.start()
        #expect(try m.branch("main") == 1)
        #expect(try m.integrityCheck() == ["ok"])
    }

    /// A database whose schema is newer than this code is refused, and nothing in it changes.
    @Test func aNewerSchemaIsRefused() throws {
        guard available() else { return }
        let server = try PostgresServer.shared.get()
        let url = try server.newDatabase()
        _ = try PostgresMetadata.claim(url: url, store: "s")
        let db = String(url.split(separator: "/").last!)
        #expect(server.psql(db, "UPDATE meta SET value='99' WHERE key='schema'").status == 0)
        do {
            _ = try PostgresMetadata(config: MetaConfig(url: url, store: "s"))
            Issue.record("a newer schema was opened")
        } catch {
            #expect("\(error)".contains("schema 99, newer than this aetherfs knows"))
        }
        #expect(server.psql(db, "SELECT value FROM meta WHERE key='schema'").out.trimmingCharacters(in: .whitespacesAndNewlines) == "99")
    }
}

extension PostgresMetadataTests {
    /// A packed store's index in PostgreSQL: where each object is, live bytes per pack, an object
    /// written again while condemned takes its new place, moves and removals; SQLite's answers the same.
    @Test func thePackIndexAnswersAsSQLitesDoes() throws {
        guard available() else { return }
        let dir = TempDir(); defer { dir.remove() }
        let indexes: [any PackIndex] = [try MetadataBackend.newPostgres(), try Catalog(path: dir.path + "/meta.db")]
        var answers: [String] = []
        for index in indexes {
            let a = ObjectID.of(.chunk, [1]), b = ObjectID.of(.chunk, [2]), c = ObjectID.of(.chunk, [3])
            try index.insertPack(PackRecord(name: "p1", bytes: 300, created: 1), [
                PackedObject(id: a, pack: "p1", offset: 0, length: 100, written: 1),
                PackedObject(id: b, pack: "p1", offset: 100, length: 200, written: 1)])
            try index.setCondemned(b, at: 5)
            // b written again (into p2) while condemned: its new copy is the one found.
            try index.insertPack(PackRecord(name: "p2", bytes: 400, created: 2), [
                PackedObject(id: b, pack: "p2", offset: 0, length: 200, written: 2),
                PackedObject(id: c, pack: "p2", offset: 200, length: 200, written: 2),
                PackedObject(id: a, pack: "p2", offset: 400, length: 100, written: 2)])
            let found = try index.locate([a, b, c, ObjectID.of(.chunk, [4])])
            #expect(found.count == 3 && found[a]?.pack == "p1" && found[b]?.pack == "p2" && found[b]?.condemned == nil)
            try index.moveObjects([PackedObject(id: c, pack: "p1", offset: 300, length: 200, written: 2)])
            try index.removeObject(a)
            try index.removePack("p2")
            var all: [String] = []
            try index.forEachObject { all.append("\($0.pack)@\($0.offset)+\($0.length)") }
            let packs = try index.packs().map { "\($0.pack.name):\($0.pack.bytes):\($0.liveBytes):\($0.liveObjects)" }
            answers.append("\(all.sorted()) \(packs) \(try index.objects(inPack: "p1").map(\.offset))")
        }
        #expect(answers[0] == answers[1], "\(answers)")
        #expect(answers[0] == #"["p1@300+200", "p2@0+200"] ["p1:300:200:1"] [300]"#, "\(answers)")
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
