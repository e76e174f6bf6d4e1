#if canImport(Glibc)
import Glibc
#endif
import Foundation
import AetherModel
import AetherMeta
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// Where a PostgreSQL database is, from `postgres://USER@HOST[:PORT]/DATABASE[?host=SOCKETDIR]`.
/// The password is never in the URL (the store keeps the URL in `metadata.json`): it comes from
/// `PGPASSWORD` or `~/.pgpass`, as libpq's tools read them.
public struct PostgresAddress: Sendable, Equatable {
    public var user: String
    public var host: String
    public var port: Int
    public var database: String
    /// A directory holding the server's socket (`?host=/run/postgresql`), used instead of TCP.
    public var socketDirectory: String?

    public init(url: String) throws(MetadataError) {
        let bad = { (why: String) in MetadataError(.invalid, "\(url): \(why); expected postgres://USER@HOST[:PORT]/DATABASE") }
        guard let c = URLComponents(string: url), c.scheme == "postgres" || c.scheme == "postgresql" else {
            throw bad("not a postgres:// URL")
        }
        guard c.password == nil else {
            throw MetadataError(.invalid, "\(url): keep the password out of the URL (the store records it); set PGPASSWORD or ~/.pgpass")
        }
        let database = String(c.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else { throw bad("no database name") }
        socketDirectory = c.queryItems?.first { $0.name == "host" }?.value
        guard let host = c.host.flatMap({ $0.isEmpty ? nil : $0 }) ?? (socketDirectory == nil ? nil : "localhost") else { throw bad("no host") }
        for item in c.queryItems ?? [] where item.name != "host" {
            throw bad("unknown parameter \(item.name)")
        }
        self.host = host
        port = c.port ?? 5432
        guard (1...65535).contains(port) else { throw bad("port \(port) out of range") }
        user = c.user ?? ProcessInfo.processInfo.environment["PGUSER"] ?? (getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "postgres")
        self.database = database
    }

    /// `HOST:PORT/DATABASE`, for messages.
    public var display: String { (socketDirectory ?? "\(host):\(port)") + "/\(database)" }

    /// The password: `PGPASSWORD`, else the first line of `~/.pgpass` that matches (`*` matches anything).
    var password: String? {
        if let p = ProcessInfo.processInfo.environment["PGPASSWORD"] { return p }
        let file = ProcessInfo.processInfo.environment["PGPASSFILE"] ?? (NSHomeDirectory() + "/.pgpass")
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: ":", maxSplits: 4, omittingEmptySubsequences: false).map(String.init)
            guard f.count == 5 else { continue }
            let want = [socketDirectory == nil ? host : "localhost", String(port), database, user]
            if zip(f.prefix(4), want).allSatisfy({ $0 == "*" || $0 == $1 }) { return f[4] }
        }
        return nil
    }
}

/// One connection to PostgreSQL as an `SQLConnection`: the metadata's statements, with `?` turned into
/// `$1, $2, …`, blocking their thread (postgres-nio's futures are waited for on the caller's thread,
/// never on an event loop or the cooperative pool). Like `Database`, a recursive mutex gives each call,
/// and each transaction with its body, the connection alone. A lost connection is made again at the
/// next call outside a transaction; every statement has a time limit, after which the connection is
/// closed and the statement fails.
public final class PostgresSQL: SQLConnection, @unchecked Sendable {
    public let address: PostgresAddress
    let logger: Logger
    /// Seconds a statement (or a connect) may take.
    let timeout: Int64
    private var connection: PostgresConnection?
    private var depth = 0
    private var numbered: [String: String] = [:]
    private var nextID = 1
    private let serial = RecursiveLock()

    /// Connects at once, so that a wrong address or password is told here.
    public init(address: PostgresAddress, timeout: Int64 = 30, logger: Logger = Logger(label: "aetherfs.postgres")) throws {
        self.address = address
        self.timeout = timeout
        var quiet = logger
        quiet.logLevel = .critical
        self.logger = quiet
        _ = try locked { try connected() }
    }

    deinit {
        drop()
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        try serial.withLock(body)
    }

    /// Closes the connection (postgres-nio wants every connection closed before it goes).
    private func drop() {
        if let c = connection { try? (c.close() as EventLoopFuture<Void>).wait() }
        connection = nil
    }

