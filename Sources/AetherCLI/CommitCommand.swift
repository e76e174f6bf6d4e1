#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "commit", abstract: "Record a session's state as a commit on a branch (a fast-forward only).", discussion: "With --proposal, the approved proposal's frozen root is committed to its branch (not the session's live tree).\n\nExamples:\n  aetherfs commit work -m \"tests pass\"\n  aetherfs commit try-b -m \"winner\" --branch release --meta reviewer=ana\n  aetherfs commit --proposal 3f2a")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session (with --proposal: the proposal's, when omitted).", completion: Completions.sessions) var session: String?
    @Option(name: .shortAndLong, help: "The commit message (required, but for a proposal's: its message by default).") var message: String?
    @Option(name: .long, help: "Commit this approved proposal.") var proposal: String?
    @Option(name: .long, help: "The branch to advance (default main; created when absent).") var branch = "main"
    @Option(name: .long, help: "Metadata as key=value (repeatable).") var meta: [String] = []
    @Flag(name: .long, help: "Commit even when nothing changed since the branch's head.") var allowEmpty = false

    func validate() throws {
        if proposal == nil && session == nil { throw ValidationError("give the session (or --proposal ID)") }
        if proposal == nil && message == nil { throw ValidationError("a commit needs a message (-m MSG)") }
    }

    func run() throws {
        let repo = try global.open(create: false)
        let made = try fail { () throws(AetherError) -> SnapshotInfo in
            var target = session
            var toBranch = branch
            if let proposal {
                let p = try repo.resolveProposal(proposal)
                let owner = try domain { try repo.metadata.session(id: p.session) }
                guard let owner else { throw .notFound("the session of proposal \(p.pid)") }
                if let session, session != owner.name { throw .invalid("proposal \(p.pid) is of session \(owner.name), not \(session)") }
                target = owner.name
                if branch == CommitRequest.defaultBranch { toBranch = p.branch }
            }
            let request = CommitRequest(message: message ?? "", branch: toBranch, meta: try SessionAccess.meta(meta), allowEmpty: allowEmpty,
                                        proposal: proposal)
            return try SessionAccess.act(repo, session: target ?? "", .commit(request)).snapshot()
        }
        say(global.json ? JSONText.encode(made) : "committed \(made.id)" + " on \(made.branch ?? branch)" + (proposal.map { " (proposal \($0))" } ?? ""))
    }
}
