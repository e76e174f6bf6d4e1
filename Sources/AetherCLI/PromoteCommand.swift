#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct PromoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "promote", abstract: "Commit the winning fork and retire its sibling forks, in one step.",
        discussion: "Siblings are the other forks of the winner's parent that build on the same commit; they stay readable until retention removes them. Under a policy that needs proposals, promote an approved proposal of the winner (--proposal).\n\nExamples:\n  aetherfs promote try-b -m \"the faster parser\"\n  aetherfs promote try-b --proposal 3f2a")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The winning fork.", completion: Completions.sessions) var winner: String
    @Option(name: .shortAndLong, help: "The commit's message (default: \"promote WINNER\", or the proposal's).") var message: String?
    @Option(name: .long, help: "The branch to advance.") var branch = CommitRequest.defaultBranch
    @Option(name: .long, help: "Metadata as key=value (repeatable).") var meta: [String] = []
    @Option(name: .long, help: "Promote this approved proposal of the winner.") var proposal: String?

    func run() throws {
        let repo = try global.open(create: false)
        let made = try fail { () throws(AetherError) -> SnapshotInfo in
            let request = CommitRequest(message: message ?? (proposal == nil ? "promote \(winner)" : ""), branch: branch,
                                        meta: try SessionAccess.meta(meta), proposal: proposal)
            return try SessionAccess.act(repo, session: winner, .promote(request)).snapshot()
        }
        if global.json { say(JSONText.encode(made)); return }
        let over = made.meta["promoted_over"].map { "; retired \($0)" } ?? "; no sibling forks to retire"
        say("promoted \(winner): committed \(made.id)\(over)")
    }
}
