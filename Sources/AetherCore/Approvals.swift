#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Crypto
import AetherModel

/// Signed reviews: a reviewer's verdict is an in-toto statement whose subject is the proposal's root
/// digest, signed with the reviewer's Ed25519 key in a DSSE envelope. DSSE signs its pre-authentication
/// encoding of the payload's bytes, so checking a signature never depends on re-encoding JSON the same
/// way. The store keeps each uid's public key; `verifyApprovals` checks every commit's approvals with
/// them, on any machine that has the store.
public enum Approvals {
    public static let payloadType = "application/vnd.in-toto+json"
    public static let predicateType = "https://aetherfs.dev/review/v1"

    struct Statement: Codable, Equatable {
        struct Subject: Codable, Equatable { var name: String; var digest: [String: String] }
        struct Predicate: Codable, Equatable { var proposal: String; var branch: String; var verdict: String; var reviewer: UInt32 }
        var type = "https://in-toto.io/Statement/v1"
        var subject: [Subject]
        var predicateType = Approvals.predicateType
        var predicate: Predicate
        enum CodingKeys: String, CodingKey { case type = "_type", subject, predicateType, predicate }
    }

    struct Envelope: Codable {
        struct Signature: Codable { var keyid: String; var sig: String }
        var payload: String
        var payloadType: String
        var signatures: [Signature]
    }

    /// DSSE's pre-authentication encoding: "DSSEv1 LEN(type) type LEN(body) body".
    static func pae(_ type: String, _ body: [UInt8]) -> [UInt8] {
        Array("DSSEv1 \(type.utf8.count) \(type) \(body.count) ".utf8) + body
    }

    /// A key's id: the first 16 hex digits of the SHA-256 of its raw public form.
    public static func keyID(_ publicKey: Curve25519.Signing.PublicKey) -> String {
        String(SHA256.hash(data: publicKey.rawRepresentation).map { String(format: "%02x", $0) }.joined().prefix(16))
    }

    /// The envelope of `reviewer`'s `verdict` on proposal `p`'s root.
    public static func sign(_ p: ProposalRecord, verdict: ReviewRecord.Verdict, reviewer: UInt32,
                            key: Curve25519.Signing.PrivateKey) throws(AetherError) -> String {
        let statement = Statement(subject: [.init(name: "aetherfs-root", digest: ["sha256": p.root.hex])],
                                  predicate: .init(proposal: p.pid, branch: p.branch, verdict: verdict.rawValue, reviewer: reviewer))
        let body = Array(JSONText.encode(statement).utf8)
        let signature: Data
        do { signature = try key.signature(for: pae(payloadType, body)) } catch { throw .failed("cannot sign the review: \(error)") }
        let envelope = Envelope(payload: Data(body).base64EncodedString(), payloadType: payloadType,
                                signatures: [.init(keyid: keyID(key.publicKey), sig: signature.base64EncodedString())])
        return JSONText.encode(envelope)
    }

