#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import ArgumentParser
import MCP
import AetherModel
import AetherCore
import AetherVFS
import AetherStore

struct McpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp", abstract: "A Model Context Protocol server over standard input and output, for agents.",
        discussion: "Its tools are the session actions an agent needs: status, checkpoint, restore, fork, diff, log and propose (never review). Each takes a \"session\" argument (default: --session) and runs the use case the CLI runs, with its errors and audit.\n\nExample (an MCP client's server entry):\n  {\"command\": \"aetherfs\", \"args\": [\"mcp\", \"--session\", \"work\"]}")
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "The session the tools act on when a call names none.", completion: Completions.sessions) var session: String?

    func run() throws {
        let repo = try global.open(create: false)
        let tools = AgentTools(repo: repo, session: session)
        let done = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        Task {
            do {
                let server = Server(name: "aetherfs", version: Repository.softwareVersion, capabilities: .init(tools: .init(listChanged: false)))
                await server.withMethodHandler(ListTools.self) { _ in .init(tools: AgentTools.list) }
                await server.withMethodHandler(CallTool.self) { params in tools.call(params.name, params.arguments ?? [:]) }
                try await server.start(transport: StdioTransport())
                await server.waitUntilCompleted()
            } catch {
                failure.set("\(error)")
            }
            done.signal()
        }
        done.wait()
        if let message = failure.get() { printError("mcp: \(message)"); throw ExitCode(1) }
    }
}

final class FailureBox: @unchecked Sendable {
    private let lock = Lock()
    private var message: String?
    func set(_ m: String) { lock.withLock { message = m } }
    func get() -> String? { lock.withLock { message } }
}

/// The MCP tools: each decodes its arguments, runs the use case the CLI runs, and answers its JSON
/// (or the error line the CLI would print, with `isError`).
struct AgentTools: Sendable {
    let repo: Repository
    let session: String?

    static func schema(_ properties: [String: String], required: [String] = []) -> Value {
        var props: [String: Value] = ["session": .object(["type": "string", "description": "The session (default: the server's --session)."])]
        for (k, v) in properties { props[k] = .object(["type": "string", "description": .string(v)]) }
        return .object(["type": "object", "properties": .object(props), "required": .array(required.map { .string($0) })])
    }

    static let list: [Tool] = [
        Tool(name: "status", description: "The session: its head checkpoint, where it is mounted, what changed since its last checkpoint (when mounted).",
             inputSchema: schema([:]), annotations: .init(readOnlyHint: true)),
        Tool(name: "checkpoint", description: "Save the session's current tree as a durable checkpoint.",
             inputSchema: schema(["message": "What the checkpoint holds (required).", "name": "A name for it (default cp-N)."], required: ["message"])),
        Tool(name: "restore", description: "Make the session's tree that of one of its checkpoints (changes since the last checkpoint are discarded).",
             inputSchema: schema(["checkpoint": "A checkpoint's name or id."], required: ["checkpoint"]), annotations: .init(destructiveHint: true)),
        Tool(name: "fork", description: "A new session from this one's current state (or a checkpoint's), in O(1).",
             inputSchema: schema(["name": "The new session's name.", "at": "A checkpoint of this session (default: the current state)."], required: ["name"])),
        Tool(name: "diff", description: "What changed between two snapshot references (a checkpoint, SESSION@CHECKPOINT, a branch, or a session's name for its live state).",
             inputSchema: schema(["from": "The older side.", "to": "The newer side (default: the session's live state)."], required: ["from"]),
             annotations: .init(readOnlyHint: true)),
        Tool(name: "log", description: "The session's checkpoints, or a branch's commits, newest first.",
             inputSchema: schema(["branch": "A branch (default: the session's checkpoints)."]), annotations: .init(readOnlyHint: true)),
        Tool(name: "propose", description: "Freeze the session's state and put it up for review by someone else (an agent cannot approve it).",
             inputSchema: schema(["message": "What the work is (required).", "title": "A one-line title.", "branch": "The branch it is for (default main)."],
                                 required: ["message"])),
    ]

    func call(_ name: String, _ args: [String: Value]) -> CallTool.Result {
        do {
            let text = try run(name, args)
            return .init(content: [.text(text: text, annotations: nil, _meta: nil)], isError: false)
        } catch {
            return .init(content: [.text(text: "error: \(error.description)", annotations: nil, _meta: nil)], isError: true)
        }
    }

    private func string(_ args: [String: Value], _ key: String) throws(AetherError) -> String? {
        guard let v = args[key] else { return nil }
        guard let s = v.stringValue else { throw .invalid("\"\(key)\" must be a string") }
        return s
    }

    private func run(_ name: String, _ args: [String: Value]) throws(AetherError) -> String {
        let known = ["status": ["session"], "checkpoint": ["session", "message", "name"], "restore": ["session", "checkpoint"],
                     "fork": ["session", "name", "at"], "diff": ["session", "from", "to"], "log": ["session", "branch"],
                     "propose": ["session", "message", "title", "branch"]]
        guard let keys = known[name] else { throw .invalid("no tool \"\(name)\" (tools: \(known.keys.sorted().joined(separator: ", ")))") }
        for k in args.keys where !keys.contains(k) { throw .invalid("tool \(name) takes no argument \"\(k)\" (it takes \(keys.joined(separator: ", ")))") }
        let target = { () throws(AetherError) -> String in
            guard let s = try string(args, "session") ?? session else { throw .invalid("name a session (the \"session\" argument, or mcp --session)") }
            return s
        }
        let required = { (key: String) throws(AetherError) -> String in
            guard let v = try string(args, key), !v.isEmpty else { throw .invalid("tool \(name) needs \"\(key)\"") }
            return v
        }
        switch name {
        case "status":
            let s = try repo.session(named: try target())
            var out: [String: String] = ["session": s.name, "state": s.state,
                                         "head": s.head.flatMap { try? repo.metadata.snapshot(id: $0) }?.sid ?? ""]
            if let mount = repo.mountpoint(of: s) {
                out["mountpoint"] = mount
                out["status"] = (try? FileIO.readFile(mount + "/.aether/status")).map { String(decoding: $0, as: UTF8.self).trimmingWhitespace() }
            }
            return JSONText.encode(out)
        case "checkpoint":
            let r = CheckpointRequest(message: try required("message"), name: try string(args, "name"))
            return try SessionAccess.act(repo, session: try target(), .checkpoint(r)).json
        case "restore":
            return try SessionAccess.act(repo, session: try target(), .restore(RestoreRequest(checkpoint: try required("checkpoint")))).json
        case "fork":
            return try SessionAccess.act(repo, session: try target(), .fork(ForkRequest(name: try required("name"), at: try string(args, "at")))).json
        case "propose":
            let r = ProposeRequest(message: try required("message"), title: try string(args, "title"),
                                   branch: try string(args, "branch") ?? CommitRequest.defaultBranch)
            return try SessionAccess.act(repo, session: try target(), .propose(r)).json
        case "diff":
            let from = try required("from")
            let to: String
            if let given = try string(args, "to") { to = given } else { to = try target() }
            let changes = try repo.diff(try SessionAccess.root(repo, from), try SessionAccess.root(repo, to))
            return JSONText.encode(changes.map(ChangeInfo.init))
        case "log":
            if let branch = try string(args, "branch") { return JSONText.encode(try repo.history(branch).map(SnapshotInfo.init)) }
            let s = try repo.session(named: try target())
            return JSONText.encode(try repo.checkpoints(of: s).reversed().map(SnapshotInfo.init))
        default:
            throw .invalid("no tool \"\(name)\"")
        }
    }
}
