#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct CheckpointsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoints", abstract: "List a session's checkpoints, newest first.", discussion: "Example:\n  aetherfs checkpoints work --json")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session.", completion: Completions.sessions) var session: String

    func run() throws {
        let repo = try global.open(create: false)
        let list = try fail { () throws(AetherError) in try repo.checkpoints(of: try repo.session(named: session)) }
        if global.json { say(JSONText.encode(list.reversed().map(SnapshotInfo.init))); return }
        if list.isEmpty { say("no checkpoints in session \(session)"); return }
        say(list.reversed().map(formatLogLine).joined())
    }
}
