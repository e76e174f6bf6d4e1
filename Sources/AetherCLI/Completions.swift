import ArgumentParser
import AetherModel
import AetherCore

/// Shell completion of names from the store (`--store` on the line, else `$AETHERFS_STORE`, else the
/// default store): sessions, checkpoints, branches, proposals. Nothing when there is no store.
enum Completions {
    static func store(_ words: [String]) -> Repository? {
        var path: String?
        if let i = words.firstIndex(of: "--store"), i + 1 < words.count { path = words[i + 1] }
        let global = try? GlobalOptions.parse(path.map { ["--store", $0] } ?? [])
        guard let at = global?.storePath else { return nil }
        return try? Repository(path: at, create: false)
    }

    static func matching(_ names: [String], _ prefix: String) -> [String] { names.filter { $0.hasPrefix(prefix) }.sorted() }

    static let sessions = CompletionKind.custom { words, _, prefix in
        matching((try? store(words)?.sessions().map(\.name)) ?? [], prefix)
    }

    static let branches = CompletionKind.custom { words, _, prefix in
        matching(((try? store(words)?.metadata.branches().map(\.name)) ?? []) ?? [], prefix)
    }

    /// Snapshot references: branches, and SESSION@CHECKPOINT for every session's checkpoints.
    static let refs = CompletionKind.custom { words, _, prefix in
        guard let repo = store(words) else { return [] }
        var names = ((try? repo.metadata.branches().map(\.name)) ?? [])
        for s in (try? repo.sessions()) ?? [] {
            names.append(s.name)
            names += ((try? repo.checkpoints(of: s)) ?? []).map { "\(s.name)@\($0.name)" }
        }
        return matching(names, prefix)
    }

    /// The checkpoints of the session named just before the word being completed.
    static let checkpoints = CompletionKind.custom { words, index, prefix in
        guard let repo = store(words), index > 0, let s = try? repo.session(named: words[index - 1]) else { return [] }
        return matching(((try? repo.checkpoints(of: s)) ?? []).map(\.name), prefix)
    }

    static let proposals = CompletionKind.custom { words, _, prefix in
        matching(((try? store(words)?.metadata.proposals().filter { $0.state == .open || $0.state == .approved }.map(\.pid)) ?? []) ?? [], prefix)
    }
}
