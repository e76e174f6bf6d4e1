#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

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
                say(JSONText.encode(all.map { BranchInfo(name: $0.name, head: SnapshotInfo($0.head)) }))
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
            say(global.json ? JSONText.encode(BranchInfo(name: name, head: SnapshotInfo(head))) : "created branch \(name) at \(from) (\(head.sid))")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a branch (its commits stay while something reaches them).", discussion: "Example:\n  aetherfs branch delete release")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The branch.", completion: Completions.branches) var name: String
        func run() throws {
            let repo = try global.open(create: false)
            try fail { () throws(AetherError) in try repo.deleteBranch(name, uid: getuid()) }
            say(global.json ? JSONText.encode(["deleted": ["branch": name]]) : "deleted branch \(name)")
        }
    }
}
