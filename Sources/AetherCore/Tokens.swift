#if canImport(Glibc)
import Glibc
#endif
import Crypto
import AetherModel

extension Repository {
    /// Makes a token of the service surface acting as `uid` (the caller's own when nil) with `scope`,
    /// and returns its record and its secret, which is not stored (only its SHA-256 is) and so is shown
    /// this once. Only the store's owner and root make tokens; a token for another uid, root only.
    public func createToken(name: String, scope: TokenScope, as uid: UInt32?, caller: UInt32) throws(AetherError) -> (TokenRecord, String) {
        try audited(uid: caller, action: "token-create", session: "", detail: "\(name) \(scope.rawValue)") { () throws(AetherError) in
            try Repository.validateName(name, what: "token")
            guard caller == 0 || caller == ownerUID else {
                throw .accessDenied("only the store's owner (uid \(ownerUID)) and root may make tokens")
            }
            let acting = uid ?? caller
            if acting != caller && caller != 0 { throw .accessDenied("only root makes a token that acts as another uid (--as \(acting))") }
            var random = SystemRandomNumberGenerator()
            let secret = "aet_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &random)) }.joined()
            var record = TokenRecord(name: name, scope: scope, uid: acting, hash: Repository.tokenHash(secret))
            try domain {
                try transaction(durable: true) {
                    record.id = try metadata.insertToken(record)
                    try metadata.audit(uid: caller, action: "token-create", session: "", detail: "\(name) \(scope.rawValue) as uid \(acting)")
                }
            }
            return (record, secret)
        }
    }

    /// The store's tokens (never their secrets): the owner's and root's to see.
    public func tokens(caller: UInt32) throws(AetherError) -> [TokenRecord] {
        guard caller == 0 || caller == ownerUID else { throw .accessDenied("only the store's owner (uid \(ownerUID)) and root may list tokens") }
        return try domain { try metadata.tokens() }
    }

    /// Revokes a live token: from now on it lets nobody in.
    public func revokeToken(name: String, caller: UInt32) throws(AetherError) {
        try audited(uid: caller, action: "token-revoke", session: "", detail: name) { () throws(AetherError) in
            guard caller == 0 || caller == ownerUID else { throw .accessDenied("only the store's owner (uid \(ownerUID)) and root may revoke tokens") }
            try domain {
                try transaction(durable: true) {
                    guard try metadata.revokeToken(name: name) else { throw AetherError.notFound("live token \(name)") }
                    try metadata.audit(uid: caller, action: "token-revoke", session: "", detail: name)
                }
            }
        }
    }

    /// The live token whose secret this is, or nil (unknown, malformed or revoked).
    public func authenticate(_ secret: String) throws(AetherError) -> TokenRecord? {
        guard secret.hasPrefix("aet_"), secret.utf8.count == 68 else { return nil }
        guard let t = try domain({ try metadata.token(hash: Repository.tokenHash(secret)) }), t.revoked == nil else { return nil }
        return t
    }

    static func tokenHash(_ secret: String) -> String {
        SHA256.hash(data: Array(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}
