#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

extension SessionAccess {
    /// The CLI's way to a session: as the calling user, and SIGINT stops work on an unmounted one.
    static func act(_ repo: Repository, session name: String, _ request: SessionRequest) throws(AetherError) -> SessionAnswer {
        try act(repo, session: name, request, caller: getuid()) { ws, verb, body throws(AetherError) in
            try Interruption.during(ws, verb: verb, body)
        }
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
