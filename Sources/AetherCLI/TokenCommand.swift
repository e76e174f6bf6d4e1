#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore

extension TokenScope: ExpressibleByArgument {}

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Bearer tokens of the service surface (aetherfs serve).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a token and print its secret, once (only its hash is stored).",
            discussion: """
            Scopes: read (every GET), write (also checkpoints, imports, commits, proposals), review (also reviews), \
            admin (everything). The token acts as the caller's uid, or with --as (root only) another's: its reviews, \
            commits and audit entries are that uid's, under the policy's rules. The store's owner and root make tokens.

            Examples:
              aetherfs token create ci --scope write
              aetherfs token create bob-review --scope review --as 1001 --json
            """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The token's name.") var name: String
        @Option(name: .long, help: "read, write, review or admin.") var scope: TokenScope
        @Option(name: .customLong("as"), help: "The uid the token acts as (root only; default: the caller).") var uid: UInt32?

        func run() throws {
            let repo = try global.open(create: false)
            let (record, secret) = try fail { () throws(AetherError) in try repo.createToken(name: name, scope: scope, as: uid, caller: getuid()) }
            if global.json {
                say(JSONText.encode(["name": record.name, "scope": record.scope.rawValue, "uid": String(record.uid), "token": secret]))
            } else {
                say(secret)
                note("token \(record.name) (\(record.scope.rawValue), uid \(record.uid)): keep the line above secret; it is not shown again")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the store's tokens (never their secrets).", discussion: "Example:\n  aetherfs token list --json")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let repo = try global.open(create: false)
            let tokens = try fail { () throws(AetherError) in try repo.tokens(caller: getuid()) }
            if global.json {
                say(JSONText.encode(tokens.map { TokenView($0) }))
            } else {
                say(tokens.map { "\($0.name)  \($0.scope.rawValue)  uid \($0.uid)  created \(isoTime($0.created))\($0.revoked.map { "  revoked \(isoTime($0))" } ?? "")" }.joined(separator: "\n"))
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token: it lets nobody in from now on.", discussion: "Example:\n  aetherfs token revoke ci")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The token's name.") var name: String

        func run() throws {
            let repo = try global.open(create: false)
            try fail { () throws(AetherError) in try repo.revokeToken(name: name, caller: getuid()) }
            say(global.json ? JSONText.encode(["revoked": name]) : "revoked token \(name)")
        }
    }
}

/// A token as `token list --json` shows it.
struct TokenView: Encodable {
    let name: String, scope: String, uid: UInt32, created: String, revoked: String?
    init(_ t: TokenRecord) { name = t.name; scope = t.scope.rawValue; uid = t.uid; created = isoTime(t.created); revoked = t.revoked.map(isoTime) }
}
