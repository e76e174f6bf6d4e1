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
    @Argument(help: "The session.") var session: String
    @Option(name: .shortAndLong, help: "What the checkpoint holds (required).") var message: String
    @Option(name: .long, help: "A name for the checkpoint (default cp-N).") var name: String?
    @Option(name: .long, help: "Metadata as key=value (repeatable).") var meta: [String] = []

    func run() throws {
        let repo = try global.open(create: false)
        let (metadata, payload) = try fail { () throws(AetherError) in
            let metadata = try SessionAccess.meta(meta)
            _ = try Workspace.validateRecord(message: message, meta: metadata, what: "a checkpoint")
            return (metadata, JSONText.encode(ControlPayload(message: message, name: name, meta: metadata)))
        }
        let made = try fail { () throws(AetherError) -> SnapshotInfo in
            try SessionAccess.act(repo, session: session, file: "checkpoint", payload: payload) { (ws) throws(AetherError) in
                SnapshotInfo(try ws.checkpoint(CheckpointRequest(message: message, name: name, meta: metadata), author: getuid()))
            }
        }
        say(global.json ? JSONText.encode(made) : "checkpoint \(made.name) (\(made.id)) of session \(session)")
    }
}
