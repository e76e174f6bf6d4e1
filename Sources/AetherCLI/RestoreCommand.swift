#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Make a session's tree that of one of its checkpoints.", discussion: "Examples:\n  aetherfs restore work green\n  aetherfs restore work 3f2a")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session.", completion: Completions.sessions) var session: String
    @Argument(help: "A checkpoint name or id.", completion: Completions.checkpoints) var checkpoint: String

    func run() throws {
        let repo = try global.open(create: false)
        let restored = try fail { () throws(AetherError) -> SnapshotInfo in
            try SessionAccess.act(repo, session: session, .restore(RestoreRequest(checkpoint: checkpoint))).snapshot()
        }
        say(global.json ? JSONText.encode(restored) : "restored session \(session) to \(restored.name) (\(restored.id))")
    }
}
