import Testing
import Glibc
import AetherModel
import AetherCore
import AetherVFS
import AetherStore
import TestSupport
import Synchronization
import Foundation

/// The control surface without a kernel.
final class VFSFixture {
    let dir = TempDir()
    let repo: Repository
    let vfs: SessionFileSystem
    let me = Caller(uid: 0, gid: 0)
    init() throws {
        repo = try Repository(path: dir.path + "/store", blobs: MemoryBlobStore(), metadata: MemoryMetadataStore())
        let s = try repo.createSession(name: "v", owner: 0)
        vfs = SessionFileSystem(workspace: try Workspace(repo: repo, session: s), mountpoint: "/nowhere")
    }
    deinit { dir.remove() }

    /// Writes a request as a program would: one write (or `pieces`), then close (flush, release).
    func request(_ file: ControlFile, _ text: String, as caller: Caller? = nil, pieces: [Int]? = nil) -> Int32 {
        let me = caller ?? me
        do {
            let h = try vfs.open(file.ino, writing: true, caller: me).handle
            defer { try? vfs.release(file.ino, handle: h) }
            let bytes = Array(text.utf8)
            var at = 0
            for n in pieces ?? [bytes.count] {
                _ = try Array(bytes[at..<at + n]).withUnsafeBytes { (b) throws(FSFailure) in try vfs.write(file.ino, handle: h, offset: UInt64(at), data: b, caller: me).count }
                at += n
            }
            try vfs.flush(file.ino, handle: h, caller: me)
            return 0
        } catch {
            return (error as? FSFailure)?.code ?? -1
        }
    }

    func read(_ file: ControlFile, as caller: Caller? = nil) throws -> String {
        let h = try vfs.open(file.ino, writing: false, caller: caller ?? me).handle
        defer { try? vfs.release(file.ino, handle: h) }
        return String(decoding: try vfs.read(file.ino, handle: h, offset: 0, count: 1 << 20), as: UTF8.self)
    }

    func names(_ ino: UInt64) throws -> [String] {
        _ = try vfs.opendir(ino)
        var out: [String] = []
        try vfs.readdir(ino, offset: 0, plus: false) { name, _, _ in out.append(String(decoding: name, as: UTF8.self)); return true }
        return out
    }
}

/// A kernel that records what it is told.
final class RecordingKernel: KernelNotifier {
    let told = Mutex((invalidations: [Invalidation](), flushes: 0))
    func invalidate(_ items: [Invalidation]) { told.withLock { $0.invalidations += items } }
    func flushWrites() { told.withLock { $0.flushes += 1 } }
    func take() -> (invalidations: [Invalidation], flushes: Int) { told.withLock { t in defer { t = ([], 0) }; return t } }
}

@Suite struct ControlSurfaceTests {
    /// A restore tells the kernel what to forget; by xattr on the root (whose lock the kernel holds until
    /// the reply) the root's names are left for the adapter to send after replying, by control file
    /// they go at once. Every request first asks the kernel for its written pages.
    @Test func theKernelHearsOfARestoreAndRootNamesWaitForTheReply() throws {
        let f = try VFSFixture()
        let kernel = RecordingKernel()
        f.vfs.attach(kernel)
        let root = Workspace.rootIno
        _ = try f.vfs.mknod(parent: root, name: Array("a".utf8), mode: 0o100644, rdev: 0, caller: f.me)
        #expect(f.request(.checkpoint, "{\"name\":\"one\",\"message\":\"m\"}\n") == 0)
        _ = try f.vfs.mknod(parent: root, name: Array("b".utf8), mode: 0o100644, rdev: 0, caller: f.me)
        _ = try f.vfs.mkdir(parent: root, name: Array("d".utf8), mode: 0o755, caller: f.me)
        #expect(kernel.take().flushes == 1, "the checkpoint asked for the kernel's pages")

        let later = try f.vfs.setxattr(root, name: "user.aether.restore", value: Array("one".utf8), create: false, replace: false, caller: f.me)
        let now = kernel.take()
        #expect(now.flushes == 1)
        #expect(later.contains(.entry(parent: root, name: Array("b".utf8))) && later.contains(.entry(parent: root, name: Array("d".utf8))))
        #expect(later.allSatisfy { if case .entry(root, _) = $0 { true } else if case .resize = $0 { true } else { false } })
        #expect(!now.invalidations.contains { if case .entry(root, _) = $0 { true } else { false } }, "no root name before the reply")

        _ = try f.vfs.mknod(parent: root, name: Array("c".utf8), mode: 0o100644, rdev: 0, caller: f.me)
        #expect(f.request(.restore, "one\n") == 0)
        #expect(kernel.take().invalidations.contains(.entry(parent: root, name: Array("c".utf8))), "by control file: at once")
        f.vfs.attach(nil)
        _ = try f.vfs.mknod(parent: root, name: Array("e".utf8), mode: 0o100644, rdev: 0, caller: f.me)
        #expect(f.request(.restore, "one\n") == 0)
        #expect(kernel.take().invalidations.isEmpty, "a detached kernel hears nothing")
    }

