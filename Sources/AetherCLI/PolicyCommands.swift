#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ArgumentParser
import AetherModel
import AetherCore
import AetherStore

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Set or show the store's policy: who may commit and review, what must come with a commit.",
        subcommands: [Set.self, Show.self])

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace the store's policy with a JSON file (checked whole; the store's owner and root only).",
            discussion: "Example:\n  aetherfs policy set policy.json")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The policy file ('-': standard input).") var file: String

        func run() throws {
            let repo = try global.open(create: false)
            let policy = try fail { () throws(AetherError) -> Policy in
                let bytes: [UInt8]
                do {
                    bytes = file == "-" ? Array(FileHandle.standardInput.readDataToEndOfFile()) : try FileIO.readFile(file)
                } catch {
                    throw .system(errno, "cannot read \(file): \(error)")
                }
                guard bytes.count <= 1 << 20 else { throw .invalid("a policy file is at most 1 MiB") }
                return try repo.setPolicy(String(decoding: bytes, as: UTF8.self), uid: getuid())
            }
            say(global.json ? policy.json : "policy set: \(policy.branches.count) branch rule(s), \(policy.neverPersist.count) never-persist rule(s)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the store's policy.", discussion: "Example:\n  aetherfs policy show --json")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            let repo = try global.open(create: false)
            let policy = try fail { () throws(AetherError) in try repo.policy() }
            if global.json { say(policy.json); return }
            var lines: [String] = []
            for name in policy.branches.keys.sorted() {
                let r = policy.rule(for: name)
                lines.append("branch \(name): committers \(r.committers.map { $0.map(\.text).joined(separator: ",") } ?? "session drivers"), "
                             + "proposal \(r.requireProposal == true ? "required" : "optional"), \(r.approvals ?? 1) approval(s), "
                             + "reviewers \(r.reviewers.map { $0.map(\.text).joined(separator: ",") } ?? "anyone else"), "
                             + "self-approval \(r.selfApproval == true ? "allowed" : "refused"), required meta [\((r.requiredMeta ?? []).joined(separator: ","))]")
            }
            if policy.branches.isEmpty { lines.append("no branch rules: whoever may drive a session commits") }
            lines.append("others may: \(policy.sessions.othersMay.isEmpty ? "nothing (the owner and root only)" : policy.sessions.othersMay.joined(separator: ", "))")
            lines.append("never persist: \(policy.neverPersist.isEmpty ? "nothing" : policy.neverPersist.joined(separator: " "))")
            say(lines.joined(separator: "\n"))
        }
    }
}

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Read the audit log, or check its hash chain.",
        discussion: "Each entry holds the hash of the one before: --verify names the first entry that was altered or removed.\n\nExamples:\n  aetherfs audit --session work --since 2026-12-01\n  aetherfs audit --verify")
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "Only entries at or after this time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).") var since: String?
    @Option(name: .long, help: "Only entries about this session.") var session: String?
    @Flag(name: .long, help: "Check the chain instead of listing.") var verify = false

    func run() throws {
        let repo = try global.open(create: false)
        let records = try fail { () throws(AetherError) in try domain { try repo.metadata.auditRecords() } }
        if verify {
            if let broken = AuditRecord.firstBreak(records) {
                try fail { () throws(AetherError) in throw .damaged("the audit log's chain breaks at entry \(broken.id): \(broken.reason)") }
            }
            say(global.json ? "{\"entries\":\(records.count),\"intact\":true}" : "the audit log's \(records.count) entries hold: the chain is intact")
            return
        }
        let from = try fail { () throws(AetherError) -> Double in try since.map(AuditCommand.time) ?? 0 }
        let shown = records.filter { $0.time >= from && (session == nil || $0.session == session) }
        if global.json { say(JSONText.encode(shown)); return }
        for r in shown {
            say("\(r.id)  \(isoTime(r.time))  uid \(r.uid)  pid \(r.pid)  \(r.action)  \(r.session.isEmpty ? "-" : r.session)  \(r.result)  \(r.detail.prefix(200))")
        }
    }

    static func time(_ text: String) throws(AetherError) -> Double {
        let bad = AetherError.invalid("--since \(text): expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)")
        let parts = text.split(whereSeparator: { "-T:Z".contains($0) }).map { Int32($0) }
        guard (text.count == 10 && parts.count == 3) || (text.count == 20 && text.hasSuffix("Z") && parts.count == 6),
              parts.allSatisfy({ $0 != nil }) else { throw bad }
        var t = tm()
        t.tm_year = parts[0]! - 1900; t.tm_mon = parts[1]! - 1; t.tm_mday = parts[2]!
        if parts.count == 6 { t.tm_hour = parts[3]!; t.tm_min = parts[4]!; t.tm_sec = parts[5]! }
        guard (1...12).contains(parts[1]!), (1...31).contains(parts[2]!) else { throw bad }
        return Double(timegm(&t))
    }
}
