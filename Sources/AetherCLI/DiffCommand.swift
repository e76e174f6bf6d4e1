#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff", abstract: "Show what changed between two snapshots, or a snapshot and a live session.",
        discussion: "Each side is a snapshot reference (checkpoint id, SESSION@CHECKPOINT, branch, commit id) or a session's name for its live state.\n\nExamples:\n  aetherfs diff work@green work\n  aetherfs diff main try-b --stat")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The older side.", completion: Completions.refs) var from: String
    @Argument(help: "The newer side.", completion: Completions.refs) var to: String
    @Flag(name: .long, help: "Only count the changes.") var stat = false

    func run() throws {
        let repo = try global.open(create: false)
        let changes = try fail { () throws(AetherError) -> [Change] in try repo.diff(try SessionAccess.root(repo, from), try SessionAccess.root(repo, to)) }
        if global.json {
            say(JSONText.encode(changes.map(ChangeInfo.init)))
            return
        }
        if stat {
            let count = { (k: Change.Kind) in changes.filter { $0.kind == k }.count }
            say("\(count(.added)) added, \(count(.deleted)) deleted, \(count(.modified)) modified, \(count(.renamed)) renamed")
            return
        }
        let lines = changes.map { ChangeInfo($0).line }
        if !lines.isEmpty { say(lines.joined(separator: "\n")) }
    }
}
