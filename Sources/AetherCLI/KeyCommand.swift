#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "The caller's Ed25519 signing key for reviews.",
        subcommands: [Create.self, Show.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the caller's signing key (readable by its owner only) and register its public half in the store.",
            discussion: "The key lives at $AETHERFS_KEY, else $XDG_CONFIG_HOME/aetherfs/signing-key, else ~/.config/aetherfs/signing-key; an existing one is registered as it is.\n\nExample:\n  aetherfs key create")
        @OptionGroup var global: GlobalOptions
        @Flag(name: .long, help: "Replace the key the store has for this uid.") var replace = false

        func run() throws {
            let repo = try global.open(create: false)
            let (id, made) = try fail { () throws(AetherError) -> (String, Bool) in
                let (key, made) = try Approvals.createKey()
                try repo.register(key.publicKey, uid: getuid(), replace: replace)
                return (Approvals.keyID(key.publicKey), made)
            }
            say(global.json ? JSONText.encode(["key": id, "path": Approvals.keyPath]) : "\(made ? "made" : "registered") key \(id) of uid \(getuid()) (\(Approvals.keyPath))")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the caller's key id.", discussion: "Example:\n  aetherfs key show")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let key = try fail { () throws(AetherError) in
                guard let k = try Approvals.loadKey() else { throw .notFound("no signing key at \(Approvals.keyPath) (aetherfs key create)") }
                return k
            }
            say(global.json ? JSONText.encode(["key": Approvals.keyID(key.publicKey), "path": Approvals.keyPath]) : "key \(Approvals.keyID(key.publicKey)) at \(Approvals.keyPath)")
        }
    }
}
