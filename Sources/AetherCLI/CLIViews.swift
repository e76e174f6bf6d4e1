import AetherModel
import AetherCore
import AetherVFS

// What `--json` prints, beside the records the control surface answers with (`SnapshotInfo`,
// `SessionSummary`): each encoded once, by `JSONText`.

/// One change of `diff --json`.
struct ChangeInfo: Encodable {
    var change: String
    var path: String
    var from: String?
    var aspects: [String]?

    init(_ c: Change) {
        func text(_ p: [UInt8]) -> String { String(decoding: p, as: UTF8.self) }
        change = c.kind.rawValue; path = text(c.path); from = c.from.map(text)
        aspects = c.aspects.isEmpty ? nil : c.aspects
    }

    /// The change as `diff` prints it: a letter, the path (a rename's old path first), what changed.
    var line: String {
        let letters = ["added": "A", "deleted": "D", "modified": "M", "renamed": "R"]
        return "\(letters[change] ?? "?")  " + (from.map { $0 + " -> " } ?? "") + path + (aspects.map { "  (\($0.joined(separator: ", ")))" } ?? "")
    }
}

struct VerifyInfo: Encodable {
    struct Problem: Encodable { var problem: String; var affects: [String] }
    var clean: Bool
    var trees: Int
    var manifests: Int
    var chunks: Int
    var problems: [Problem]
}

struct StoreInfo: Encodable {
    var store: String
    var format: Int
}

