#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS
import AetherStore

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a store (mount does this on first use).", discussion: "A store is private to its owner; with --shared it belongs to a group too (mode 2770, its files 0660), so that other uids of the group can review, propose and read.\n\nExamples:\n  aetherfs init --store /srv/aether\n  aetherfs init --store /srv/team --shared dev")
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "Share the new store with this group (a name or a gid).") var shared: String?

    func run() throws {
        let repo = try fail { () throws(AetherError) -> Repository in
            guard let shared else { return try Repository(path: global.storePath, create: true) }
            let gid: UInt32
            if let n = UInt32(shared) { gid = n } else if let g = getgrnam(shared) { gid = g.pointee.gr_gid } else {
                throw .invalid("--shared \(shared): no such group")
            }
            if FileIO.exists(global.storePath + "/FORMAT") { throw .exists("a store at \(global.storePath); --shared is for a new one") }
            return try Repository(path: global.storePath, create: true, sharedGroup: gid)
        }
        say(global.json ? JSONText.encode(StoreInfo(store: repo.path, format: Repository.formatVersion))
                        : "store \(repo.path) (format \(Repository.formatVersion))")
    }
}