    @Test func controlDirectoryIsHiddenButReachable() throws {
        let f = try VFSFixture()
        #expect(try f.names(Workspace.rootIno) == [".", ".."])
        let e = try f.vfs.lookup(parent: Workspace.rootIno, name: Array(".aether".utf8))
        #expect(e.attributes.kind == .directory)
        #expect(try f.names(e.attributes.ino).sorted() == [".", "..", "README", "checkpoint", "checkpoints", "commit", "commits", "fork", "import", "last", "log", "promote", "propose", "restore", "stats", "status"])
        #expect(throws: FSFailure.self) { try f.vfs.mkdir(parent: Workspace.rootIno, name: Array(".aether".utf8), mode: 0o755, caller: f.me) }
    }

    @Test func checkpointAndRestoreRequests() throws {
        let f = try VFSFixture()
        let a = try f.vfs.mknod(parent: Workspace.rootIno, name: Array("a".utf8), mode: 0o100644, rdev: 0, caller: f.me)
        let h = try f.vfs.open(a.attributes.ino, writing: true, caller: f.me).handle
        _ = try Array("v1".utf8).withUnsafeBytes { (b) throws(FSFailure) in try f.vfs.write(a.attributes.ino, handle: h, offset: 0, data: b, caller: f.me).count }
        #expect(f.request(.checkpoint, "{\"message\":\"one\",\"name\":\"one\",\"meta\":{\"k\":\"v\"}}\n") == 0)
        #expect(try f.read(.last).contains("\"meta\":{\"k\":\"v\"}"))
        #expect(try f.read(.checkpoint).contains("\"name\":\"one\""))
        _ = try Array("v2".utf8).withUnsafeBytes { (b) throws(FSFailure) in try f.vfs.write(a.attributes.ino, handle: h, offset: 0, data: b, caller: f.me).count }
        #expect(f.request(.restore, "one\n") == 0)
        #expect(try f.vfs.read(a.attributes.ino, handle: h, offset: 0, count: 10) == Array("v1".utf8))
        #expect(try f.read(.log).contains("one"))
        #expect(try f.read(.status).contains("\"head\":\"one\""))
    }

    @Test(arguments: [
        ("", EINVAL, "message"), ("{\"message\":1}", EINVAL, "must be a string"), ("{oops", EINVAL, "JSON"),
        ("{\"message\":\"m\",\"x\":1}", EINVAL, "unknown key"), ("{\"message\":\"m\",\"meta\":{\"a\":1}}", EINVAL, "meta value"),
        ("{\"message\":\"m\",\"name\":\"a b\"}", EINVAL, "name"),
    ])
    func malformedCheckpointRequests(payload: String, code: Int32, words: String) throws {
        let f = try VFSFixture()
        #expect(f.request(.checkpoint, payload) == code)
        #expect(try f.read(.last).contains(words))
        #expect(try f.read(.checkpoint) == "null\n", "nothing was recorded")
    }

