#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore
import AetherVFS

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a snapshot's record and its top-level entries.", discussion: "Examples:\n  aetherfs show main\n  aetherfs show work@green")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A checkpoint id, SESSION@CHECKPOINT, a branch or a commit id.", completion: Completions.refs) var snapshot: String

    func run() throws {
        let repo = try global.open(create: false)
        let (record, tree) = try fail { () throws(AetherError) -> (SnapshotRecord, Tree) in
            let r = try repo.resolveSnapshot(snapshot, session: nil)
            return (r, try repo.tree(r.root))
        }
        if global.json { say(JSONText.encode(SnapshotInfo(record))); return }
        let session = (try? repo.metadata.session(id: record.session))??.name ?? "?"
        var text = """
            \(record.kind.rawValue) \(record.sid) (\(record.name))
            session \(session)   author uid \(record.author)   \(isoTime(record.time))
            root    \(record.root.hex)
            meta    \(JSONText.encode(record.meta))

                \(record.message.split(separator: "\n").joined(separator: "\n    "))

            """
        for e in tree.entries {
            text += "\(e.kind == .directory ? "d" : e.kind == .symlink ? "l" : "-")  \(String(decoding: e.name, as: UTF8.self))\(e.kind == .directory ? "/" : "")\n"
        }
        say(text)
    }
}
