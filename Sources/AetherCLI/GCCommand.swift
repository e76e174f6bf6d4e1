import Foundation
import ArgumentParser
import AetherModel
import AetherCore

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Delete the objects nothing reaches, safely while sessions are mounted and written.",
        discussion: """
        Unreachable objects older than --min-age, and older than every write in flight (a checkpoint, an import), are \
        condemned: moved aside, still readable. The reachable set is then marked again: a condemned object found \
        reachable is put back, the rest are deleted once no write in flight began before they were condemned (else a \
        later run deletes them). Safety rests on those leases of writes in flight, not on the window; the window keeps \
        what was just written for a while. Files sessions no longer need (what a crash left in a session no process \
        holds, a retired session's spares, a deleted session's directory) go too. --dry-run prints what a run would \
        delete and changes nothing.

        Examples:
          aetherfs gc --dry-run
          aetherfs gc --min-age 10m --json
        """)
    @OptionGroup var global: GlobalOptions
    @Flag(name: .long, help: "Only say what would be deleted.") var dryRun = false
    @Option(name: .long, help: "Keep unreachable objects younger than this (e.g. 0s, 30m, 1h, 2d; default 1h).") var minAge = "1h"

    func run() throws {
        let repo = try global.open(create: false)
        let report = try fail { () throws(AetherError) -> CollectReport in
            let age = try GCCommand.seconds(minAge)
            return try repo.collect(dryRun: dryRun, minAge: age) { line in if !global.json { printProgress(line) } }
        }
        if !global.json { clearProgress() }
        if global.json { say(JSONText.encode(report)); return }
        let mib = { (b: Int64) in String(format: "%.1f MiB", Double(b) / 1_048_576) }
        if dryRun {
            say("gc would delete \(report.deleted) objects (\(mib(report.deletedBytes))) and condemn \(report.condemned) (\(mib(report.condemnedBytes))), "
                + "and remove \(report.sessionFiles) session files (\(mib(report.sessionFileBytes))); "
                + "\(report.reachable) reachable, \(report.keptYoung) kept as younger than \(minAge), \(report.keptInFlight) newer than a write in flight")
        } else {
            say("gc deleted \(report.deleted) objects (\(mib(report.deletedBytes))), condemned \(report.condemned), put back \(report.resurrected), "
                + "removed \(report.sessionFiles) session files (\(mib(report.sessionFileBytes))); "
                + "\(report.reachable) reachable, \(report.keptYoung) kept as younger than \(minAge), \(report.keptInFlight) newer than a write in flight"
                + (report.packsDeleted + report.packsRewritten > 0
                   ? "; \(report.packsDeleted) packs deleted and \(report.packsRewritten) rewritten (\(mib(report.packBytesFreed)) of object storage freed)" : ""))
        }
    }

    static func seconds(_ text: String) throws(AetherError) -> Double {
        guard let span = TimeSpan(text) else { throw .invalid("--min-age \(text): \(TimeSpan.form)") }
        return span.seconds
    }
}
