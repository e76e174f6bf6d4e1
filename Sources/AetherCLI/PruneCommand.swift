import Foundation
import ArgumentParser
import AetherModel
import AetherCore

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Apply the policy's retention rules: remove old checkpoints, retire idle sessions, delete retired ones.",
        discussion: """
        The rules are the policy's "retention" (aetherfs policy set): keep_last and keep_within keep each live \
        session's newest checkpoints and those younger than a time, keep_named (default true) those named by their \
        author; idle_ttl retires a session unused that long, retired_ttl deletes one retired that long ago, losers_ttl \
        (default retired_ttl) one a promotion retired. Never removed: commits, a checkpoint a session, fork or open \
        proposal builds on, a session something builds on or a process holds. Each line says what goes or stays and \
        by which rule; the objects they alone held are freed by the next gc. Acts on the caller's sessions (root: all).

        Examples:
          aetherfs prune --dry-run
          aetherfs prune --json
        """)
    @OptionGroup var global: GlobalOptions
    @Flag(name: .long, help: "Only say what would be removed, and what is kept and why.") var dryRun = false

    func run() throws {
        let repo = try global.open(create: false)
        let report = try fail { () throws(AetherError) in try repo.prune(dryRun: dryRun, uid: getuid()) }
        if global.json { say(JSONText.encode(report)); return }
        guard report.rules else { say("prune: the policy sets no retention rule; nothing to do (see aetherfs policy set)"); return }
        var lines: [String] = []
        for i in report.items {
            let action = dryRun && i.action != "keep" ? "would \(i.action)" : i.action
            let name = i.checkpoint.map { "\(i.session)@\($0)" } ?? i.session
            lines.append("\(action)  \(i.what) \(name)  [\(i.rule)] \(i.reason)")
        }
        let verb = dryRun ? "would remove" : "removed"
        lines.append("prune: \(verb) \(report.removed) checkpoint(s), \(dryRun ? "would retire" : "retired") \(report.retired) session(s), "
                     + "\(dryRun ? "would delete" : "deleted") \(report.deleted); \(report.items.count { $0.action == "keep" }) kept"
                     + (dryRun || report.removed + report.deleted == 0 ? "" : "; run aetherfs gc to free what they alone held"))
        say(lines.joined(separator: "\n"))
    }
}