    /// readdir keeps no handle: it resumes after the cookie it was given, so names added or removed
    /// between two requests never make it skip or repeat another name.
    @Test func readdirResumesAcrossChangesWithoutSkippingOrRepeating() throws {
        let f = try VFSFixture()
        let d = try f.vfs.mkdir(parent: Workspace.rootIno, name: Array("d".utf8), mode: 0o755, caller: f.me).attributes.ino
        func add(_ name: String) throws { _ = try f.vfs.mknod(parent: d, name: Array(name.utf8), mode: 0o100644, rdev: 0, caller: f.me) }
        for i in 0..<300 { try add("f\(i)") }
        var seen: [String] = [], offset = 0, round = 0
        while true {
            var got = 0
            try f.vfs.readdir(d, offset: offset, plus: false) { name, _, next in
                guard got < 7 else { return false }
                seen.append(String(decoding: name, as: UTF8.self))
                offset = next
                got += 1
                return true
            }
            if got == 0 { break }
            // Between requests: one name already listed and one not yet go, a new one comes.
            round += 1
            func present(_ name: String) -> Bool { (try? f.vfs.lookup(parent: d, name: Array(name.utf8))) != nil }
            if let gone = seen.last(where: { $0.hasPrefix("f") && present($0) }) { try f.vfs.unlink(parent: d, name: Array(gone.utf8)) }
            let later = (0..<300).map { "f\($0)" }.first { !seen.contains($0) && present($0) }
            if let later, round % 3 == 0 { try f.vfs.unlink(parent: d, name: Array(later.utf8)) }
            try add("new\(round)")
        }
        #expect(Set(seen).count == seen.count, "a name was listed twice")
        #expect(Array(seen.prefix(2)) == [".", ".."])
        // Every name present from the first request to the last was listed.
        let kept = (0..<300).map { "f\($0)" }.filter { (try? f.vfs.lookup(parent: d, name: Array($0.utf8))) != nil }
        #expect(kept.allSatisfy(seen.contains))
        #expect(seen.count >= kept.count + 2)
    }

    /// The kernel keeps every listing until the directory's mtime changes: a listing of snapshots moves
    /// its mtime when a snapshot comes, keeps it otherwise, and has its attributes asked for each time.
    @Test func snapshotListingMovesItsMtimeWhenItChanges() throws {
        let f = try VFSFixture()
        let control = try f.vfs.lookup(parent: Workspace.rootIno, name: Array(".aether".utf8)).attributes.ino
        let listing = try f.vfs.lookup(parent: control, name: Array("checkpoints".utf8)).attributes.ino
        let before = try f.vfs.getattr(listing)
        #expect(before.attrTimeout == 0)
        #expect(try f.vfs.getattr(listing).attributes.mtime == before.attributes.mtime)
        #expect(try f.names(listing) == [".", ".."])
        #expect(f.request(.checkpoint, "{\"message\":\"one\",\"name\":\"one\"}") == 0)
        let after = try f.vfs.getattr(listing)
        #expect(after.attributes.mtime != before.attributes.mtime)
        #expect(try f.names(listing) == [".", "..", "one"])
        #expect(try f.vfs.getattr(listing).attributes.mtime == after.attributes.mtime)
    }

    @Test func unknownRestoreTargetIsENOENT() throws {
        let f = try VFSFixture()
        #expect(f.request(.restore, "ghost") == ENOENT)
        #expect(try f.read(.last).hasPrefix("error: restore: not found"))
        #expect(f.request(.restore, "a\nb") == EINVAL)
    }

    /// A request written in pieces (as shells and stdio write long data: multiples of 4 KiB, then the
    /// rest) is one request; a write after it ran is refused; a request of whole 4 KiB pieces runs at close.
    @Test func aRequestWrittenInPiecesIsOneRequest() throws {
        let f = try VFSFixture()
        let message = String(repeating: "m", count: 5000)
        #expect(f.request(.checkpoint, message, pieces: [4096, 904]) == 0)
        #expect(try f.repo.checkpoints(of: f.repo.session(named: "v")).map(\.message) == [message])
        #expect(f.request(.checkpoint, String(repeating: "n", count: 8192), pieces: [4096, 4096]) == 0, "runs at close")
        #expect(f.request(.checkpoint, String(repeating: "o", count: 9000), pieces: [8192, 808]) == EINVAL)
        #expect(try f.read(.last).contains("at most 8192"))
        // A write of another size completes the request: what follows on the same open is refused.
        #expect(f.request(.checkpoint, "one two", pieces: [3, 4]) == EINVAL)
        #expect(try f.read(.last).contains("already carried one"))
        #expect(try f.repo.checkpoints(of: f.repo.session(named: "v")).map(\.message).suffix(2) == [String(repeating: "n", count: 8192), "one"])
    }

