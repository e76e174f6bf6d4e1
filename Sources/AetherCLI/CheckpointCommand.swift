#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherCore
import AetherMeta
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
            return (metadata, SessionAccess.object([("message", message), ("name", name)], meta: metadata))
        }
        let json = try fail { () throws(AetherError) -> String in
            try SessionAccess.act(repo, session: session, file: "checkpoint", payload: payload) { (ws) throws(AetherError) in
                snapshotJSON(try ws.checkpoint(CheckpointRequest(message: message, name: name, meta: metadata), author: getuid()))
            }
        }
        say(global.json ? json : "checkpoint \(field(json, "name")) (\(field(json, "id"))) of session \(session)")
    }
}
