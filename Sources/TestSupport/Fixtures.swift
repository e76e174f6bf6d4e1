import Foundation

/// A temporary directory removed by `remove()`.
public final class TempDir: @unchecked Sendable {
    public let path: String

    public init(_ label: String = "aetherfs-test") {
        var template = Array("/tmp/\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: made!)
    }

    public func remove() { _ = try? FileManager.default.removeItem(atPath: path) }
}

/// The result of a command.
public struct Ran: Sendable, CustomStringConvertible {
    public var status: Int32
    public var out: String
    public var err: String
    public var description: String { "status \(status)\n--- stdout\n\(out)\n--- stderr\n\(err)" }
}

/// Runs a command with a time limit (killed after `timeout` seconds), output captured in files.
///
/// Uses posix_spawn and a blocking waitpid: Foundation's Process can miss a child's exit when waited
/// on from Swift Testing's threads, which hangs the test run.
public func run(_ args: [String], cwd: String? = nil, env: [String: String] = [:], timeout: Int = 300) -> Ran {
    let dir = TempDir("aetherfs-run")
    defer { dir.remove() }
    let outPath = dir.path + "/out", errPath = dir.path + "/err"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    let argv = (["timeout", "-k", "5", String(timeout)] + (cwd.map { ["env", "-C", $0] } ?? []) + args).map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, "/usr/bin/timeout", &actions, nil, argv, envp)
    guard rc == 0 else { return Ran(status: -1, out: "", err: "cannot run \(args): \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return Ran(status: code, out: out, err: err)
}

/// Runs a bash script with `set -euo pipefail`.
public func sh(_ script: String, cwd: String? = nil, env: [String: String] = [:], timeout: Int = 300) -> Ran {
    // `has` is grep -q that reads all its input: with pipefail, grep -q closing early can fail the writer.
    run(["bash", "-c", "set -Eeuo pipefail\ntrap 'echo \"failed at line $LINENO${FUNCNAME:+ in $FUNCNAME, called at line ${BASH_LINENO[0]}}: $BASH_COMMAND\" >&2' ERR\nhas() { grep \"$@\" > /dev/null; }\n" + script],
        cwd: cwd, env: env, timeout: timeout)
}

/// Where the mount tests stand.
public enum FuseSupport {
    /// Whether this machine can mount FUSE file systems.
    public static var available: Bool { FileManager.default.fileExists(atPath: "/dev/fuse") }
    /// CI sets AETHERFS_REQUIRE_FUSE=1 so that a skipped mount test fails.
    public static var required: Bool { ProcessInfo.processInfo.environment["AETHERFS_REQUIRE_FUSE"] == "1" }
}

/// The built `aetherfs` executable, found beside the test bundle.
public let aetherfsExecutable: String = {
    var dir = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("aetherfs").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return "aetherfs"
}()

/// A session mounted by the real `aetherfs` executable in a temp dir of its own. Call `close()` in a
/// `defer`: it unmounts (lazily if it must) and removes the directory.
public final class MountedSession: @unchecked Sendable {
    public let dir: TempDir
    public let store: String
    public let mountpoint: String
    public let session: String
    public let options: [String]
    public private(set) var mounted = false

    public init(session: String = "s", store: String? = nil, options: [String] = []) throws {
        self.options = options
        dir = TempDir("aetherfs-mount")
        self.store = store ?? dir.path + "/store"
        mountpoint = dir.path + "/mnt"
        self.session = session
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        chmod(dir.path, 0o755)
        if store == nil && TestStores.shared { try TestStores.makeShared(at: self.store) }
        try mount()
    }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Mounts (again) at the same place.
    public func mount() throws {
        let r = cli(["mount", "--session", session] + options + [mountpoint])
        guard r.status == 0 else { throw Failure(description: "mount failed: \(r)") }
        mounted = true
    }

    /// Runs the CLI on this fixture's store.
    public func cli(_ args: [String], timeout: Int = 300) -> Ran {
        run([aetherfsExecutable] + args, env: ["AETHERFS_STORE": store], timeout: timeout)
    }

    /// Runs a bash script in the mount point; `$M` is the mount point, `$S` the store, `$A` the CLI,
    /// `$T` the fixture's own temp dir (outside the mount).
    public func sh(_ script: String, timeout: Int = 300) -> Ran {
        TestSupport.sh(script, cwd: mountpoint, env: ["M": mountpoint, "S": store, "A": aetherfsExecutable,
                                                      "AETHERFS_STORE": store, "T": dir.path], timeout: timeout)
    }

    /// The pid of the process serving the mount (its lease, as `session show --json` prints it).
    public var daemonPID: Int32? {
        let r = cli(["session", "show", session, "--json"])
        guard r.status == 0, let data = r.out.data(using: .utf8),
              let info = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              info["mountpoint"] as? String == mountpoint else { return nil }
        return (info["pid"] as? NSNumber).map { $0.int32Value }
    }

    public func unmount() {
        guard mounted else { return }
        let r = cli(["unmount", mountpoint], timeout: 60)
        if r.status != 0 { forceUnmount() }
        mounted = false
    }

    /// Kills the daemon with SIGKILL and detaches the dead mount.
    public func kill9() {
        if let pid = daemonPID { kill(pid, SIGKILL) }
        usleep(200_000)
        forceUnmount()
        mounted = false
    }

    private func forceUnmount() {
        if let pid = daemonPID { kill(pid, SIGKILL) }
        if isMounted {
            _ = run(["fusermount3", "-uz", mountpoint], timeout: 30)
        }
    }

    var isMounted: Bool {
        ((try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? "").contains(" \(mountpoint) ")
    }

    public func close() {
        unmount()
        forceUnmount()
        dir.remove()
    }
}

/// Deterministic pseudo-random bytes.
public func noise(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}
