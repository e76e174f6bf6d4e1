#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherCore
import AetherMeta
import AetherVFS

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a store (mount does this on first use).", discussion: "Example:\n  aetherfs init --store /srv/aether")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        let repo = try global.open(create: true)
        say(global.json ? "{\"store\":\(jsonString(repo.path)),\"format\":\(Repository.formatVersion)}"
                        : "store \(repo.path) (format \(Repository.formatVersion))")
    }
}

struct SessionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session", abstract: "Create, list, show and delete sessions.",
        subcommands: [Create.self, List.self, Show.self, Delete.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a session, empty or from a snapshot.", discussion: "Examples:\n  aetherfs session create scratch\n  aetherfs session create review --from work@green")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The new session's name.") var name: String
        @Option(name: .long, help: "Start from this snapshot: a checkpoint id, or SESSION@CHECKPOINT.") var from: String?

        func run() throws {
            let repo = try global.open(create: true)
            let s = try fail { () throws(AetherError) in try repo.createSession(name: name, from: from, owner: getuid()) }
            say(global.json ? sessionJSON(repo, s) : "created session \(s.name)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List sessions.", discussion: "Example:\n  aetherfs session list --json")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let repo = try global.open(create: false)
            let all = try fail { () throws(AetherError) in try repo.sessions() }
            if global.json {
                say("[" + all.map { sessionJSON(repo, $0) }.joined(separator: ",") + "]")
                return
            }
            if all.isEmpty { say("no sessions"); return }
            // The fork graph: each session under the session it was forked from.
            let ids = Set(all.map(\.id))
            var children: [Int64: [SessionRecord]] = [:]
            for s in all { children[s.parentSession.flatMap { ids.contains($0) ? $0 : nil } ?? 0, default: []].append(s) }
            var lines: [String] = []
            func walk(_ parent: Int64, _ indent: String) {
                let kids = children[parent] ?? []
                for (i, s) in kids.enumerated() {
                    let last = i == kids.count - 1
                    let branch = parent == 0 ? "" : (last ? "└─ " : "├─ ")
                    let mount = repo.mountpoint(of: s).map { "mounted at \($0)" } ?? "not mounted"
                    let cps = (try? repo.checkpoints(of: s).count) ?? 0
                    lines.append("\(indent)\(branch)\(s.name)  \(s.state)  \(cps) checkpoint\(cps == 1 ? "" : "s")  \(mount)")
                    walk(s.id, parent == 0 ? indent : indent + (last ? "   " : "│  "))
                }
            }
            walk(0, "")
            say(lines.joined(separator: "\n"))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one session.", discussion: "Example:\n  aetherfs session show work")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The session's name.") var name: String

        func run() throws {
            let repo = try global.open(create: false)
            let s = try fail { () throws(AetherError) in try repo.session(named: name) }
            if global.json { say(sessionJSON(repo, s)); return }
            let head = s.head.flatMap { try? repo.catalog.snapshot(id: $0) }
            say("""
                session   \(s.name) (id \(s.id))
                state     \(s.state)
                owner     uid \(s.owner)
                created   \(isoTime(s.created))
                last used \(isoTime(s.lastUsed))
                head      \(head.map { "\($0.name) (\($0.sid))" } ?? "none")
                mount     \(repo.mountpoint(of: s) ?? "not mounted")
                """)
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a session and its working layer (refused while mounted).", discussion: "Example:\n  aetherfs session delete review")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The session's name.") var name: String

        func run() throws {
            let repo = try global.open(create: false)
            try fail { () throws(AetherError) in try repo.deleteSession(name: name, uid: getuid()) }
            say(global.json ? "{\"deleted\":{\"session\":\(jsonString(name))}}" : "deleted session \(name)")
        }
    }
}

func sessionJSON(_ repo: Repository, _ s: SessionRecord) -> String {
    let head = s.head.flatMap { try? repo.catalog.snapshot(id: $0) }
    let parent = s.parentSession.flatMap { try? repo.catalog.session(id: $0) }
    return "{\"name\":\(jsonString(s.name)),\"id\":\(s.id),\"state\":\(jsonString(s.state)),\"owner\":\(s.owner),"
        + "\"created\":\(jsonString(isoTime(s.created))),\"last_used\":\(jsonString(isoTime(s.lastUsed))),"
        + "\"head\":\(head.map { jsonString($0.sid) } ?? "null"),\"parent\":\(parent.map { jsonString($0.name) } ?? "null"),"
        + "\"mountpoint\":\(repo.mountpoint(of: s).map(jsonString) ?? "null")}"
}

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

struct CheckpointsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoints", abstract: "List a session's checkpoints, newest first.", discussion: "Example:\n  aetherfs checkpoints work --json")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session.") var session: String

    func run() throws {
        let repo = try global.open(create: false)
        let list = try fail { () throws(AetherError) in try repo.checkpoints(of: try repo.session(named: session)) }
        if global.json { say("[" + list.reversed().map(snapshotJSON).joined(separator: ",") + "]"); return }
        if list.isEmpty { say("no checkpoints in session \(session)"); return }
        say(list.reversed().map(formatLogLine).joined())
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Make a session's tree that of one of its checkpoints.", discussion: "Examples:\n  aetherfs restore work green\n  aetherfs restore work 3f2a")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The session.") var session: String
    @Argument(help: "A checkpoint name or id.") var checkpoint: String

    func run() throws {
        let repo = try global.open(create: false)
        let json = try fail { () throws(AetherError) -> String in
            try SessionAccess.act(repo, session: session, file: "restore", payload: checkpoint) { (ws) throws(AetherError) in
                let snap = try repo.resolveSnapshot(checkpoint, session: ws.session)
                _ = try ws.restore(to: snap, caller: getuid())
                return snapshotJSON(snap)
            }
        }
        say(global.json ? json : "restored session \(session) to \(field(json, "name")) (\(field(json, "id")))")
    }
}

/// A string field of a flat JSON object we wrote ourselves.
func field(_ json: String, _ key: String) -> String {
    guard let r = json.range(of: "\"\(key)\":\"") else { return "?" }
    return String(json[r.upperBound...].prefix { $0 != "\"" })
}
