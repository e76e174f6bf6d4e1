import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Check the whole store; report each problem with what it affects (exit 1 when any).",
        discussion: "Examples:\n  aetherfs verify\n  aetherfs verify --read-data --store /srv/aether\n  aetherfs verify --approvals")
    @OptionGroup var global: GlobalOptions
    @Flag(name: .long, help: "Also read every chunk and check its hash (slower).") var readData = false
    @Flag(name: .long, help: "Check every commit's signed approvals against the reviewers' public keys and the policy instead.") var approvals = false

    func run() throws {
        let repo = try global.open(create: false)
        if approvals {
            let (checked, problems) = try fail { () throws(AetherError) in try repo.verifyApprovals() }
            if global.json {
                struct Approvals: Encodable { var checked: Int; var problems: [[String: String]] }
                say(JSONText.encode(Approvals(checked: checked, problems: problems.map { ["commit": $0.commit, "problem": $0.problem] })))
            } else {
                for p in problems { say("problem: commit \(p.commit): \(p.problem)") }
                say(problems.isEmpty ? "the approvals of \(checked) commit(s) of proposals verify" : "\(problems.count) problem(s) with approvals")
            }
            if !problems.isEmpty { throw ExitCode(1) }
            return
        }
        let report = try fail { () throws(AetherError) in
            let meter = ProgressMeter(verb: "verify")
            return try repo.verify(readData: readData) { done, total, bytes in
                if !global.json { meter.show(done: done, total: total, what: "snapshots and sessions", bytes: bytes) }
            }
        }
        if !global.json { clearProgress() }
        if global.json {
            say(JSONText.encode(VerifyInfo(clean: report.problems.isEmpty, trees: report.trees, manifests: report.manifests,
                                           chunks: report.chunks,
                                           problems: report.problems.map { .init(problem: $0.what, affects: $0.affects) })))
        } else {
            for p in report.problems { say("problem: \(p)") }
            say(report.problems.isEmpty
                ? "store \(repo.path) is clean: \(report.trees) trees, \(report.manifests) manifests, \(report.chunks) chunks\(readData ? " read and" : "") checked"
                : "\(report.problems.count) problem\(report.problems.count == 1 ? "" : "s") in store \(repo.path)")
        }
        if !report.problems.isEmpty { throw ExitCode(1) }
    }
}