    /// Why `envelope` is not `reviewer`'s signed approval of `root` for `proposal` on `branch` under
    /// `publicKey` (hex); nil when it is.
    public static func problem(_ envelope: String, reviewer: UInt32, publicKey: String?, root: ObjectID, proposal: String,
                               branch: String) -> String? {
        if envelope.isEmpty { return "the approval by uid \(reviewer) is not signed" }
        guard let publicKey, let raw = hexBytes(publicKey), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
            return "uid \(reviewer) has no public key in the store (aetherfs key create)"
        }
        guard let e = JSONText.decoded(Envelope.self, envelope), e.payloadType == payloadType,
              let body = Data(base64Encoded: e.payload) else {
            return "the approval by uid \(reviewer) is not a DSSE envelope of an in-toto statement"
        }
        guard e.signatures.contains(where: { s in
            s.keyid == keyID(key) && Data(base64Encoded: s.sig).map { key.isValidSignature($0, for: pae(e.payloadType, Array(body))) } == true
        }) else {
            return "the approval by uid \(reviewer) has no valid signature by its key \(keyID(key))"
        }
        guard let statement = try? JSONDecoder().decode(Statement.self, from: body) else { return "the signed statement by uid \(reviewer) does not decode" }
        let want = Statement(subject: [.init(name: "aetherfs-root", digest: ["sha256": root.hex])],
                             predicate: .init(proposal: proposal, branch: branch, verdict: "approve", reviewer: reviewer))
        guard statement == want else { return "uid \(reviewer)'s signed statement is about another root, proposal, branch or verdict" }
        return nil
    }

    static func hexBytes(_ hex: String) -> [UInt8]? {
        let chars = Array(hex.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < chars.count {
            guard let b = UInt8(String(decoding: chars[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
            i += 2
        }
        return out
    }

    // MARK: keys

    /// Where the caller's private key lives: `$AETHERFS_KEY`, else `$XDG_CONFIG_HOME/aetherfs/signing-key`,
    /// else `~/.config/aetherfs/signing-key`.
    public static var keyPath: String {
        if let p = ProcessInfo.processInfo.environment["AETHERFS_KEY"], !p.isEmpty { return p }
        if let x = ProcessInfo.processInfo.environment["XDG_CONFIG_HOME"], !x.isEmpty { return x + "/aetherfs/signing-key" }
        let home = getpwuid(getuid()).map { String(cString: $0.pointee.pw_dir) } ?? ProcessInfo.processInfo.environment["HOME"] ?? "/"
        return home + "/.config/aetherfs/signing-key"
    }

    /// The caller's private key, if it has one (it must be readable by its owner only).
    public static func loadKey() throws(AetherError) -> Curve25519.Signing.PrivateKey? {
        let path = keyPath
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        guard st.st_uid == getuid(), st.st_mode & 0o077 == 0 else {
            throw .accessDenied("\(path) must be the caller's own and readable by it only (chmod 600)")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let raw = hexBytes(text.trimmingWhitespace()),
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
            throw .invalid("\(path) does not hold an Ed25519 private key")
        }
        return key
    }

    /// Makes the caller's key (unless it exists) with mode 0600; returns it.
    public static func createKey() throws(AetherError) -> (key: Curve25519.Signing.PrivateKey, made: Bool) {
        if let key = try loadKey() { return (key, false) }
        let path = keyPath
        let dir = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        let key = Curve25519.Signing.PrivateKey()
        let hex = key.rawRepresentation.map { String(format: "%02x", $0) }.joined() + "\n"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .system(errno, "cannot make \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let ok = hex.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, hex.utf8.count) == hex.utf8.count }
        guard ok, fsync(fd) == 0 else { throw .system(errno, "cannot write \(path)") }
        return (key, true)
    }
}

extension Repository {
    /// Registers the caller's public key in the store (audited). A uid's registered key is replaced
    /// only with `replace`: signatures made with the old one then no longer verify.
    public func register(_ key: Curve25519.Signing.PublicKey, uid: UInt32, replace: Bool) throws(AetherError) {
        let hex = key.rawRepresentation.map { String(format: "%02x", $0) }.joined()
        try audited(uid: uid, action: "key-register", session: "", detail: Approvals.keyID(key)) { () throws(AetherError) in
            if let old = try domain({ try metadata.publicKeys() })[uid], old != hex, !replace {
                throw .exists("uid \(uid) has another key in the store; --replace replaces it (its old signatures then fail to verify)")
            }
            try domain {
                try transaction(durable: true) {
                    try metadata.setPublicKey(uid: uid, hex)
                    try metadata.audit(uid: uid, action: "key-register", session: "", detail: Approvals.keyID(key))
                }
            }
        }
    }

    /// Every commit made of a proposal, checked: each approval that counted is a valid signature by the
    /// reviewer's registered key over the commit's root, proposal, branch and an approve verdict, and
    /// enough of them count under the policy now. Commits on a branch whose rule requires proposals
    /// must be of one. Returns the commits' ids with what is wrong, one line each.
    public func verifyApprovals() throws(AetherError) -> (checked: Int, problems: [(commit: String, problem: String)]) {
        let policy = try policy()
        let keys = try domain { try metadata.publicKeys() }
        var problems: [(String, String)] = []
        var checked = 0
        for c in try domain({ try metadata.snapshots(kind: .commit) }) {
            let branch = c.branch ?? ""
            let rule = policy.rule(for: branch)
            guard let pid = c.meta["proposal"] else {
                if rule.requireProposal == true { problems.append((c.sid, "committed to \(branch) without a proposal, which its policy requires")) }
                continue
            }
            checked += 1
            guard let p = try domain({ try metadata.proposals(pidPrefix: pid) }).first(where: { $0.pid == pid }) else {
                problems.append((c.sid, "its proposal \(pid) is not in the store"))
                continue
            }
            if p.root != c.root { problems.append((c.sid, "its root is not proposal \(pid)'s")) }
            let approvers = (c.meta["approved_by"] ?? "").split(separator: ",").compactMap { UInt32($0.dropFirst(4)) }
            var valid = 0
            for uid in approvers {
                let reviews = try domain { try metadata.reviews(proposal: p.id) }.filter { $0.reviewer == uid && $0.verdict == .approve }
                guard !reviews.isEmpty else { problems.append((c.sid, "uid \(uid)'s approval is not recorded")); continue }
                let found = reviews.map { Approvals.problem($0.envelope, reviewer: uid, publicKey: keys[uid], root: c.root, proposal: pid, branch: branch) }
                if found.contains(where: { $0 == nil }) { valid += 1 } else if let why = found.last ?? nil { problems.append((c.sid, why)) }
            }
            if valid < rule.approvals ?? 1 {
                problems.append((c.sid, "\(valid) valid signed approval(s); the policy of \(branch) asks \(rule.approvals ?? 1)"))
            }
        }
        return (checked, problems)
    }
}
