#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import HummingbirdTLS
import HummingbirdCore
import NIOSSL
import HTTPTypes
import NIOCore
import NIOPosix
import AetherModel
import AetherCore
import AetherVFS
import AetherArchive

/// How `aetherfs serve` listens and what it lets in.
public struct ServeOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 8470
    /// The largest archive an import may upload.
    public var maxUpload: Int64 = 16 << 30
    /// The largest JSON body.
    public var maxJSON = 1 << 20
    /// A connection that sends nothing for this long is closed (a stalled client holds no worker).
    public var idleTimeout: Int64 = 30
    /// PEM files of the certificate chain and its private key: HTTPS instead of HTTP.
    public var tlsCertificate: String?
    public var tlsKey: String?
    public init() {}
}

/// The request's context: the token it came with, once the auth middleware has found it live.
struct APIContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var token: TokenRecord?
    init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
}

/// The versioned JSON API over the use cases the CLI calls. Every route but the health check needs a
/// bearer token of the route's scope; errors are `{"error": {"code", "message"}}` with the status of
/// `APIError.status(for:)`.
public struct Server: Sendable {
    let repo: Repository
    let options: ServeOptions

    public init(repo: Repository, options: ServeOptions) { self.repo = repo; self.options = options }

    /// Every route: method, path (`{name}` for a parameter, as the OpenAPI document writes it) and the
    /// scope it needs (nil: none).
    public static let routes: [(method: String, path: String, scope: TokenScope?)] = [
        ("GET", "/v1/health", nil),
        ("GET", "/metrics", .read),
        ("GET", "/v1/sessions", .read),
        ("POST", "/v1/sessions", .write),
        ("GET", "/v1/sessions/{name}", .read),
        ("DELETE", "/v1/sessions/{name}", .write),
        ("POST", "/v1/sessions/{name}/retire", .write),
        ("GET", "/v1/sessions/{name}/checkpoints", .read),
        ("POST", "/v1/sessions/{name}/checkpoints", .write),
        ("POST", "/v1/sessions/{name}/restore", .write),
        ("POST", "/v1/sessions/{name}/forks", .write),
        ("POST", "/v1/sessions/{name}/commits", .write),
        ("POST", "/v1/sessions/{name}/proposals", .write),
        ("POST", "/v1/sessions/{name}/promote", .write),
        ("GET", "/v1/proposals", .read),
        ("GET", "/v1/proposals/{id}", .read),
        ("POST", "/v1/proposals/{id}/reviews", .review),
        ("POST", "/v1/proposals/{id}/withdraw", .write),
        ("GET", "/v1/diff", .read),
        ("GET", "/v1/branches", .read),
        ("GET", "/v1/log/{branch}", .read),
        ("GET", "/v1/snapshots/{ref}/export", .read),
        ("POST", "/v1/import", .write),
        ("POST", "/v1/sync/missing", .read),
        ("POST", "/v1/sync/fetch", .read),
        ("POST", "/v1/sync/known", .read),
        ("GET", "/v1/sync/branches/{name}", .read),
        ("GET", "/v1/sync/sessions/{name}", .read),
        ("POST", "/v1/sync/leases", .write),
        ("DELETE", "/v1/sync/leases/{id}", .write),
        ("POST", "/v1/sync/objects", .write),
        ("POST", "/v1/sync/apply", .write),
    ]

    /// The session actions and the control file (request verb) each one is.
    static let sessionActions = ["checkpoints": "checkpoint", "restore": "restore", "forks": "fork", "commits": "commit",
                                 "proposals": "propose", "promote": "promote"]

