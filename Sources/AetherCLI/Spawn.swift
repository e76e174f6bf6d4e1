#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import AetherCore
import AetherStore

/// Starting other programs without Foundation.
enum Spawn {
    /// Starts this executable with `args` in a new session, output appended to `log`.
    static func detached(_ args: [String], log: String) throws(AetherError) -> pid_t {
        try spawn(path: "/proc/self/exe", args, log: log, setsid: true)
    }

    /// Runs a program from PATH and returns its exit status.
    static func wait(_ args: [String]) throws(AetherError) -> Int32 {
        let pid = try spawn(path: nil, args, log: nil, setsid: false)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    private static func spawn(path: String?, _ args: [String], log: String?, setsid: Bool) throws(AetherError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        if let log {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        if setsid { posix_spawnattr_setflags(&attr, Int16(0x80)) } // POSIX_SPAWN_SETSID
        let cargs = args.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc: Int32
        if let path {
            rc = posix_spawn(&pid, path, &actions, &attr, cargs, environ)
        } else {
            rc = posix_spawnp(&pid, args[0], &actions, &attr, cargs, environ)
        }
        if rc != 0 { throw .system(rc, "cannot start \(args[0]): \(String(cString: strerror(rc)))") }
        return pid
    }
}
