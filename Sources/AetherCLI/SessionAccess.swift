#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore
import AetherVFS
import ArgumentParser

/// How the CLI reaches a session: through its mount's control surface when a daemon serves it,
/// otherwise on the store directly under the session's lock.
enum SessionAccess {
    /// Sends one request to a mounted session's control file; returns `.aether/last`'s answer.
    static func viaMount(_ mountpoint: String, file: String, payload: String) throws(AetherError) -> String {
        let path = mountpoint + "/.aether/" + file
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { throw .system(errno, "open \(path): \(String(cString: strerror(errno)))") }
        let bytes = Array(payload.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let code = errno
        close(fd)
        let last = (try? FileIO.readFile(mountpoint + "/.aether/last")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        if n < 0 {
            let line = last.hasPrefix("error: ") ? String(last.dropFirst(7)).trimmingWhitespace() : String(cString: strerror(code))
            throw .system(code, line)
        }
        return last.trimmingWhitespace()
    }

    /// Runs a request on a session for the calling user, after checking its form: through its mount's
    /// control file when a daemon serves it (its JSON answer decoded), else on the store under the
    /// session's lock. Either way `Workspace.perform` runs it.
    static func act(_ repo: Repository, session name: String, _ request: SessionRequest) throws(AetherError) -> SessionAnswer {
        try request.validate()
        let s = try repo.session(named: name)
        if let mount = repo.mountpoint(of: s) {
            return try request.answer(from: try viaMount(mount, file: request.verb, payload: request.payload))
        }
        return try SessionAccess.direct(repo, s) { (ws) throws(AetherError) in
            try Interruption.during(ws, verb: request.verb) { () throws(AetherError) in try ws.perform(request, caller: getuid()).answer }
        }
    }

    /// A snapshot's root, or a live session's current root (asked of its daemon when it is mounted):
    /// the sides of a diff, what an export writes.
    static func root(_ repo: Repository, _ ref: String) throws(AetherError) -> ObjectID {
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
    static func meta(_ items: [String]) throws(AetherError) -> [String: String] {
        var out: [String: String] = [:]
        for item in items {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else { throw .invalid("--meta takes key=value, got \"\(item)\"") }
            out[String(item[..<eq])] = String(item[item.index(after: eq)...])
        }
        return out
    }

    /// Runs `body` on the session's workspace, opened directly on the store under its lock.
    static func direct<T>(_ repo: Repository, _ session: SessionRecord, _ body: (Workspace) throws(AetherError) -> T) throws(AetherError) -> T {
        let lock = try SessionLock(repository: repo, session: session)
        defer { lock.release() }
        let ws = try Workspace(repo: repo, session: session)
        return try body(ws)
    }
}

/// SIGINT during a checkpoint, fork or commit on an unmounted session: the work stops at the next
/// 4 MiB it reads and changes nothing (`.cancelled`); on a terminal, progress shows meanwhile.
enum Interruption {
    nonisolated(unsafe) static var requested: sig_atomic_t = 0

    static func during<T>(_ ws: Workspace, verb: String, _ body: () throws(AetherError) -> T) throws(AetherError) -> T {
        requested = 0
        let previous = signal(SIGINT) { _ in Interruption.requested = 1 }
        // A parent may have blocked SIGINT (test runners do), and the mask is inherited.
        var set = sigset_t(), old = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, &old)
        defer {
            pthread_sigmask(SIG_SETMASK, &old, nil)
            signal(SIGINT, previous)
            ws.progress = nil
            clearProgress()
        }
        var shown = UInt64.max
        ws.progress = { (done, total) throws(AetherError) in
            if Interruption.requested != 0 { throw .cancelled("\(verb) interrupted; nothing changed") }
            let mib = done >> 20
            if mib != shown { shown = mib; printProgress("\(verb): \(mib) of \(total >> 20) MiB cut into the store") }
        }
        return try body()
    }
}
