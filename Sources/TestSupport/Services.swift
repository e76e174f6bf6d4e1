import Foundation

/// An S3 server of the tests' own: SeaweedFS (`weed mini`, installed by Scripts/setup into
/// `.build/tools/weed`) on loopback, in a temp dir, with ports of its own and one identity whose keys
/// are `accessKey` and `secretKey`; the bucket `bucket` exists. `stop()` kills it (always call it in a
/// `defer`); `restart()` starts it again over the same data.
public final class S3Server: @unchecked Sendable {
    public let dir: TempDir
    public let port: Int
    public let bucket = "aether"
    public let accessKey = "AKIDAETHERTEST"
    public let secretKey = "aether-test-secret-key"
    public private(set) var pid: pid_t = 0
    public var endpoint: String { "http://127.0.0.1:\(port + 6)" }
    /// The environment a process needs to reach it.
    public var environment: [String: String] { ["AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey, "AWS_REGION": "us-east-1"] }

    /// The `weed` binary: $AETHERFS_WEED, else Scripts/setup's.
    public static var binary: String? {
        if let w = ProcessInfo.processInfo.environment["AETHERFS_WEED"], FileManager.default.isExecutableFile(atPath: w) { return w }
        var dir = URL(fileURLWithPath: aetherfsExecutable).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("tools/weed/bin/weed").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }

    /// Whether the tests can start one, and whether CI requires them to (AETHERFS_REQUIRE_SERVICES=1).
    public static var available: Bool { binary != nil }
    public static var required: Bool { ProcessInfo.processInfo.environment["AETHERFS_REQUIRE_SERVICES"] == "1" }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    public init() throws {
        dir = TempDir("aetherfs-s3")
        port = try S3Server.freePorts(11)
        let config = """
            {"identities":[{"name":"aether","credentials":[{"accessKey":"\(accessKey)","secretKey":"\(secretKey)"}],
              "actions":["Admin","Read","Write","List","Tagging"]}]}
            """
        try config.write(toFile: dir.path + "/s3.json", atomically: true, encoding: .utf8)
        try start()
    }

    /// Starts the server over its directory and waits (up to 30 s) until its S3 port answers.
    public func start() throws {
        guard let weed = S3Server.binary else { throw Failure(description: "no weed binary (run Scripts/setup)") }
        let p = port
        let args = [weed, "mini", "-dir=\(dir.path)/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    "-master.port=\(p)", "-master.port.grpc=\(p + 1)", "-volume.port=\(p + 2)", "-volume.port.grpc=\(p + 3)",
                    "-filer.port=\(p + 4)", "-filer.port.grpc=\(p + 5)", "-s3.port=\(p + 6)", "-s3.port.grpc=\(p + 7)",
                    "-admin.port=\(p + 8)", "-admin.port.grpc=\(p + 9)", "-webdav.port=\(p + 10)", "-webdav=false",
                    "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config=\(dir.path)/s3.json",
                    "-bucket=\(bucket)"]
        try FileManager.default.createDirectory(atPath: dir.path + "/data", withIntermediateDirectories: true)
        pid = try spawnWatched(signal: "KILL", dir: dir.path, args, log: dir.path + "/weed.log")
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            // The gateway answers (403 without a signature) once it is up, but the bucket exists only
            // once the filer lists it (a request in between is told NoSuchBucket).
            let r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "\(endpoint)/\(bucket)/"], timeout: 5)
            let b = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Accept: application/json",
                         "http://127.0.0.1:\(port + 4)/buckets/\(bucket)/"], timeout: 5)
            if r.status == 0, r.out != "000", r.out != "503", b.out == "200" { return }
            usleep(200_000)
        }
        stop()
        throw Failure(description: "weed did not answer on \(endpoint) within 30 s: \((try? String(contentsOfFile: dir.path + "/weed.log", encoding: .utf8))?.suffix(2000) ?? "")")
    }

    /// Kills the server (SIGKILL: a cut-off network, as far as a client knows).
    public func kill() {
        guard pid > 0 else { return }
        if let server = watchedPID(dir.path) { Foundation.kill(server, SIGKILL) }
        Foundation.kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
    }

    /// One server for the whole test process, started at first use and stopped (by its watchdog)
    /// when the process ends; its credentials are put in this process's environment.
    public static let shared: Result<S3Server, Failure> = {
        do {
            let server = try S3Server()
            for (k, v) in server.environment { setenv(k, v, 1) }
            return .success(server)
        } catch let e as Failure { return .failure(e) } catch { return .failure(Failure(description: "\(error)")) }
    }()

    public func restart() throws { kill(); try start() }

    /// Kills the server and removes its directory.
    public func stop() {
        kill()
        dir.remove()
    }

    /// A base port with `count` free ports after it, on loopback.
    static func freePorts(_ count: Int) throws -> Int {
        for _ in 0..<50 {
            let base = Int.random(in: 20_000...55_000)
            if (base..<base + count).allSatisfy(portIsFree) { return base }
        }
        throw Failure(description: "no \(count) free ports in a row")
    }

    static func portIsFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }
}

