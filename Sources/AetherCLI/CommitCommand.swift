#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "commit", abstract: "Record a session's state as a commit on a branch (a fast-forward only).", discussion: "Examples:\n  aetherfs commit work -m \"tests pass\"\n  aetherfs commit try-b -m \"winner\" --branch release --meta reviewer=ana")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session.") var session: String
    @Option(name: .shortAndLong, help: "The commit message (required).") var message: String
    @Option(name: .long, help: "The branch to advance (default main; created when absent).") var branch = "main"
    @Option(name: .long, help: "Metadata as key=value (repeatable).") var meta: [String] = []
    @Flag(name: .long, help: "Commit even when nothing changed since the branch's head.") var allowEmpty = false

    func run() throws {
        let repo = try global.open(create: false)
        let made = try fail { () throws(AetherError) -> SnapshotInfo in
            let request = CommitRequest(message: message, branch: branch, meta: try SessionAccess.meta(meta), allowEmpty: allowEmpty)
            return try SessionAccess.act(repo, session: session, .commit(request)).snapshot()
        }
        say(global.json ? JSONText.encode(made) : "committed \(made.id) on \(branch)")
    }
}
