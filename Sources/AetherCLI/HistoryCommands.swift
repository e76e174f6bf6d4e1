#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherCore
import AetherMeta
import AetherStore
import AetherVFS

struct ForkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fork", abstract: "Create a new session from a session's current state or one of its checkpoints.", discussion: "Examples:\n  aetherfs fork work try-b\n  aetherfs fork work try-c --at green")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session to fork.") var session: String
    @Argument(help: "The new session's name.") var name: String
    @Option(name: .long, help: "Fork from this checkpoint of the session instead of its current state.") var at: String?

    func run() throws {
        let repo = try global.open(create: false)
        let json = try fail { () throws(AetherError) -> String in
            try Repository.validateName(name, what: "session")
            return try SessionAccess.act(repo, session: session, file: "fork", payload: name + (at.map { "@" + $0 } ?? "")) { (ws) throws(AetherError) in
                sessionSummaryJSON(try ws.fork(name: name, at: at, owner: getuid()))
            }
        }
        say(global.json ? json : "forked session \(session) as \(name)")
    }
}

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
        let (metadata, payload) = try fail { () throws(AetherError) in
            let metadata = try SessionAccess.meta(meta)
            _ = try Workspace.validateRecord(message: message, meta: metadata, what: "a commit")
            return (metadata, SessionAccess.object([("message", message), ("branch", branch)], meta: metadata,
                                                   extra: allowEmpty ? "\"allow_empty\":true" : ""))
        }
        let json = try fail { () throws(AetherError) -> String in
            try SessionAccess.act(repo, session: session, file: "commit", payload: payload) { (ws) throws(AetherError) in
                snapshotJSON(try ws.commit(CommitRequest(message: message, branch: branch, meta: metadata, allowEmpty: allowEmpty), author: getuid()))
            }
        }
        say(global.json ? json : "committed \(field(json, "id")) on \(branch)")
    }
}

