#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a store (mount does this on first use).", discussion: "Example:\n  aetherfs init --store /srv/aether")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        let repo = try global.open(create: true)
        say(global.json ? JSONText.encode(StoreInfo(store: repo.path, format: Repository.formatVersion))
                        : "store \(repo.path) (format \(Repository.formatVersion))")
    }
}