/// The watchdog a test server runs under: it stops the server with `signal` (and removes the server's
/// directory) when the test process is gone, however it ended, and ends when the server does.
let watchdog = #"""
    owner=$1; dir=$2; sig=$3; shift 3
    "$@" & server=$!
    echo $server > "$dir/server.pid"
    while kill -0 "$owner" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.5; done
    if ! kill -0 "$owner" 2>/dev/null; then kill -"$sig" "$server" 2>/dev/null; wait "$server"; rm -rf "$dir"; fi
    wait "$server"
    """#

/// Starts `args` under the watchdog (output in `log`); returns the watchdog's pid, the server's is in
/// `dir/server.pid` (`watchedPID`).
func spawnWatched(signal: String, dir: String, _ args: [String], log: String) throws -> pid_t {
    unlink(dir + "/server.pid")
    return try spawnDetached(["/bin/bash", "-c", watchdog, "watchdog", "\(getpid())", dir, signal] + args, log: log)
}

func watchedPID(_ dir: String) -> pid_t? {
    (try? String(contentsOfFile: dir + "/server.pid", encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}

/// Starts a process in the background with its output in `log`; returns its pid (waited for by the caller).
func spawnDetached(_ args: [String], log: String) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv = args.map { strdup($0) } + [nil]
    let envp = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, args[0], &actions, nil, argv, envp)
    guard rc == 0 else { throw S3Server.Failure(description: "cannot start \(args[0]): \(String(cString: strerror(rc)))") }
    return pid
}

/// A PostgreSQL server of the tests' own: a throwaway cluster (`initdb`, then `postgres`) in a temp
/// dir, on a loopback port of its own, with trust authentication for the superuser `aether`. Under
/// root the server runs as the `postgres` user (it refuses root). `stop()` kills it and removes its
/// directory (always call it in a `defer`); `restart()` starts it again over the same data.
/// `shared` is one server for a whole test process (stopped when the process exits): each test makes
/// a database of its own in it (`newDatabase`).
public final class PostgresServer: @unchecked Sendable {
    public let dir: TempDir
    public let port: Int
    public let user = "aether"
    public private(set) var pid: pid_t = 0

    /// The directory of `initdb` and `postgres`: $AETHERFS_PG_BINDIR, else Debian's newest.
    public static var bindir: String? {
        if let d = ProcessInfo.processInfo.environment["AETHERFS_PG_BINDIR"], FileManager.default.isExecutableFile(atPath: d + "/postgres") { return d }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        return versions.compactMap(Int.init).sorted().reversed().map { "/usr/lib/postgresql/\($0)/bin" }
            .first { FileManager.default.isExecutableFile(atPath: $0 + "/postgres") }
    }

    public static var available: Bool { bindir != nil }
    /// Whether CI requires the tests to start one (AETHERFS_REQUIRE_SERVICES=1).
    public static var required: Bool { S3Server.required }

    /// Under root: the command prefix that runs a program as the `postgres` user.
    static var asServerUser: [String] {
        guard getuid() == 0 else { return [] }
        return ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]
    }

    public init() throws {
        guard let bin = PostgresServer.bindir else { throw S3Server.Failure(description: "no PostgreSQL server binaries (run Scripts/setup)") }
        dir = TempDir("aetherfs-pg")
        port = try S3Server.freePorts(1)
        if getuid() == 0 { _ = run(["chown", "-R", "postgres:postgres", dir.path]) }
        let r = run(PostgresServer.asServerUser + [bin + "/initdb", "-D", dir.path + "/data", "-U", user, "--auth=trust",
                                                   "-E", "UTF8", "--no-sync", "--no-instructions"], timeout: 120)
        guard r.status == 0 else { dir.remove(); throw S3Server.Failure(description: "initdb failed: \(r)") }
        try start()
    }

    /// The server's own pid (its watchdog's child).
    var serverPID: pid_t? { watchedPID(dir.path) }

    /// Starts the server over its data and waits (up to 30 s) until it takes connections.
    public func start() throws {
        guard let bin = PostgresServer.bindir else { throw S3Server.Failure(description: "no PostgreSQL server binaries") }
        pid = try spawnWatched(signal: "QUIT", dir: dir.path, PostgresServer.asServerUser + [bin + "/postgres", "-D", dir.path + "/data", "-p", "\(port)",
                                                                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                                                                 "-c", "fsync=off", "-c", "max_connections=200"],
                               log: dir.path + "/postgres.log")
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if run([bin + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", "postgres"], timeout: 5).status == 0 { return }
            usleep(100_000)
        }
        kill()
        throw S3Server.Failure(description: "postgres did not answer on port \(port) within 30 s: \((try? String(contentsOfFile: dir.path + "/postgres.log", encoding: .utf8))?.suffix(2000) ?? "")")
    }

    /// Makes an empty database and returns its `postgres://` URL.
    public func newDatabase(_ name: String = "t" + String(UInt64.random(in: 0...UInt64.max), radix: 36)) throws -> String {
        guard let bin = PostgresServer.bindir else { throw S3Server.Failure(description: "no PostgreSQL server binaries") }
        let r = run([bin + "/psql", "-q", "-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", "postgres", "-c", "CREATE DATABASE \(name)"], timeout: 60)
        guard r.status == 0 else { throw S3Server.Failure(description: "CREATE DATABASE \(name): \(r)") }
        return url(name)
    }

    /// A loopback port nothing listens on (now).
    public static func freePort() throws -> Int { try S3Server.freePorts(1) }

    public func url(_ database: String) -> String { "postgres://\(user)@127.0.0.1:\(port)/\(database)" }

    /// Runs SQL through psql in `database`; its output, one row a line, columns split by `|`.
    public func psql(_ database: String, _ sql: String) -> Ran {
        run([(PostgresServer.bindir ?? "/usr/bin") + "/psql", "-qtA", "-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", database, "-c", sql], timeout: 60)
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, as a crash would; SIGKILL after 10 s).
    public func kill() {
        guard pid > 0 else { return }
        let server = serverPID
        if let server { Foundation.kill(server, SIGQUIT) } else { Foundation.kill(pid, SIGKILL) }
        var status: Int32 = 0
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) == pid { pid = 0; return }
            usleep(100_000)
        }
        if let server { Foundation.kill(server, SIGKILL) }
        Foundation.kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        pid = 0
    }

    public func restart() throws { kill(); try start() }

    public func stop() {
        kill()
        dir.remove()
    }

    /// One server for the whole test process, started at first use and stopped (by its watchdog)
    /// when the process ends.
    public static let shared: Result<PostgresServer, S3Server.Failure> = {
        do {
            return .success(try PostgresServer())
        } catch let e as S3Server.Failure {
            return .failure(e)
        } catch {
            return .failure(S3Server.Failure(description: "\(error)"))
        }
    }()
}

/// The kind of store the mount tests' fixtures make (`AETHERFS_TEST_STORE`): `local` (the default), or
/// `shared` — objects on S3 and records on PostgreSQL, both this test process's own servers (a prefix
/// and a database of its own for each store), so that the same suites run on a store of several hosts.
public enum TestStores {
    public static var shared: Bool { ProcessInfo.processInfo.environment["AETHERFS_TEST_STORE"] == "shared" }

    /// Makes the store at `path` as a shared one (`aetherfs init --objects … --meta …`).
    public static func makeShared(at path: String) throws {
        let s3 = try S3Server.shared.get(), pg = try PostgresServer.shared.get()
        let name = "t" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let url = try pg.newDatabase(name)
        let r = run([aetherfsExecutable, "init", "--store", path, "--objects", "s3://\(s3.bucket)/\(name)", "--s3-endpoint", s3.endpoint,
                     "--meta", url], timeout: 120)
        guard r.status == 0, FileManager.default.fileExists(atPath: path + "/metadata.json"),
              FileManager.default.fileExists(atPath: path + "/objects.json") else {
            throw S3Server.Failure(description: "init of a shared store failed: \(r)")
        }
    }
}