struct BranchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "branch", abstract: "List, create and delete branches.",
                                                    subcommands: [List.self, Create.self, Delete.self], defaultSubcommand: List.self)

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List branches and their head commits.", discussion: "Example:\n  aetherfs branch list --json")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            let repo = try global.open(create: false)
            let all = try fail { () throws(AetherError) in try repo.branches() }
            if global.json {
                say("[" + all.map { "{\"name\":\(jsonString($0.name)),\"head\":\(snapshotJSON($0.head))}" }.joined(separator: ",") + "]")
            } else if all.isEmpty {
                say("no branches")
            } else {
                say(all.map { "\($0.name)  \($0.head.sid)  \(isoTime($0.head.time))  \($0.head.message.split(separator: "\n").first ?? "")" }.joined(separator: "\n"))
            }
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a branch at a commit.", discussion: "Example:\n  aetherfs branch create release --from main")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The new branch.") var name: String
        @Option(name: .long, help: "A branch or commit id (default main).") var from = "main"
        func run() throws {
            let repo = try global.open(create: false)
            let head = try fail { () throws(AetherError) -> SnapshotRecord in
                try repo.createBranch(name, at: from, uid: getuid())
                return try repo.resolveSnapshot(name, session: nil)
            }
            say(global.json ? "{\"name\":\(jsonString(name)),\"head\":\(snapshotJSON(head))}" : "created branch \(name) at \(from) (\(head.sid))")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a branch (its commits stay while something reaches them).", discussion: "Example:\n  aetherfs branch delete release")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The branch.") var name: String
        func run() throws {
            let repo = try global.open(create: false)
            try fail { () throws(AetherError) in try repo.deleteBranch(name, uid: getuid()) }
            say(global.json ? "{\"deleted\":{\"branch\":\(jsonString(name))}}" : "deleted branch \(name)")
        }
    }
}

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "log", abstract: "Show the commits of a branch (or reachable from a commit), newest first.", discussion: "Examples:\n  aetherfs log\n  aetherfs log release -n 5")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A branch or commit (default main).") var ref = "main"
    @Option(name: .shortAndLong, help: "At most this many commits.") var number = 10_000

    func run() throws {
        let repo = try global.open(create: false)
        let list = try fail { () throws(AetherError) in try repo.history(ref, limit: number) }
        say(global.json ? "[" + list.map(snapshotJSON).joined(separator: ",") + "]" : list.map(formatLogLine).joined())
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a snapshot's record and its top-level entries.", discussion: "Examples:\n  aetherfs show main\n  aetherfs show work@green")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A checkpoint id, SESSION@CHECKPOINT, a branch or a commit id.") var snapshot: String

    func run() throws {
        let repo = try global.open(create: false)
        let (record, tree) = try fail { () throws(AetherError) -> (SnapshotRecord, Tree) in
            let r = try repo.resolveSnapshot(snapshot, session: nil)
            return (r, try repo.tree(ObjectID(bytes: r.root)!))
        }
        if global.json { say(snapshotJSON(record)); return }
        let session = (try? repo.catalog.session(id: record.session))??.name ?? "?"
        var text = """
            \(record.kind) \(record.sid) (\(record.name))
            session \(session)   author uid \(record.author)   \(isoTime(record.time))
            root    \(ObjectID(bytes: record.root)!.hex)
            meta    \(record.meta)

                \(record.message.split(separator: "\n").joined(separator: "\n    "))

            """
        for e in tree.entries {
            text += "\(e.kind == .directory ? "d" : e.kind == .symlink ? "l" : "-")  \(String(decoding: e.name, as: UTF8.self))\(e.kind == .directory ? "/" : "")\n"
        }
        say(text)
    }
}

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff", abstract: "Show what changed between two snapshots, or a snapshot and a live session.",
        discussion: "Each side is a snapshot reference (checkpoint id, SESSION@CHECKPOINT, branch, commit id) or a session's name for its live state.\n\nExamples:\n  aetherfs diff work@green work\n  aetherfs diff main try-b --stat")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The older side.") var from: String
    @Argument(help: "The newer side.") var to: String
    @Flag(name: .long, help: "Only count the changes.") var stat = false

    func run() throws {
        let repo = try global.open(create: false)
        let changes = try fail { () throws(AetherError) -> [Change] in try repo.diff(try root(repo, from), try root(repo, to)) }
        func text(_ p: [UInt8]) -> String { String(decoding: p, as: UTF8.self) }
        if global.json {
            say("[" + changes.map { c in
                "{\"change\":\(jsonString(c.kind.rawValue)),\"path\":\(jsonString(text(c.path)))"
                    + (c.from.map { ",\"from\":\(jsonString(text($0)))" } ?? "")
                    + (c.aspects.isEmpty ? "" : ",\"aspects\":[" + c.aspects.map(jsonString).joined(separator: ",") + "]") + "}"
            }.joined(separator: ",") + "]")
            return
        }
        if stat {
            let count = { (k: Change.Kind) in changes.filter { $0.kind == k }.count }
            say("\(count(.added)) added, \(count(.deleted)) deleted, \(count(.modified)) modified, \(count(.renamed)) renamed")
            return
        }
        let letters: [Change.Kind: String] = [.added: "A", .deleted: "D", .modified: "M", .renamed: "R"]
        let lines = changes.map { c in
            "\(letters[c.kind]!)  " + (c.from.map { text($0) + " -> " } ?? "") + text(c.path) + (c.aspects.isEmpty ? "" : "  (\(c.aspects.joined(separator: ", ")))")
        }
        if !lines.isEmpty { say(lines.joined(separator: "\n")) }
    }

    /// A snapshot's root, or a live session's current root (asked of its daemon when it is mounted).
    func root(_ repo: Repository, _ ref: String) throws(AetherError) -> ObjectID {
        do {
            return ObjectID(bytes: try repo.resolveSnapshot(ref, session: nil).root)!
        } catch {
            guard case .notFound = error, let s = try? repo.session(named: ref) else { throw error }
            if let mount = repo.mountpoint(of: s) {
                guard let value = FileIO.xattr(mount, "user.aether.root"), let id = ObjectID(hex: String(decoding: value, as: UTF8.self)) else {
                    throw .system(errno, "cannot read the live state of session \(ref) at \(mount)")
                }
                return id
            }
            return try SessionAccess.direct(repo, s) { (ws) throws(AetherError) in try ws.currentRoot() }
        }
    }
}
