#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "log", abstract: "Show the commits of a branch (or reachable from a commit), newest first.", discussion: "Examples:\n  aetherfs log\n  aetherfs log release -n 5")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A branch or commit (default main).", completion: Completions.branches) var ref = "main"
    @Option(name: .shortAndLong, help: "At most this many commits.") var number = 10_000

    func run() throws {
        let repo = try global.open(create: false)
        let list = try fail { () throws(AetherError) in try repo.history(ref, limit: number) }
        say(global.json ? JSONText.encode(list.map(SnapshotInfo.init)) : list.map(formatLogLine).joined())
    }
}
