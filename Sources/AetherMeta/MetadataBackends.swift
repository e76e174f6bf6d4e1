import AetherModel
import Synchronization

/// Where a store's shared metadata lives when not in its own `meta.db`: the store's `metadata.json`,
/// written by `aetherfs init --meta URL`. No password is in it (each process that opens the store
/// brings its own, as the backend says).
public struct MetaConfig: Codable, Sendable, Equatable {
    /// `postgres://USER@HOST[:PORT]/DATABASE`.
    public var url: String
    /// The store this metadata belongs to (the database names it too).
    public var store: String

    public init(url: String, store: String) {
        self.url = url
        self.store = store
    }

    /// The scheme of `url` (`postgres`; `postgresql` is the same).
    public var scheme: String {
        let s = String(url.prefix { $0 != ":" })
        return s == "postgresql" ? "postgres" : s
    }

    /// The name of the file in the store directory.
    public static let fileName = "metadata.json"
}

/// The shared-metadata backends that live outside the store directory (PostgreSQL), by URL scheme.
/// Their code sits in leaf targets the file system's targets do not import: the executable registers
/// them at start.
public enum MetadataBackends {
    public struct Backend: Sendable {
        /// Connects, makes or upgrades the schema, and claims the metadata for `store` when it holds no
        /// store yet; returns the id of the store it holds (another than `store`: an existing store to
        /// attach to). Called before anything of the store directory is made.
        public var claim: @Sendable (_ url: String, _ store: String) throws -> String
        /// Opens the metadata of an existing store; refuses one that holds another store.
        public var open: @Sendable (MetaConfig) throws -> SQLMetadata
        public init(claim: @escaping @Sendable (String, String) throws -> String,
                    open: @escaping @Sendable (MetaConfig) throws -> SQLMetadata) {
            self.claim = claim
            self.open = open
        }
    }

    private static let registered = Mutex<[String: Backend]>([:])

    public static func register(scheme: String, _ backend: Backend) {
        registered.withLock { $0[scheme] = backend }
    }

    public static func backend(scheme: String) throws(MetadataError) -> Backend {
        guard let b = registered.withLock({ $0[scheme] }) else {
            throw MetadataError(.invalid, "\(scheme): this aetherfs keeps metadata in the store directory or on postgres:// only")
        }
        return b
    }
}