    /// Serves until the task is cancelled; `ready` is told the port once it listens.
    public func run(ready: @escaping @Sendable (Int) -> Void) async throws {
        let router = Router(context: APIContext.self)
        let metrics = ServerMetrics()
        router.add(middleware: Authentication(repo: repo, metrics: metrics))
        let handlers = Handlers(repo: repo, options: options, leases: ReceivingLeases(repo: repo))
        let repo = self.repo
        router.get("/metrics") { _, _ in
            let text = try await blocking { () throws(AetherError) in try metrics.scrape(repo) }
            var buffer = ByteBuffer()
            buffer.writeString(text)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: buffer))
        }
        router.get("/v1/health") { _, _ in json(["status": "ok", "version": Repository.softwareVersion]) }
        router.get("/v1/sessions") { _, c in try await handlers.sessions(c) }
        router.post("/v1/sessions") { r, c in try await handlers.createSession(r, c) }
        router.get("/v1/sessions/:name") { _, c in try await handlers.session(c) }
        router.delete("/v1/sessions/:name") { r, c in try await handlers.deleteSession(r, c) }
        router.post("/v1/sessions/:name/retire") { _, c in try await handlers.retire(c) }
        router.get("/v1/sessions/:name/checkpoints") { _, c in try await handlers.checkpoints(c) }
        for (route, verb) in Server.sessionActions {
            router.post("/v1/sessions/:name/\(route)") { r, c in try await handlers.act(verb, r, c) }
        }
        router.get("/v1/proposals") { r, c in try await handlers.proposals(r, c) }
        router.get("/v1/proposals/:id") { _, c in try await handlers.proposal(c) }
        router.post("/v1/proposals/:id/reviews") { r, c in try await handlers.review(r, c) }
        router.post("/v1/proposals/:id/withdraw") { _, c in try await handlers.withdraw(c) }
        router.get("/v1/diff") { r, c in try await handlers.diff(r, c) }
        router.get("/v1/branches") { _, c in try await handlers.branches(c) }
        router.get("/v1/log/:branch") { r, c in try await handlers.log(r, c) }
        router.get("/v1/snapshots/:ref/export") { r, c in try await handlers.export(r, c) }
        router.post("/v1/import") { r, c in try await handlers.importArchive(r, c) }
        router.post("/v1/sync/missing") { r, c in try await handlers.syncMissing(r, c) }
        router.post("/v1/sync/fetch") { r, c in try await handlers.syncFetch(r, c) }
        router.post("/v1/sync/known") { r, c in try await handlers.syncKnown(r, c) }
        router.get("/v1/sync/branches/:name") { _, c in try await handlers.syncBranch(c) }
        router.get("/v1/sync/sessions/:name") { _, c in try await handlers.syncSession(c) }
        router.post("/v1/sync/leases") { _, c in try await handlers.beginLease(c) }
        router.delete("/v1/sync/leases/:id") { _, c in try await handlers.endLease(c) }
        router.post("/v1/sync/objects") { r, c in try await handlers.syncReceive(r, c) }
        router.post("/v1/sync/apply") { r, c in try await handlers.syncApply(r, c) }
        var server: HTTPServerBuilder = .http1(configuration: .init(idleTimeout: .seconds(options.idleTimeout)))
        if let certificate = options.tlsCertificate, let key = options.tlsKey {
            let tls: TLSConfiguration
            do {
                tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            } catch {
                throw AetherError.invalid("--tls-cert \(certificate) / --tls-key \(key): \(error)")
            }
            server = try .tls(server, tlsConfiguration: tls)
        }
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "aetherfs"),
            onServerRunning: { channel in ready(channel.localAddress?.port ?? 0) })
        try await app.runService()
    }
}

