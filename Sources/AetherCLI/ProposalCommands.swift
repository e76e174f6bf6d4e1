#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct ProposeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "propose", abstract: "Freeze a session's state and put it forward for review (a proposal bound to that root).",
        discussion: "Later edits in the session do not change the proposal; proposing again makes a new one. Inside a mount: echo \"msg\" > .aether/propose.\n\nExamples:\n  aetherfs propose work -m \"fix the parser\" --meta ticket=T-12\n  aetherfs propose work -m \"release notes\" --branch release --title \"1.4 notes\"")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session.", completion: Completions.sessions) var session: String
    @Option(name: .shortAndLong, help: "What the work is (required).") var message: String
    @Option(name: .long, help: "A one-line title (default: the message's first line).") var title: String?
    @Option(name: .long, help: "The branch it is meant for.") var branch = CommitRequest.defaultBranch
    @Option(name: .long, help: "Metadata as key=value (repeatable).") var meta: [String] = []

    func run() throws {
        let repo = try global.open(create: false)
        let p = try fail { () throws(AetherError) -> ProposalInfo in
            let request = ProposeRequest(message: message, title: title, branch: branch, meta: try SessionAccess.meta(meta))
            return try SessionAccess.act(repo, session: session, .propose(request)).proposal()
        }
        say(global.json ? JSONText.encode(p) : "proposal \(p.id) of session \(p.session) for \(p.branch): root \(p.root.prefix(16)), \(p.state)")
    }
}

struct ProposalsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proposals", abstract: "List proposals.",
        discussion: "Examples:\n  aetherfs proposals\n  aetherfs proposals --state open --json")
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "Only proposals in this state (open, approved, rejected, committed, withdrawn).") var state: String?

    func run() throws {
        let repo = try global.open(create: false)
        let list = try fail { () throws(AetherError) -> [ProposalInfo] in
            if let state, ProposalState(rawValue: state) == nil {
                throw .invalid("--state \(state): expected \(ProposalState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return try domain { try repo.metadata.proposals() }.filter { state == nil || $0.state.rawValue == state }.map { (p) throws(AetherError) in try repo.info(p) }
        }
        if global.json { say(JSONText.encode(list)); return }
        for p in list {
            say("\(p.id)  \(p.state.padding(toLength: 9, withPad: " ", startingAt: 0))  \(p.session) -> \(p.branch)  \(p.approvals)/\(p.approvalsNeeded) approvals  uid \(p.author)  \(p.title)")
        }
    }
}

struct ProposalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proposal", abstract: "Show or withdraw a proposal.",
        subcommands: [Show.self, Withdraw.self])

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a proposal, its reviews and what it changes against its branch's head.",
            discussion: "Example:\n  aetherfs proposal show 3f2a")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The proposal's id (or a unique prefix of 4+ hex digits).", completion: Completions.proposals) var id: String

        func run() throws {
            let repo = try global.open(create: false)
            let (p, changes) = try fail { () throws(AetherError) -> (ProposalInfo, [Change]) in
                let record = try repo.resolveProposal(id)
                let head = try domain { try repo.metadata.branch(record.branch) }.flatMap { try? repo.metadata.snapshot(id: $0) }
                return (try repo.info(record), try repo.diff(head?.root, record.root))
            }
            if global.json {
                struct Shown: Encodable { var proposal: ProposalInfo; var changes: [ChangeInfo] }
                say(JSONText.encode(Shown(proposal: p, changes: changes.map(ChangeInfo.init))))
                return
            }
            var lines = ["proposal \(p.id): \(p.title)", "state     \(p.state) (\(p.approvals) of \(p.approvalsNeeded) approvals count)",
                         "session   \(p.session) (checkpoint \(p.checkpoint)), author uid \(p.author)",
                         "branch    \(p.branch), base \(p.baseCommit ?? "none"), root \(p.root)", "created   \(p.created)"]
            if !p.meta.isEmpty { lines.append("meta      " + p.meta.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) }
            lines.append("")
            lines.append(p.message)
            for r in p.reviews {
                lines.append("review: uid \(r.reviewer) \(r.verdict)s at \(r.time)\(r.counts ? "" : " (does not count)")\(r.comment.isEmpty ? "" : ": \(r.comment)")")
            }
            lines.append("changes against \(p.branch)'s head:")
            lines += changes.map { "  " + ChangeInfo($0).line }
            say(lines.joined(separator: "\n"))
        }
    }

    struct Withdraw: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Withdraw a proposal (its author only).", discussion: "Example:\n  aetherfs proposal withdraw 3f2a")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The proposal's id.", completion: Completions.proposals) var id: String

        func run() throws {
            let repo = try global.open(create: false)
            let p = try fail { () throws(AetherError) in try repo.info(try repo.withdraw(id, uid: getuid())) }
            say(global.json ? JSONText.encode(p) : "proposal \(p.id) withdrawn")
        }
    }
}

struct ReviewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "review", abstract: "Approve or reject a proposal (from the CLI only: no control file approves).",
        discussion: "The review is bound to the proposal's root, and signed with the reviewer's key when it has one (aetherfs key create). The author, and any uid that changed the session's files, may not approve unless the policy allows self-approval.\n\nExamples:\n  aetherfs review 3f2a --approve -m \"looks right\"\n  aetherfs review 3f2a --reject -m \"tests missing\"")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The proposal's id.", completion: Completions.proposals) var id: String
    @Flag(name: .long, help: "Approve it.") var approve = false
    @Flag(name: .long, help: "Reject it.") var reject = false
    @Option(name: .shortAndLong, help: "A comment.") var message = ""

    func validate() throws {
        guard approve != reject else { throw ValidationError("give one of --approve or --reject") }
    }

    func run() throws {
        let repo = try global.open(create: false)
        let p = try fail { () throws(AetherError) in
            try repo.info(try repo.review(id, approve: approve, comment: message, reviewer: getuid(), key: try Approvals.loadKey()))
        }
        say(global.json ? JSONText.encode(p) : "proposal \(p.id) \(approve ? "approved" : "rejected") by uid \(getuid()); it is \(p.state) (\(p.approvals) of \(p.approvalsNeeded) approvals)")
    }
}
