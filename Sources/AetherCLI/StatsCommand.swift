#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "What a mounted session's daemon did: requests, latencies, bytes, cache hits.",
        discussion: "The same JSON as the mount's .aether/stats; without --json, one line per operation.\n\nExamples:\n  aetherfs stats work\n  aetherfs stats work --json")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session (mounted).", completion: Completions.sessions) var session: String

    func run() throws {
        let repo = try global.open(create: false)
        let text = try fail { () throws(AetherError) -> String in
            let s = try repo.session(named: session)
            guard let mount = repo.mountpoint(of: s) else { throw .invalid("session \(session) is not mounted: only a daemon has stats") }
            do {
                return String(decoding: try FileIO.readFile(mount + "/.aether/stats"), as: UTF8.self)
            } catch {
                throw .system(errno, "cannot read \(mount)/.aether/stats: \(error)")
            }
        }
        if global.json { say(text.trimmingWhitespace()); return }
        guard let stats = JSONText.decoded(RequestStats.Snapshot.self, text) else { say(text); return }
        var lines = ["since \(stats.since): \(stats.bytesRead) bytes read, \(stats.bytesWritten) written; chunk cache \(stats.cache.chunkHits) hits, \(stats.cache.chunkMisses) misses"]
        for (op, l) in stats.requests.sorted(by: { $0.value.count > $1.value.count }) {
            lines.append("\(op.padding(toLength: 16, withPad: " ", startingAt: 0)) \(l.count) requests, \(l.errors) errors, p50 \(l.p50Us) µs, p99 \(l.p99Us) µs, max \(l.maxUs) µs")
        }
        say(lines.joined(separator: "\n"))
    }
}
