#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore
import CLinux

/// How a client (the CLI, the service surface, the MCP server) reaches a session: through its mount's
/// control surface when a daemon serves it, otherwise on the store directly under the session's lock.
/// Either way `Workspace.perform` runs the request, for `caller`.
public enum SessionAccess {
    /// Sends one request to a mounted session's control file as `caller` (the daemon hears the
    /// request's uid: for another uid than this process's, this thread's file-system ids are set to
    /// that uid's for the while, which only root may); returns `.aether/last`'s answer.
    static func viaMount(_ mountpoint: String, file: String, payload: String, caller: UInt32 = getuid()) throws(AetherError) -> String {
        let path = mountpoint + "/.aether/" + file
        let (opened, n, code, last) = try asCaller(caller) { () -> (Bool, Int, Int32, String) in
            let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
            if fd < 0 { return (false, -1, errno, "") }
            let bytes = Array(payload.utf8)
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            let code = errno
            close(fd)
            return (true, n, code, (try? FileIO.readFile(mountpoint + "/.aether/last")).map { String(decoding: $0, as: UTF8.self) } ?? "")
        }
        if !opened { throw .system(code, "open \(path): \(String(cString: strerror(code)))") }
        if n < 0 {
            let line = last.hasPrefix("error: ") ? String(last.dropFirst(7)).trimmingWhitespace() : String(cString: strerror(code))
            throw .system(code, line)
        }
        return last.trimmingWhitespace()
    }

    /// Runs a request on a session for `caller`, after checking its form: through its mount's control
    /// file when a daemon serves it (its JSON answer decoded), else on the store under the session's
    /// lock. Either way `Workspace.perform` runs it. `around` runs the work on an unmounted session's workspace (the CLI's lets SIGINT stop it).
    public static func act(_ repo: Repository, session name: String, _ request: SessionRequest, caller: UInt32,
                           around: (Workspace, String, () throws(AetherError) -> SessionAnswer) throws(AetherError) -> SessionAnswer
                               = { _, _, body throws(AetherError) in try body() }) throws(AetherError) -> SessionAnswer {
        try request.validate()
        let s = try repo.session(named: name)
        if let mount = repo.mountpoint(of: s) {
            return try request.answer(from: try viaMount(mount, file: request.verb, payload: request.payload, caller: caller))
        }
        return try SessionAccess.direct(repo, s) { (ws) throws(AetherError) in
            try around(ws, request.verb) { () throws(AetherError) in try ws.perform(request, caller: caller).answer }
        }
    }

    /// Runs `body` with this thread's file-system uid and gid those of `uid` (its primary group), when
    /// it is not this process's uid: root only.
    static func asCaller<T>(_ uid: UInt32, _ body: () -> T) throws(AetherError) -> T {
        guard uid != getuid() else { return body() }
        guard getuid() == 0 else { throw .accessDenied("this process (uid \(getuid())) acts for uid \(uid) only as root") }
        let gid = getpwuid(uid).map { $0.pointee.pw_gid } ?? uid
        let oldGid = setfsgid(gid), oldUid = setfsuid(uid)
        defer { _ = setfsuid(UInt32(bitPattern: oldUid)); _ = setfsgid(UInt32(bitPattern: oldGid)) }
        return body()
    }

    /// A snapshot's root, or a live session's current root (asked of its daemon when it is mounted):
    /// the sides of a diff, what an export writes.
    public static func root(_ repo: Repository, _ ref: String) throws(AetherError) -> ObjectID {
        do {
            return try repo.resolveSnapshot(ref, session: nil).root
        } catch {
            guard case .notFound = error, let s = try? repo.session(named: ref) else { throw error }
            if let mount = repo.mountpoint(of: s) {
                guard let value = FileIO.xattr(mount, "user.aether.root"), let id = ObjectID(hex: String(decoding: value, as: UTF8.self)) else {
                    throw .system(errno, "cannot read the live state of session \(ref) at \(mount)")
                }
                return id
            }
            return try SessionAccess.direct(repo, s) { (ws) throws(AetherError) in try ws.currentRoot() }
        }
    }

    /// Parses repeated `--meta key=value` options.
    public static func meta(_ items: [String]) throws(AetherError) -> [String: String] {
        var out: [String: String] = [:]
        for item in items {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else { throw .invalid("--meta takes key=value, got \"\(item)\"") }
            out[String(item[..<eq])] = String(item[item.index(after: eq)...])
        }
        return out
    }

    /// Runs `body` on the session's workspace, opened directly on the store under its lock.
    public static func direct<T>(_ repo: Repository, _ session: SessionRecord, _ body: (Workspace) throws(AetherError) -> T) throws(AetherError) -> T {
        let lock = try SessionLock(repository: repo, session: session)
        defer { lock.release() }
        let ws = try Workspace(repo: repo, session: session)
        return try body(ws)
    }
}

