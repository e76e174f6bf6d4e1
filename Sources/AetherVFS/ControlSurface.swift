#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import AetherModel
import AetherCore

/// The files of `.aether/`, the control surface inside a mount.
///
/// Each write is one whole request (at most 64 KiB) and runs before the write returns; its failure
/// comes back as the write's errno and as text in `last`. Reads show a state taken when the file
/// was opened. Virtual inode numbers live above 2^62, far from the workspace's.
public enum ControlFile: UInt64, CaseIterable, Sendable {
    case checkpoint = 1, restore, status, log, last, fork, commit, `import`, propose, promote, readme, stats

    public static let directoryName = Workspace.controlDirectoryName
    public static let directoryIno: UInt64 = 1 << 62
    public static let maxPayload = 64 * 1024

    public var ino: UInt64 { ControlFile.directoryIno + rawValue }
    public var name: String { self == .readme ? "README" : "\(self)" }

    /// What the file does, and one example: `.aether/README` is made of these, so it never drifts.
    public var help: (what: String, example: String) {
        switch self {
        case .checkpoint: ("write a message (or JSON: message, name, meta) to save the tree as a checkpoint; read: the last one",
                           #"echo '{"message":"tests pass","name":"green"}' > .aether/checkpoint"#)
        case .restore: ("write a checkpoint's name or id: the tree becomes that checkpoint's", "echo green > .aether/restore")
        case .fork: ("write NAME or NAME@CHECKPOINT: a new session from this one's state", "echo try-b > .aether/fork")
        case .commit: (#"write a message (or JSON: message, branch, meta, allow_empty; or {"proposal": ID}) to commit to a branch"#,
                       #"echo "ship it" > .aether/commit"#)
        case .propose: ("write a message (or JSON: message, title, branch, meta) to freeze the state and put it up for review (approving is aetherfs review, outside)",
                        #"echo '{"message":"fix","meta":{"ticket":"T-1"}}' > .aether/propose"#)
        case .promote: ("write a message (or JSON as for commit): commit this fork and retire its sibling forks", #"echo "b wins" > .aether/promote"#)
        case .import: ("write a tree id in the store (what aetherfs import --into sends): it becomes a checkpoint and the tree",
                       "aetherfs import release.tar.zst --into SESSION")
        case .status: ("read: JSON of the session, its head, the paths changed since it, the store's usage, the bytes the session references, alone and shared", "cat .aether/status")
        case .log: ("read: the session's checkpoints, newest first", "cat .aether/log")
        case .last: ("read: the JSON result, or the error line, of your last request", "cat .aether/last")
        case .readme: ("read: this text", "cat .aether/README")
        case .stats: ("read: JSON of what this mount's daemon did: requests per operation (count, errors, latency percentiles), bytes read and written, actions, cache hits, objects read and written",
                      "cat .aether/stats")
        }
    }

    /// `.aether/README`: every control file with what it does and an example.
    public static var readmeText: String {
        var lines = ["AetherFS control surface of this mount. Each write is one request; its result (or error) is in last.", ""]
        for f in allCases {
            lines.append("\(f.name)\(f.writable ? "" : " (read-only)"): \(f.help.what)")
            lines.append("    \(f.help.example)")
        }
        lines += ["checkpoints/NAME/ (read-only): the tree of each checkpoint", "    ls .aether/checkpoints/green/",
                  "commits/BRANCH/ID/, commits/BRANCH/latest (read-only): the tree of each commit", "    ls .aether/commits/main/latest/",
                  "", "The same requests as extended attributes on the root: setfattr -n user.aether.checkpoint -v MSG .", ""]
        return lines.joined(separator: "\n")
    }

    public init?(ino: UInt64) {
        guard ino > ControlFile.directoryIno, let c = ControlFile(rawValue: ino - ControlFile.directoryIno) else { return nil }
        self = c
    }

    public init?(name: [UInt8]) {
        guard let c = ControlFile.allCases.first(where: { Array($0.name.utf8) == name }) else { return nil }
        self = c
    }

    public static func isVirtual(_ ino: UInt64) -> Bool { ino >= directoryIno && ino < SnapshotViews.topBit }

    /// The block size a node reports: stdio and Python buffer that much before they write, and write
    /// longer data in multiples of it, so a control file's is larger than any request (a request is
    /// one write). Files and directories report 4 KiB.
    public static func blockSize(_ ino: UInt64) -> UInt32 { ControlFile(ino: ino) != nil ? 128 * 1024 : 4096 }

    var writable: Bool { [.checkpoint, .restore, .fork, .commit, .import, .propose, .promote].contains(self) }
}

/// The session's usage line for `.aether/status`: computed at the first read, then again in the
/// background when a read finds it older than `stale` seconds (a walk of every root may take longer
/// than a status read should hold the mount).
final class UsageCache: Sendable {
    static let stale: Double = 30
    private struct State: Sendable {
        var line: StatusInfo.Usage?
        var at: Double = 0
        var refreshing = false
    }
    private let state = Mutex(State())

    func line(_ compute: @escaping @Sendable () -> StatusInfo.Usage?) -> StatusInfo.Usage? {
        let (known, refresh) = state.withLock { s -> (StatusInfo.Usage?, Bool) in
            guard s.line != nil, secondsNow() - s.at > UsageCache.stale, !s.refreshing else { return (s.line, false) }
            s.refreshing = true
            return (s.line, true)
        }
        guard let known else {
            let fresh = compute()
            state.withLock { $0.line = fresh; $0.at = secondsNow() }
            return fresh
        }
        if refresh {
            DispatchQueue.global(qos: .utility).async { [self] in
                let fresh = compute()
                state.withLock { $0.line = fresh ?? $0.line; $0.at = secondsNow(); $0.refreshing = false }
            }
        }
        return known
    }
}

extension SessionFileSystem {
    func controlLookup(parent: UInt64, name: [UInt8]) throws(FSFailure) -> EntryReply? {
        if parent == Workspace.rootIno && name == ControlFile.directoryName {
            return EntryReply(attributes: controlAttributes(ControlFile.directoryIno)!, entryTimeout: options.cacheTimeout, attrTimeout: 0)
        }
        guard parent == ControlFile.directoryIno else { return nil }
        if let view = lock.withLock({ viewListing(name) }) {
            return EntryReply(attributes: view.attributes, entryTimeout: 0, attrTimeout: 0)
        }
        guard let file = ControlFile(name: name) else { throw FSFailure(.notFound("no such control file")) }
        return EntryReply(attributes: controlAttributes(file.ino)!, entryTimeout: options.cacheTimeout, attrTimeout: 0)
    }

    /// `.aether/checkpoints` and `.aether/commits`: the session's snapshot views.
    func viewListing(_ name: [UInt8]) -> SnapshotViews.View? {
        switch String(decoding: name, as: UTF8.self) {
        case "checkpoints": views.listingView(.checkpoints, ino: SnapshotViews.ino(name))
        case "commits": views.listingView(.commitBranches, ino: SnapshotViews.ino(name))
        default: nil
        }
    }

    func controlAttributes(_ ino: UInt64) -> Attributes? {
        guard ControlFile.isVirtual(ino) else { return nil }
        let t = nanosecondsNow()
        if ino == ControlFile.directoryIno {
            return Attributes(ino: ino, kind: .directory, mode: 0o555, nlink: 2, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t, rdev: 0)
        }
        guard let file = ControlFile(ino: ino) else { return nil }
        // Only the session's owner (and root) may drive it: the request files are theirs alone to write,
        // but those of the actions the policy lets others do (sessions.others_may), which anyone may.
        let others = file.writable && (try? workspace.repo.policy())?.sessions.othersMay.contains(file.name) == true
        return Attributes(ino: ino, kind: .file, mode: file.writable ? (others ? 0o666 : 0o644) : 0o444, nlink: 1, uid: sessionOwner, gid: 0,
                          size: 0, atime: t, mtime: t, ctime: t, rdev: 0)
    }

    /// What a read of the control file shows, taken at open. Caller holds the lock.
    func controlContent(_ file: ControlFile, caller: Caller) -> [UInt8] {
        switch file {
        case .checkpoint:
            let head = workspace.session.head.flatMap { try? workspace.repo.metadata.snapshot(id: $0) }
            return Array((head.map { JSONText.encode(SnapshotInfo($0)) } ?? "null").utf8) + [10]
        case .restore, .fork, .commit, .import, .propose, .promote: return []
        case .readme: return Array(ControlFile.readmeText.utf8)
        case .stats: return Array(JSONText.encode(RequestStats.shared.snapshot(content: workspace.repo.content)).utf8) + [10]
        case .status: return Array(JSONText.encode(status()).utf8) + [10]
        case .log: return Array(logText().utf8)
        case .last: return Array((lastResults[caller.uid] ?? "").utf8)
        }
    }

    /// A write to a request file. A request is what one open writes (at most 64 KiB), run before the
    /// write that completes it returns: shells and stdio write long data in pieces whose sizes are
    /// multiples of 4 KiB (bash's printf 8 KiB, its echo 16 KiB), so such a write is kept and the
    /// request runs with the next write of another size, or at close (its error then comes from
    /// close). A write after the request ran is refused. The corresponding FUSE operation is `write`.
    func controlWrite(_ file: ControlFile, handle: UInt64, data: UnsafeRawBufferPointer, caller: Caller) throws(FSFailure) -> Int {
        guard file.writable else { throw FSFailure(.badHandle("\(file.name) is read-only")) }
        enum Next { case keep, run([UInt8]), refuse(String) }
        let next = lock.withLock { () -> Next in
            guard case .control(var h)? = handles[handle] else { return .refuse("the file is not open for a request") }
            defer { handles[handle] = .control(h) }
            if h.done { return .refuse("a request is what one open writes, and this open already carried one") }
            h.pending += UnsafeRawBufferPointer(data)
            if h.pending.count > ControlFile.maxPayload {
                h.done = true
                return .refuse("the request is more than \(ControlFile.maxPayload) bytes; control requests are at most \(ControlFile.maxPayload)")
            }
            if !data.isEmpty && data.count % 4096 == 0 { return .keep }
            h.done = true
            return .run(h.pending)
        }
        switch next {
        case .keep: return data.count
        case .refuse(let why):
            lock.withLock { lastResults[caller.uid] = "error: \(file.name): invalid request: \(why) (EINVAL)\n" }
            throw FSFailure(.invalid(why))
        case .run(let payload):
            try perform(file, payload: payload, caller: caller)
            return data.count
        }
    }

    /// The close of a request file: runs a request still kept (see `controlWrite`); a file opened for
    /// writing and closed without a request fails with EINVAL. Every close of a descriptor sends a
    /// flush, also the shell's close of the one it opened before it writes through its dup (`echo x >
    /// f`), so an empty flush leaves the open file free to carry its request. The corresponding FUSE
    /// operation is `flush`.
    func controlFlush(_ file: ControlFile, handle: UInt64, caller: Caller) throws(FSFailure) {
        let payload = lock.withLock { () -> [UInt8]? in
            guard case .control(var h)? = handles[handle], h.writing, !h.done else { return nil }
            if h.pending.isEmpty {
                lastResults[caller.uid] = "error: \(file.name): invalid request: the request is empty (EINVAL)\n"
            } else {
                h.done = true
                handles[handle] = .control(h)
            }
            return h.pending
        }
        guard let payload else { return }
        if payload.isEmpty { throw FSFailure(.invalid("empty control request")) }
        try perform(file, payload: payload, caller: caller)
    }

    /// Runs one control request (from a control file or an xattr on the root), records its result or
    /// error in `last` for the caller, and invalidates what the kernel must forget.
    ///
    /// From an xattr on the root, the kernel holds the root's inode lock until we reply, and invalidating
    /// a name in the root takes that lock: those invalidations (`deferRoot`) are returned, for the
    /// adapter to send right after its reply.
    @discardableResult
    func perform(_ action: ControlFile, payload: [UInt8], caller: Caller, deferRoot: Bool = false) throws(FSFailure) -> [Invalidation] {
        var invalidations: [Invalidation] = []
        flushKernel()
        let result: Result<String, AetherError> = lock.withLock {
            waitUntilThawed()
            do throws(AetherError) {
                let request = try SessionRequest(verb: action.name, payload: try requestText(payload))
                let done = try workspace.perform(request, caller: caller.uid)
                invalidations = done.invalidations
                return .success(done.answer.json)
            } catch {
                return .failure(error)
            }
        }
        var later: [Invalidation] = []
        if deferRoot {
            // Names in the root, and paths walked from it, need the root's lock.
            let needsRoot: (Invalidation) -> Bool = {
                switch $0 {
                case .entry(Workspace.rootIno, _), .resize: true
                default: false
                }
            }
            later = invalidations.filter(needsRoot)
            invalidations.removeAll(where: needsRoot)
        }
        send(invalidations)
        switch result {
        case .success(let json):
            RequestStats.shared.action(action.name)
            lock.withLock { lastResults[caller.uid] = json + "\n" }
            return later
        case .failure(let error):
            let failure = FSFailure(error)
            lock.withLock { lastResults[caller.uid] = "error: \(action.name): \(error.description) (\(errnoName(failure.code)))\n" }
            throw failure
        }
    }

    /// The payload as text: at most 64 KiB of UTF-8 without control characters but tab and newline.
    func requestText(_ data: [UInt8]) throws(AetherError) -> String {
        guard data.count <= ControlFile.maxPayload else {
            throw .invalid("the request is \(data.count) bytes; control requests are at most \(ControlFile.maxPayload)")
        }
        guard let text = String(validating: data, as: UTF8.self),
              !text.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\n" && $0 != "\t" && $0 != "\r" }) else {
            throw .invalid("the request is not text")
        }
        return text
    }

    func status() -> StatusInfo {
        let s = workspace.session
        let head = s.head.flatMap { try? workspace.repo.metadata.snapshot(id: $0) }
        let usage = (try? workspace.repo.objects.usage()) ?? (objects: 0, bytes: 0)
        let repo = workspace.repo, name = s.name
        let line = usageCache.line {
            (try? repo.usage(of: [name], storeTotals: false).sessions.first).map {
                StatusInfo.Usage(referenced: $0.referenced, exclusive: $0.exclusive, shared: $0.shared, asOf: isoTime(secondsNow()))
            }
        }
        return StatusInfo(session: s.name, sessionID: s.id, mountpoint: mountpoint, base: head?.sid, head: head?.name,
                          dirtyPaths: workspace.dirtyCount,
                          store: .init(path: repo.path, objects: usage.objects, bytes: usage.bytes,
                                       backend: repo.objectsConfig?.url ?? "local", requests: repo.objects.blobs.requests),
                          usage: line)
    }

    func logText() -> String {
        let checkpoints = (try? workspace.repo.checkpoints(of: workspace.session)) ?? []
        return checkpoints.reversed().map { formatLogLine($0) }.joined()
    }
}

