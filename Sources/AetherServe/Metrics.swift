import Foundation
import Hummingbird
import HTTPTypes
import NIOCore
import Prometheus
import AetherModel
import AetherCore

/// What `GET /metrics` shows, in Prometheus's text format: requests by route, method and status, their
/// durations, and the store's counts as of the scrape.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    static let buckets: [Duration] = [.milliseconds(1), .milliseconds(5), .milliseconds(20), .milliseconds(100), .milliseconds(500),
                                      .seconds(2), .seconds(10), .seconds(60)]

    /// One request answered: its route's template (or `unmatched`), method and status, and how long it took.
    func record(route: String, method: String, status: Int, nanoseconds: Int64) {
        registry.makeCounter(name: "aetherfs_http_requests_total", labels: [("route", route), ("method", method), ("status", String(status))],
                             help: "HTTP requests answered, by route, method and status").increment()
        registry.makeDurationHistogram(name: "aetherfs_http_request_duration_seconds", labels: [("route", route), ("method", method)],
                                       buckets: ServerMetrics.buckets, help: "Time to answer HTTP requests, by route and method")
            .recordNanoseconds(nanoseconds)
    }

    /// The text of a scrape, with the store's counts read now.
    func scrape(_ repo: Repository) throws(AetherError) -> String {
        let sessions = try repo.sessions()
        let gauge = { (name: String, help: String, value: Int) in
            self.registry.makeGauge(name: name, help: help).set(Double(value))
        }
        gauge("aetherfs_sessions", "Sessions in the store", sessions.count)
        gauge("aetherfs_sessions_mounted", "Sessions a live process serves", sessions.filter { repo.holder(of: $0) != nil }.count)
        gauge("aetherfs_branches", "Branches in the store", try repo.branches().count)
        gauge("aetherfs_writes_in_flight", "Writes in flight (checkpoints, imports, syncs being received)", try domain { try repo.metadata.writes() }.count)
        gauge("aetherfs_tokens_live", "Tokens not revoked", try domain { try repo.metadata.tokens() }.filter { $0.revoked == nil }.count)
        return registry.emitToString()
    }
}