/// Finds the request's token and checks the route's scope; the health check needs none.
struct Authentication: RouterMiddleware {
    typealias Context = APIContext
    let repo: Repository
    let metrics: ServerMetrics

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        let start = monotonicNanoseconds()
        let route = Server.routes.first { $0.method == request.method.rawValue && Authentication.matches($0.path, request.uri.path) }?.path ?? "unmatched"
        do {
            let response = try await authenticated(request, context: context, next: next)
            metrics.record(route: route, method: request.method.rawValue, status: response.status.code, nanoseconds: monotonicNanoseconds() - start)
            return response
        } catch {
            metrics.record(route: route, method: request.method.rawValue, status: (error as? APIError)?.status.code ?? 500, nanoseconds: monotonicNanoseconds() - start)
            throw error
        }
    }

    private func authenticated(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        let onPath = Server.routes.filter { Authentication.matches($0.path, request.uri.path) }
        guard let route = onPath.first(where: { $0.method == request.method.rawValue }) else {
            if onPath.isEmpty { throw APIError(.notFound, "not_found", "no route \(request.uri.path)") }
            throw APIError(.methodNotAllowed, "method_not_allowed", "\(request.uri.path) takes \(onPath.map(\.method).joined(separator: ", ")), not \(request.method.rawValue)")
        }
        guard let needed = route.scope else { return try await next(request, context) }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            throw APIError(.unauthorized, "unauthenticated", "this route needs a bearer token (Authorization: Bearer aet_…; aetherfs token create)")
        }
        let secret = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        let repo = self.repo
        guard let token = try await blocking({ () throws(AetherError) in try repo.authenticate(secret) }) else {
            throw APIError(.unauthorized, "unauthenticated", "the token is unknown or revoked")
        }
        guard token.scope.allows(needed) else {
            throw APIError(.forbidden, "permission_denied", "token \(token.name) has scope \(token.scope.rawValue); \(request.method.rawValue) \(route.path) needs \(needed.rawValue)")
        }
        var context = context
        context.token = token
        guard request.method != .get else { return try await next(request, context) }
        // A request that changes something is audited with its token's name, whatever it came to.
        let detail = "\(request.method.rawValue) \(request.uri.path) token \(token.name)"
        do {
            let response = try await next(request, context)
            try? await blocking { () throws(AetherError) in try? repo.metadata.audit(uid: token.uid, action: "http", session: "", detail: detail, result: "\(response.status.code)") }
            return response
        } catch {
            let status = (error as? APIError)?.status.code ?? 500
            try? await blocking { () throws(AetherError) in try? repo.metadata.audit(uid: token.uid, action: "http", session: "", detail: detail, result: "refused: \(status)") }
            throw error
        }
    }

    /// Whether `path` is an instance of `template` (`{x}` stands for one non-empty segment).
    static func matches(_ template: String, _ path: String) -> Bool {
        let t = template.split(separator: "/", omittingEmptySubsequences: false)
        let p = path.split(separator: "/", omittingEmptySubsequences: false)
        guard t.count == p.count else { return false }
        return zip(t, p).allSatisfy { a, b in a.hasPrefix("{") ? !b.isEmpty : a == b }
    }
}

/// An error the API answers with: its status, a stable code and one line.
struct APIError: Error, HTTPResponseError {
    let status: HTTPResponse.Status
    let code: String
    let message: String

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) { self.status = status; self.code = code; self.message = message }

    init(_ error: AetherError) {
        let code = errorCode(for: error)
        self.init(APIError.status(for: code), code, error.description)
    }

    /// The one table from the domain's error codes to HTTP statuses.
    static func status(for code: String) -> HTTPResponse.Status {
        switch code {
        case "not_found": .notFound
        case "exists", "busy", "branch_moved": .conflict
        case "permission_denied", "not_permitted", "read_only": .forbidden
        case "too_big": .contentTooLarge
        case "no_space": .init(code: 507, reasonPhrase: "Insufficient Storage")
        case "damaged", "failed", "system": .internalServerError
        case "cancelled": .serviceUnavailable
        default: .badRequest
        }
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = json(ErrorDocument(error: .init(code: code, message: message)), status: status)
        if status == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer" }
        return response
    }
}

struct ErrorDocument: Encodable {
    struct Detail: Encodable { var code: String; var message: String }
    var error: Detail
}

/// A JSON response of `value`, encoded as the CLI's `--json` encodes it.
func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response { rawJSON(JSONText.encode(value), status: status) }

/// A response of JSON text as a use case encoded it.
func rawJSON(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
    var buffer = ByteBuffer()
    buffer.writeString(text + "\n")
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: buffer))
}

/// The threads blocking work runs on (SQLite, object files, a mount's control files): more than the
/// cores, since they wait on the disk and on daemons more than they compute, and never an event loop
/// or the cooperative pool.
let blockingPool: NIOThreadPool = {
    let pool = NIOThreadPool(numberOfThreads: max(16, System.coreCount * 4))
    pool.start()
    return pool
}()

/// Runs blocking domain work on `blockingPool`; its domain error becomes the API's.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws(AetherError) -> T) async throws -> T {
    do {
        return try await blockingPool.runIfActive { try body() }
    } catch let e as AetherError {
        throw APIError(e)
    }
}
