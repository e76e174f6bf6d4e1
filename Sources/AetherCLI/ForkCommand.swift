#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

struct ForkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fork", abstract: "Create a new session from a session's current state or one of its checkpoints.", discussion: "Examples:\n  aetherfs fork work try-b\n  aetherfs fork work try-c --at green")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session to fork.", completion: Completions.sessions) var session: String
    @Argument(help: "The new session's name.") var name: String
    @Option(name: .long, help: "Fork from this checkpoint of the session instead of its current state.") var at: String?

    func run() throws {
        let repo = try global.open(create: false)
        let made = try fail { () throws(AetherError) -> SessionSummary in
            try SessionAccess.act(repo, session: session, .fork(ForkRequest(name: name, at: at))).session()
        }
        say(global.json ? JSONText.encode(made) : "forked session \(session) as \(name)")
    }
}
