import AetherModel
import AetherCore
import AetherVFS

// What `--json` prints, beside the records the control surface answers with (`SnapshotInfo`,
// `SessionSummary`): each encoded once, by `JSONText`.

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
    /// Where its objects are, when not in the store directory (`s3://…`).
    var objects: String?
    /// Where its shared records are, when not in the store directory (`postgres://…`).
    var metadata: String?
    /// The store's id, when its objects are elsewhere (the id every attached host shares).
    var id: String?
}