    /// Only the session's owner and root drive a session: another uid's requests, by file or xattr, are
    /// EACCES with a reason and change nothing; the request files are the owner's, 0644.
    @Test func onlyTheOwnerAndRootDriveTheSession() throws {
        let f = try VFSFixture()
        #expect(f.request(.checkpoint, "{\"message\":\"g\",\"name\":\"green\"}") == 0)
        let other = Caller(uid: 1000, gid: 1000)
        for (file, payload) in [(ControlFile.checkpoint, "x"), (.restore, "green"), (.fork, "theirs"), (.commit, "ship")] {
            #expect(f.request(file, payload, as: other) == EACCES, "\(file.name)")
            #expect(try f.read(.last, as: other).contains("only the owner of session v (uid 0) and root may \(file.name) in it"))
            #expect(throws: FSFailure.self) {
                try f.vfs.setxattr(Workspace.rootIno, name: "user.aether.\(file.name)", value: Array(payload.utf8), create: false, replace: false, caller: other)
            }
        }
        #expect(try f.repo.sessions().map(\.name) == ["v"])
        #expect(try f.repo.checkpoints(of: f.repo.session(named: "v")).count == 1)
        #expect(try f.repo.branches().isEmpty)
        let a = try f.vfs.getattr(ControlFile.restore.ino).attributes
        #expect(a.mode & 0o777 == 0o644 && a.uid == 0)
        #expect(f.request(.checkpoint, "mine") == 0, "root may")
    }

    /// `@`, `@green`, `nm@` and `@@x` once crashed the daemon or forked a session of another name.
    @Test(arguments: ["@", "@green", "nm@", "@@x", "a@", "@ "])
    func forkRequestsWithoutANameOnEachSideOfTheAtAreEINVAL(payload: String) throws {
        let f = try VFSFixture()
        #expect(f.request(.checkpoint, "{\"message\":\"g\",\"name\":\"green\"}") == 0)
        let before = try f.repo.sessions().map(\.name)
        #expect(f.request(.fork, payload) == EINVAL)
        #expect(try f.read(.last).contains("a name on each side"))
        #expect(try f.repo.sessions().map(\.name) == before, "nothing was created")
        #expect(f.request(.fork, "ok@green") == 0)
        #expect(try f.repo.sessions().map(\.name).contains("ok"))
    }

    /// `.aether/README` names every control file with an example, from the table the code uses; the
    /// project's README documents every one of them too.
    @Test func theReadmeInTheMountAndTheProjectsCoverEveryControlFile() throws {
        let f = try VFSFixture()
        let text = try f.read(.readme)
        let project = try String(contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("README.md").path, encoding: .utf8)
        for file in ControlFile.allCases {
            #expect(text.contains("\n\(file.name)") && text.contains(file.help.example), "\(file.name)")
            #expect(project.contains("`.aether/\(file.name)`"), "README.md does not document .aether/\(file.name)")
        }
    }

    /// Every request file takes its request as JSON too (what the CLI sends a mount): the JSON form of
    /// each request decodes back to the same request, and bad JSON is EINVAL with the reason.
    @Test func everyRequestHasOneJSONFormThatRoundTrips() throws {
        let requests: [SessionRequest] = [
            .checkpoint(CheckpointRequest(message: "m", name: "n", meta: ["k": "v"])), .checkpoint(CheckpointRequest(message: "only")),
            .restore(RestoreRequest(checkpoint: "green")), .fork(ForkRequest(name: "b", at: "green")), .fork(ForkRequest(name: "c")),
            .commit(CommitRequest(message: "ship", branch: "rel", meta: ["r": "ana"], allowEmpty: true)), .commit(CommitRequest(message: "x")),
            .adopt(ImportRequest(root: String(repeating: "ab", count: 32), message: "m", name: "in", meta: ["k": "v"])),
        ]
        for r in requests { #expect(try SessionRequest(verb: r.verb, payload: r.payload) == r, "\(r.payload)") }
        #expect(try SessionRequest(verb: "fork", payload: "b@green") == .fork(ForkRequest(name: "b", at: "green")))

        let f = try VFSFixture()
        let zeros = String(repeating: "0", count: 64)
        #expect(f.request(.checkpoint, "{\"message\":\"g\",\"name\":\"green\"}") == 0)
        #expect(f.request(.fork, "{\"name\":\"twin\",\"at\":\"green\"}") == 0)
        #expect(try f.read(.last).contains("\"session\":\"twin\""))
        #expect(f.request(.restore, "{\"checkpoint\":\"green\"}") == 0)
        for (file, payload, words) in [(ControlFile.restore, "{\"name\":\"green\"}", "unknown key \"name\""),
                                       (.restore, "{}", "needs \"checkpoint\""), (.fork, "{\"name\":7}", "\"name\" must be a string"),
                                       (.fork, "{\"name\":\"a b\"}", "session name"), (.commit, "{\"message\":\"m\",\"allow_empty\":\"yes\"}", "true or false"),
                                       (.checkpoint, "{\"message\":null}", "must not be null"), (.fork, "{\"name\":\"x\",\"at\":\"\"}", "\"at\""),
                                       (.import, "{\"root\":\"xyz\",\"message\":\"m\"}", "64 hex digits"), (.import, "{\"root\":\"\(zeros)\"}", "needs \"message\"")] {
            #expect(f.request(file, payload) == EINVAL, "\(payload)")
            #expect(try f.read(.last).contains(words), "\(payload)")
        }
        #expect(f.request(.import, "{\"root\":\"\(zeros)\",\"message\":\"m\"}") == ENOENT)
        #expect(try f.read(.last).contains("tree \(zeros) in the store"))
        #expect(try f.repo.sessions().map(\.name).sorted() == ["twin", "v"], "the refused requests made nothing")
        #expect(try f.repo.branches().isEmpty)
    }

    /// `.aether/restore` takes the CLI's own `SESSION@NAME`.
    @Test func restoreTakesSessionAtCheckpoint() throws {
        let f = try VFSFixture()
        #expect(f.request(.checkpoint, "{\"message\":\"g\",\"name\":\"green\"}") == 0)
        #expect(f.request(.restore, "v@green") == 0)
        #expect(f.request(.restore, "v@") == EINVAL)
        #expect(f.request(.restore, "v@green@x") == EINVAL)
        #expect(f.request(.restore, "ghost@green") == ENOENT)
    }

    /// Random payloads, built from the characters and fragments the parsers split on, sent to every
    /// request file: none may trap, each failure is an errno of the documented set with a reason in
    /// `last`, and a failed request changes nothing (no session, checkpoint or branch appears).
    @Test func fuzzedControlRequestsNeverTrapAndFailCleanly() throws {
        let f = try VFSFixture()
        #expect(f.request(.checkpoint, "{\"message\":\"g\",\"name\":\"green\"}") == 0)
        var rng = SeededGenerator(seed: 0xAE7_4E5)
        let pieces = ["@", "@@", "{", "}", "\"", ":", ",", "[", "]", "\\", "\n", "\t", " ", "message", "name", "meta", "branch",
                      "allow_empty", "true", "null", "1", "-1", "1e999", "green", "v", "main", "x", ".", "-", "é", "\u{FFFD}",
                      "{\"message\":", "\"m\"", "{\"meta\":{", "\u{0}", "\u{7}", String(repeating: "a", count: 101)]
        let allowed: Set<Int32> = [EINVAL, ENOENT, EEXIST, EAGAIN, EACCES, EPERM]
        var failures = 0
        for round in 0..<1500 {
            let file = [ControlFile.checkpoint, .restore, .fork, .commit][round % 4]
            var payload = ""
            for _ in 0..<Int.random(in: 0...8, using: &rng) { payload += pieces.randomElement(using: &rng)! }
            let state = { () throws -> ([String], Int, Int) in
                (try f.repo.sessions().map(\.name), try f.repo.checkpoints(of: f.repo.session(named: "v")).count, try f.repo.branches().count)
            }
            let before = try state()
            let code = f.request(file, payload)
            if code != 0 {
                failures += 1
                #expect(allowed.contains(code), "\(file.name) \(payload.debugDescription) -> errno \(code)")
                #expect(try f.read(.last).hasPrefix("error: \(file.name): "), "\(payload.debugDescription)")
                #expect(try state() == before, "a failed \(file.name) \(payload.debugDescription) changed the store")
            }
        }
        #expect(failures > 500, "the generator must reach the parsers' error paths")
    }
}

