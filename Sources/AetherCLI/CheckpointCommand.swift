#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoint", abstract: "Record a session's current state as a checkpoint.", discussion: "Examples:\n  aetherfs checkpoint work -m \"before the refactor\"\n  aetherfs checkpoint work -m nightly --name n-42 --meta job=42")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session.", completion: Completions.sessions) var session: String
    @Option(name: .shortAndLong, help: "What the checkpoint holds (required).") var message: String
    @Option(name: .long, help: "A name for the checkpoint (default cp-N).") var name: String?
    @Option(name: .long, help: "Metadata as key=value (repeatable).") var meta: [String] = []

    func run() throws {
        let repo = try global.open(create: false)
        let made = try fail { () throws(AetherError) -> SnapshotInfo in
            let request = CheckpointRequest(message: message, name: name, meta: try SessionAccess.meta(meta))
            return try SessionAccess.act(repo, session: session, .checkpoint(request)).snapshot()
        }
        say(global.json ? JSONText.encode(made) : "checkpoint \(made.name) (\(made.id)) of session \(session)")
    }
}
