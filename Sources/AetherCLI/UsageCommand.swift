import Foundation
import ArgumentParser
import AetherModel
import AetherCore

struct UsageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage", abstract: "What each session costs: bytes it references, only it references, and shares; the store's totals.",
        discussion: "Exclusive bytes are what deleting the session would free once gc runs: chunks no other session, commit or open proposal reaches. Bytes are of chunks before compression; stored and reclaimable are as stored. Computed from trees and manifests, never from file data.\n\nExamples:\n  aetherfs usage\n  aetherfs usage work --checkpoints --json")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The sessions (default: all).", completion: Completions.sessions) var sessions: [String] = []
    @Flag(name: .long, help: "Also each checkpoint's bytes (exclusive: no other checkpoint or owner reaches them).") var checkpoints = false

    func run() throws {
        let repo = try global.open(create: false)
        let report = try fail { () throws(AetherError) in try repo.usage(of: sessions, checkpoints: checkpoints) }
        if global.json { say(JSONText.encode(report)); return }
        func mb(_ n: Int64) -> String { n >= 10 << 20 ? "\(n >> 20) MiB" : "\(n >> 10) KiB" }
        var lines = ["session  referenced  exclusive  shared"]
        for l in report.sessions {
            lines.append("\(l.name)  \(mb(l.referenced))  \(mb(l.exclusive))  \(mb(l.shared))")
            for c in l.checkpoints ?? [] { lines.append("  @\(c.name)  \(mb(c.referenced))  \(mb(c.exclusive))  \(mb(c.shared))") }
        }
        lines.append(String(format: "store: %@ logical, %@ referenced (dedup %.2fx), %@ stored, %@ reclaimable by gc",
                            mb(report.logical), mb(report.referenced), report.dedupRatio, mb(report.stored), mb(report.reclaimable)))
        say(lines.joined(separator: "\n"))
    }
}
