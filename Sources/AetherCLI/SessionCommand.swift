#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct SessionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session", abstract: "Create, list, show, retire and delete sessions.",
        subcommands: [Create.self, List.self, Show.self, Retire.self, Delete.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a session, empty or from a snapshot.", discussion: "Examples:\n  aetherfs session create scratch\n  aetherfs session create review --from work@green")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The new session's name.") var name: String
        @Option(name: .long, help: "Start from this snapshot: a checkpoint id, or SESSION@CHECKPOINT.") var from: String?

        func run() throws {
            let repo = try global.open(create: true)
            let s = try fail { () throws(AetherError) in try repo.createSession(name: name, from: from, owner: getuid()) }
            say(global.json ? JSONText.encode(SessionInfo(repo, s)) : "created session \(s.name)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List sessions.", discussion: "Example:\n  aetherfs session list --json")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let repo = try global.open(create: false)
            let all = try fail { () throws(AetherError) in try repo.sessions() }
            if global.json {
                say(JSONText.encode(all.map { SessionInfo(repo, $0) }))
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
                    let mount = repo.holder(of: s).flatMap { h in
                        h.mountpoint.map { "mounted at \($0)" + (h.host == repo.leaseHost ? "" : " on host \(h.host)") }
                    } ?? "not mounted"
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
        @Argument(help: "The session's name.", completion: Completions.sessions) var name: String

        func run() throws {
            let repo = try global.open(create: false)
            let s = try fail { () throws(AetherError) in try repo.session(named: name) }
            if global.json { say(JSONText.encode(SessionInfo(repo, s))); return }
            let head = s.head.flatMap { try? repo.metadata.snapshot(id: $0) }
            let holder = repo.holder(of: s)
            let mount = holder.map { h in "\(h.mountpoint ?? "not mounted"), held by pid \(h.pid) on \(h.host)" } ?? "not mounted"
            say("""
                session   \(s.name) (id \(s.id))
                state     \(s.state)
                owner     uid \(s.owner)
                created   \(isoTime(s.created))
                last used \(isoTime(s.lastUsed))
                head      \(head.map { "\($0.name) (\($0.sid))" } ?? "none")
                mount     \(mount)
                """)
        }
    }

    struct Retire: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a session read-only: its tree and checkpoints stay readable (export, views, fork); it is not mounted or changed.",
            discussion: "Example:\n  aetherfs session retire try-a")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The session's name.", completion: Completions.sessions) var name: String

        func run() throws {
            let repo = try global.open(create: false)
            try fail { () throws(AetherError) in try repo.retire(name: name, uid: getuid()) }
            say(global.json ? JSONText.encode(["retired": ["session": name]]) : "retired session \(name)")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a session, its working layer and its checkpoints (its commits stay; refused while mounted).", discussion: "Refused while another session builds on one of its checkpoints or one of its proposals is open, unless --force (audited).\n\nExample:\n  aetherfs session delete review")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The session's name.", completion: Completions.sessions) var name: String
        @Flag(name: .long, help: "Delete even when a session builds on its checkpoints or a proposal of it is open.") var force = false

        func run() throws {
            let repo = try global.open(create: false)
            try fail { () throws(AetherError) in try repo.deleteSession(name: name, uid: getuid(), force: force) }
            say(global.json ? JSONText.encode(["deleted": ["session": name]]) : "deleted session \(name)")
        }
    }
}
