import Testing
import Foundation
import AetherModel
@testable import AetherServe

/// The OpenAPI document describes exactly the routes the server has, and the error table gives every
/// domain error a status.
@Suite struct RouteTests {
    @Test func everyRouteIsInTheOpenAPIDocumentAndNoOther() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/openapi.json")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let paths = try #require(doc["paths"] as? [String: [String: Any]])
        let documented = Set(paths.flatMap { path, ops in ops.keys.map { "\($0.uppercased()) \(path)" } })
        let served = Set(Server.routes.map { "\($0.method) \($0.path)" })
        #expect(documented == served, "only documented: \(documented.subtracting(served)); only served: \(served.subtracting(documented))")
        // A route without a scope is one the document marks as needing no token, and the other way round.
        for r in Server.routes {
            let op = try #require(paths[r.path]?[r.method.lowercased()] as? [String: Any])
            let open = (op["security"] as? [Any])?.isEmpty == true
            #expect(open == (r.scope == nil), "\(r.method) \(r.path)")
        }
    }

    @Test func templatesMatchOneSegmentPerParameter() {
        #expect(Authentication.matches("/v1/sessions/{name}", "/v1/sessions/w"))
        #expect(!Authentication.matches("/v1/sessions/{name}", "/v1/sessions/"))
        #expect(!Authentication.matches("/v1/sessions/{name}", "/v1/sessions/w/x"))
        #expect(Authentication.matches("/v1/health", "/v1/health") && !Authentication.matches("/v1/health", "/v1/healthz"))
    }

    @Test func everyDomainErrorHasAStatus() {
        let statuses = Dictionary(uniqueKeysWithValues: ["not_found", "exists", "branch_moved", "permission_denied", "too_big", "no_space", "invalid", "damaged"]
            .map { ($0, APIError.status(for: $0).code) })
        #expect(statuses == ["not_found": 404, "exists": 409, "branch_moved": 409, "permission_denied": 403, "too_big": 413, "no_space": 507, "invalid": 400, "damaged": 500])
    }
}