    private func connected() throws -> PostgresConnection {
        if let c = connection, !c.isClosed { return c }
        drop()
        var config: PostgresConnection.Configuration
        if let dir = address.socketDirectory {
            config = .init(unixSocketPath: "\(dir)/.s.PGSQL.\(address.port)", username: address.user, password: address.password, database: address.database)
        } else {
            config = .init(host: address.host, port: address.port, username: address.user, password: address.password,
                           database: address.database, tls: .disable)
        }
        config.options.connectTimeout = .seconds(timeout)
        do {
            let c = try PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.next(), configuration: config,
                                                   id: nextID, logger: logger).wait()
            nextID += 1
            connection = c
            return c
        } catch {
            throw describe(error, doing: "connect")
        }
    }

    /// `?` placeholders (outside quotes) as `$1, $2, …`.
    static func numbering(_ sql: String) -> String {
        var out = ""
        var n = 0
        var quoted = false
        for ch in sql {
            if ch == "'" { quoted.toggle() }
            if ch == "?" && !quoted {
                n += 1
                out += "$\(n)"
            } else {
                out.append(ch)
            }
        }
        return out
    }

    private func send(_ sql: String, _ values: [SQLValue]) throws -> PostgresQueryResult {
        try locked {
            let text: String
            if let t = numbered[sql] { text = t } else { text = PostgresSQL.numbering(sql); numbered[sql] = text }
            var binds = PostgresBindings(capacity: values.count)
            for v in values {
                switch v {
                case .null: binds.appendNull()
                case .int(let x): binds.append(x)
                case .real(let x): binds.append(x)
                case .text(let s): binds.append(s)
                case .blob(let b): binds.append(ByteBuffer(bytes: b))
                }
            }
            // Outside a transaction, a statement that failed because the connection had been lost (the
            // server restarted) is sent once more on a new one.
            for attempt in 0..<2 {
                let c = try connected()
                do {
                    return try bounded(c) { c.query(PostgresQuery(unsafeSQL: text, binds: binds), logger: logger) }
                } catch let e as PSQLError where PostgresSQL.isLostConnection(e) && depth == 0 && attempt == 0 {
                    drop()
                    continue
                } catch {
                    throw describe(error, doing: sql)
                }
            }
            throw MetadataError(.unavailable, "PostgreSQL at \(address.display): the connection was lost")
        }
    }

    /// Waits for `start`'s answer at most `timeout` seconds; past that the connection is closed, which
    /// fails the statement.
    private func bounded<T: Sendable>(_ c: PostgresConnection, _ start: () -> EventLoopFuture<T>) throws -> T {
        let future = start()
        let limit = c.eventLoop.scheduleTask(in: .seconds(timeout)) { let _: EventLoopFuture<Void> = c.close() }
        defer { limit.cancel() }
        return try future.wait()
    }

    static func isLostConnection(_ e: PSQLError) -> Bool {
        e.code == .serverClosedConnection || e.code == .connectionError || e.code == .clientClosedConnection || e.code == .uncleanShutdown
    }

    /// PostgreSQL's errors in the metadata's terms: a unique key taken is a `conflict`; a server that
    /// cannot be reached is `unavailable`; the server's own message otherwise.
    private func describe(_ error: any Error, doing what: String) -> MetadataError {
        guard let e = error as? PSQLError else {
            if let m = error as? MetadataError { return m }
            return MetadataError(.unavailable, "PostgreSQL at \(address.display): \(error)")
        }
        if let info = e.serverInfo {
            let message = info[.message] ?? "error"
            let detail = info[.detail].map { " (\($0))" } ?? ""
            switch info[.sqlState] ?? "" {
            case "23505": return MetadataError(.conflict, message + detail)
            case "28000", "28P01": return MetadataError(.accessDenied, "PostgreSQL at \(address.display) refused user \(address.user): \(message)")
            case "3D000": return MetadataError(.unavailable, "PostgreSQL at \(address.display): \(message)")
            default:
                if Self.isLostConnection(e) { drop() }
                return MetadataError(.failed, "PostgreSQL at \(address.display): \(message)\(detail), in: \(what.prefix(120))")
            }
        }
        drop()
        let cause = e.underlying.map { "\($0)" } ?? "\(e.code)"
        return MetadataError(.unavailable, "PostgreSQL at \(address.display) cannot be reached: \(cause)")
    }

    // MARK: SQLConnection

    /// Runs statements separated by `;` (none may hold one in a literal), one at a time.
    public func execute(_ sql: String) throws {
        try locked {
            for statement in sql.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                _ = try send(String(statement), [])
            }
        }
    }

    @discardableResult
    public func run(_ sql: String, _ values: [SQLValue]) throws -> Int {
        try send(sql, values).metadata.rows ?? 0
    }

    public func insert(_ sql: String, _ values: [SQLValue]) throws -> Int64 {
        let result = try send(sql + " RETURNING id", values)
        guard let row = result.first, let id = try PostgresSQL.values(row).first?.int else {
            throw MetadataError(.failed, "PostgreSQL at \(address.display): an insert returned no id")
        }
        return id
    }

    public func forEach(_ sql: String, _ values: [SQLValue], _ body: ([SQLValue]) throws -> Void) throws {
        for row in try send(sql, values) { try body(try PostgresSQL.values(row)) }
    }

    /// A row's cells as `SQLValue`s by their types.
    static func values(_ row: PostgresRow) throws -> [SQLValue] {
        try row.map { cell -> SQLValue in
            guard cell.bytes != nil else { return .null }
            switch cell.dataType {
            case .int2, .int4, .int8, .oid: return .int(try cell.decode(Int64.self))
            case .float4, .float8: return .real(try cell.decode(Double.self))
            case .bytea: return .blob(Array(try cell.decode(ByteBuffer.self).readableBytesView))
            case .bool: return .int(try cell.decode(Bool.self) ? 1 : 0)
            default: return .text(try cell.decode(String.self))
            }
        }
    }

    public func atomically<T>(_ body: () throws -> T) throws -> T {
        try locked { depth > 0 ? try body() : try transaction(durable: false, body) }
    }

    public func transaction<T>(durable: Bool, _ body: () throws -> T) throws -> T {
        try locked {
            // Commits are durable in PostgreSQL (synchronous_commit), `durable` or not.
            try run("BEGIN", [])
            depth += 1
            defer { depth -= 1 }
            do {
                let result = try body()
                try run("COMMIT", [])
                return result
            } catch {
                _ = try? run("ROLLBACK", [])
                throw error
            }
        }
    }

    public var lockingRead: String { " FOR UPDATE" }

    public func serialize(_ key: Int64) throws {
        _ = try run("SELECT pg_advisory_xact_lock(?)", [.int(key)])
    }
}
