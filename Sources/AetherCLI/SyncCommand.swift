#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ArgumentParser
import AetherModel
import AetherCore
import AetherServe

struct SyncCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync", abstract: "Copy branches and sessions to or from another store, sending only what it lacks.",
        discussion: """
        REMOTE is a store's path (made when missing) or the http(s):// URL of an aetherfs serve (the token from \
        $AETHERFS_TOKEN or --token-file). Branches go with their commit lineage, sessions with their checkpoints and \
        fork parents, as of their last checkpoint (unsaved changes stay). The walk stops at every tree the receiver \
        holds, existence is asked in batches, objects go in dependency order and are verified by the receiver, and \
        references move last, by compare-and-swap, as a fast-forward unless --force. An interrupted sync moves no \
        reference; the next sends only what is still missing.

        Examples:
          aetherfs sync push /backup/store --branch main
          AETHERFS_TOKEN=aet_… aetherfs sync push http://build:8470 --session work --json
          aetherfs sync pull http://build:8470 --branch release --token-file ~/.aether-token
        """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "push or pull.") var direction: Direction
    @Argument(help: "A store path, or the URL of an aetherfs serve.") var remote: String
    @Option(name: .long, help: "A branch to copy (repeatable).") var branch: [String] = []
    @Option(name: .long, help: "A session to copy (repeatable).", completion: Completions.sessions) var session: [String] = []
    @Flag(name: .long, help: "Move references that are not fast-forwards, replace sessions that diverged (audited).") var force = false
    @Option(name: .long, help: "A file holding the token for an http(s) REMOTE (default: $AETHERFS_TOKEN).") var tokenFile: String?
    @Option(name: .long, help: "PEM certificates to trust for an https REMOTE (default: the system's).") var caFile: String?

    enum Direction: String, ExpressibleByArgument { case push, pull }

    func validate() throws {
        guard !branch.isEmpty || !session.isEmpty else { throw ValidationError("name at least one --branch or --session to copy") }
    }

    func run() throws {
        let repo = try global.open(create: false)
        let report = try fail { () throws(AetherError) -> SyncReport in
            let here = LocalPeer(repo)
            let there = try peer()
            let (source, target) = direction == .push ? (here as any SyncPeer, there) : (there, here as any SyncPeer)
            let meter = ProgressMeter(verb: "sync")
            defer { meter.end() }
            return try Sync.copy(from: source, to: target, branches: branch, sessions: session, force: force, caller: getuid()) { r in
                meter.emit("\(r.objectsSent) objects, \(r.bytesSent >> 20) MiB sent, \(r.objectsSkipped) the receiver had")
            }
        }
        if global.json { say(JSONText.encode(report)); return }
        say(String(format: "%@ %@: %d objects (%.1f MiB) sent, %d the receiver had, in %.2f s", direction.rawValue, remote,
                   report.objectsSent, Double(report.bytesSent) / 1_048_576, report.objectsSkipped, report.seconds))
    }

    func peer() throws(AetherError) -> any SyncPeer {
        if remote.hasPrefix("http://") || remote.hasPrefix("https://") {
            var token = ProcessInfo.processInfo.environment["AETHERFS_TOKEN"]
            if let tokenFile {
                guard let bytes = FileManager.default.contents(atPath: tokenFile) else { throw .notFound("token file \(tokenFile)") }
                token = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard let token, !token.isEmpty else { throw .invalid("\(remote) needs a token: set AETHERFS_TOKEN or give --token-file") }
            return try RemotePeer(url: remote, token: token, caFile: caFile)
        }
        return LocalPeer(try Repository(path: remote, create: true))
    }
}