/// A small deterministic generator (SplitMix64), so a fuzz failure can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The snapshots-only file system without a kernel: a store's commits, read-only.
@Suite struct SnapshotFileSystemTests {
    @Test func aStoresCommitsReadBackAndRefuseEveryChange() throws {
        let f = try VFSFixture()
        let a = try f.vfs.mknod(parent: Workspace.rootIno, name: Array("a".utf8), mode: 0o100644, rdev: 0, caller: f.me)
        let h = try f.vfs.open(a.attributes.ino, writing: true, caller: f.me).handle
        _ = try Array("shipped".utf8).withUnsafeBytes { (b) throws(FSFailure) in try f.vfs.write(a.attributes.ino, handle: h, offset: 0, data: b, caller: f.me).count }
        try f.vfs.release(a.attributes.ino, handle: h)
        #expect(f.request(.commit, "ship") == 0)

        let fs = SnapshotFileSystem(snapshotsOf: f.repo)
        func names(_ ino: UInt64) throws -> [String] {
            var out: [String] = []
            try fs.readdir(ino, offset: 0, plus: true) { name, _, _ in out.append(String(decoding: name, as: UTF8.self)); return true }
            return out
        }
        #expect(try names(Workspace.rootIno).sorted() == [".", "..", "branches", "by-id", "by-time"])
        let branches = try fs.lookup(parent: Workspace.rootIno, name: Array("branches".utf8)).attributes.ino
        let main = try fs.lookup(parent: branches, name: Array("main".utf8)).attributes.ino
        #expect(try names(main).contains("latest"))
        let latest = try fs.lookup(parent: main, name: Array("latest".utf8))
        #expect(latest.attributes.kind == .symlink)
        let commit = try fs.lookup(parent: main, name: try fs.readlink(latest.attributes.ino)).attributes.ino
        let file = try fs.lookup(parent: commit, name: Array("a".utf8)).attributes
        #expect(file.size == 7)
        let opened = try fs.open(file.ino, writing: false, truncate: false, caller: f.me)
        #expect(try fs.read(file.ino, handle: opened.handle, offset: 0, count: 100) == Array("shipped".utf8))
        #expect(try fs.read(file.ino, handle: opened.handle, offset: 3, count: 2) == Array("pp".utf8))

        func erofs(_ body: () throws(FSFailure) -> Void) -> Bool {
            do { try body(); return false } catch { return error.code == EROFS }
        }
        #expect(erofs { () throws(FSFailure) in _ = try fs.open(file.ino, writing: true, truncate: false, caller: f.me) })
        #expect(erofs { () throws(FSFailure) in _ = try fs.mkdir(parent: commit, name: Array("d".utf8), mode: 0o755, caller: f.me) })
        #expect(erofs { () throws(FSFailure) in try fs.unlink(parent: commit, name: Array("a".utf8), caller: f.me) })
        #expect(erofs { () throws(FSFailure) in _ = try fs.setxattr(file.ino, name: "user.x", value: [1], create: false, replace: false, caller: f.me) })
        #expect(throws: FSFailure.self) { try fs.lookup(parent: commit, name: Array("missing".utf8)) }
        #expect(try fs.read(file.ino, handle: 0, offset: 0, count: 100) == Array("shipped".utf8), "nothing changed")
    }
}
