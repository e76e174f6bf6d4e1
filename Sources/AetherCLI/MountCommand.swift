#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS
import AetherFUSE
import Logging

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a session at a directory (creating the store and the session when absent).",
        discussion: "Without --session the session is named after the directory. Returns once the mount is up; the filesystem runs in the background until `aetherfs unmount DIR`. A dead mount of the directory (its daemon killed) is detached first.\n\nExamples:\n  aetherfs mount ~/work\n  aetherfs mount --session agent-7 --allow-other /mnt/a7\n  aetherfs mount --snapshots /mnt/commits")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "An existing empty directory to mount at.")
    var directory: String

    @Option(name: .long, help: "The session to mount; created when it does not exist.", completion: Completions.sessions)
    var session: String?

    @Flag(name: .long, help: "Serve in the foreground (for debugging); logs go to standard error.")
    var foreground = false

    @Flag(name: .long, help: "Let other users use the mount (needs user_allow_other in /etc/fuse.conf for non-root).")
    var allowOther = false

    @Flag(name: .long, help: "List .aether in the mount's root directory.")
    var showControl = false

    @Flag(name: .long, help: "Mount the store's commits read-only (branches/, by-id/, by-time/) instead of a session.")
    var snapshots = false

    @Flag(name: .long, help: "Mount over a directory that is not empty (its files are hidden until the unmount).")
    var nonempty = false

    @Flag(name: .long, help: "Let device nodes in the mount be opened (root only; mounts are nodev by default).")
    var dev = false

    @Flag(name: .long, help: "Let setuid and setgid bits in the mount take effect (root only; mounts are nosuid by default).")
    var suid = false

    @Flag(name: .long, help: "Let the kernel cache writes and send them later (faster small writes; a checkpoint taken while a program writes without fsync may then hold some of its writes and not earlier ones).")
    var writebackCache = false

    func run() throws {
        // A mount whose daemon died answers ENOTCONN: detach it first (an aetherfs mount only).
        MountTable.detachIfDead(absolutePath(directory))
        guard let real = realpath(directory, nil) else {
            printError("cannot mount at \(directory): \(String(cString: strerror(errno)))")
            throw ExitCode(1)
        }
        let mountpoint = String(cString: real)
        free(real)
        var st = stat()
        guard stat(mountpoint, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            printError("cannot mount at \(directory): not a directory")
            throw ExitCode(1)
        }
        if MountTable.isMounted(mountpoint) {
            printError("\(mountpoint) is already a mount point")
            throw ExitCode(1)
        }
        if (dev || suid) && getuid() != 0 {
            printError("--dev and --suid are root's (as mount(8)'s dev and suid options)", code: "permission_denied")
            throw ExitCode(1)
        }
        if !nonempty && !FileIO.entries(of: mountpoint).isEmpty {
            printError("\(mountpoint) is not empty: its files would be hidden by the mount (use --nonempty to mount over them)")
            throw ExitCode(1)
        }
        let repo = try global.open(create: true)
        if snapshots {
            if session != nil { throw ValidationError("--snapshots mounts no session; drop --session") }
            if foreground { return try serveSnapshots(repo: repo, mountpoint: mountpoint) }
            try startDaemon(repo: repo, arguments: ["--snapshots"], log: repo.path + "/snapshots.log", mountpoint: mountpoint)
            say(global.json ? JSONText.encode(["snapshots": mountpoint, "store": repo.path])
                            : "mounted the commits of \(repo.path) read-only at \(mountpoint)")
            return
        }
        let name = session ?? MountCommand.sessionName(for: mountpoint)
        let record = try fail { () throws(AetherError) -> SessionRecord in
            if let s = try? repo.session(named: name) { return s }
            return try repo.createSession(name: name, owner: getuid())
        }
        if record.isRetired {
            printError("session \(name) is retired: it is not mounted (read its checkpoints with aetherfs export or mount --snapshots, or fork it)", code: "not_permitted")
            throw ExitCode(1)
        }
        if let where_ = repo.mountpoint(of: record) {
            printError("session \(name) is already mounted at \(where_)")
            throw ExitCode(1)
        }
        if foreground {
            try serve(repo: repo, session: record, mountpoint: mountpoint)
        } else {
            try startDaemon(repo: repo, arguments: ["--session", record.name], log: repo.path + "/sessions/\(record.id).log", mountpoint: mountpoint)
            if global.json {
                say(JSONText.encode(["session": name, "mountpoint": mountpoint, "store": repo.path]))
            } else {
                say("mounted session \(name) at \(mountpoint) (store \(repo.path))")
            }
        }
    }

    /// A session name from a directory's last component.
    static func sessionName(for path: String) -> String {
        let base = path.split(separator: "/").last.map(String.init) ?? "default"
        var name = String(base.unicodeScalars.map { c -> Character in
            (c.properties.isAlphabetic && c.isASCII) || ("0"..."9").contains(c) || c == "_" || c == "-" || c == "." ? Character(c) : "-"
        })
        while name.hasPrefix(".") || name.hasPrefix("-") { name.removeFirst() }
        return name.isEmpty ? "default" : String(name.prefix(100))
    }

    private func serve(repo: Repository, session: SessionRecord, mountpoint: String) throws {
        let logger = Logger(label: "aetherfs.mount")
        // A daemon must not keep the directory it was started from busy (it may be another mount).
        _ = chdir("/")
        try fail { () throws(AetherError) in
            let lock = try SessionLock(repository: repo, session: session)
            defer { lock.release() }
            let workspace = try Workspace(repo: repo, session: session)
            var options = MountOptions()
            options.showControl = showControl
            options.writebackCache = writebackCache
            let vfs = SessionFileSystem(workspace: workspace, mountpoint: mountpoint, options: options, logger: logger)
            let server = FuseServer(vfs: vfs, mountpoint: mountpoint, allowOther: allowOther,
                                    extraOptions: (dev ? ["dev"] : []) + (suid ? ["suid"] : []), logger: logger)
            try server.run {
                lock.mounted(at: mountpoint)
                logger.notice("serving", metadata: ["session": "\(session.name)", "mountpoint": "\(mountpoint)"])
            }
        }
    }

    private func serveSnapshots(repo: Repository, mountpoint: String) throws {
        let logger = Logger(label: "aetherfs.snapshots")
        _ = chdir("/")
        try fail { () throws(AetherError) in
            let vfs = SnapshotFileSystem(snapshotsOf: repo, logger: logger)
            let server = FuseServer(vfs: vfs, mountpoint: mountpoint, allowOther: allowOther, readOnly: true, logger: logger)
            try server.run { logger.notice("serving snapshots", metadata: ["mountpoint": "\(mountpoint)"]) }
        }
    }

    /// Starts `aetherfs mount --foreground` in a new session and waits until the mount is up.
    private func startDaemon(repo: Repository, arguments: [String], log: String, mountpoint: String) throws {
        // The directory was checked here; the daemon must not look again (the mount may be up by then).
        var args = ["aetherfs", "mount", "--foreground", "--nonempty", "--store", repo.path] + arguments
        if allowOther { args.append("--allow-other") }
        if showControl { args.append("--show-control") }
        if writebackCache { args.append("--writeback-cache") }
        if dev { args.append("--dev") }
        if suid { args.append("--suid") }
        args.append(mountpoint)
        // libfuse's worker threads would each get a malloc arena of their own (up to 8 per core),
        // holding freed memory apart; two keep the daemon's footprint near what it uses.
        setenv("MALLOC_ARENA_MAX", "2", 0)
        let pid = try fail { () throws(AetherError) in try Spawn.detached(args, log: log) }
        let deadline = nanosecondsNow() + 30_000_000_000
        while nanosecondsNow() < deadline {
            if MountTable.isMounted(mountpoint, type: "fuse.aetherfs") { return }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let text = (try? FileIO.readFile(log)).map { String(decoding: $0, as: UTF8.self) } ?? ""
                let lastLine = text.split(separator: "\n").last(where: { $0.contains("error") }) ?? text.split(separator: "\n").last ?? "see \(log)"
                printError("the filesystem did not start: \(lastLine)")
                throw ExitCode(1)
            }
            usleep(20_000)
        }
        kill(pid, SIGTERM)
        printError("the mount did not come up within 30 s (log: \(log))")
        throw ExitCode(1)
    }
}
