#if canImport(Glibc)
import Glibc
#endif
import AetherModel
import Synchronization

/// Where a store's objects live when not in its own `objects/` directory: the store's `objects.json`,
/// written by `aetherfs init --objects URL`. Credentials are never in it (they come from the
/// environment of each process that opens the store).
public struct ObjectsConfig: Codable, Sendable, Equatable {
    /// `s3://BUCKET/PREFIX`.
    public var url: String
    /// The object storage's `http(s)://HOST[:PORT]` (AWS's regional endpoint when nil).
    public var endpoint: String?
    public var region: String?
    /// The local disk cache's size in bytes.
    public var cacheBytes: Int64
    /// The store these objects belong to (the marker object in the bucket names it too).
    public var store: String

    public static let defaultCacheBytes: Int64 = 2 << 30

    public init(url: String, endpoint: String?, region: String?, cacheBytes: Int64 = ObjectsConfig.defaultCacheBytes, store: String) {
        self.url = url
        self.endpoint = endpoint
        self.region = region
        self.cacheBytes = cacheBytes
        self.store = store
    }

    enum CodingKeys: String, CodingKey {
        case url, endpoint, region, store
        case cacheBytes = "cache_bytes"
    }

    /// The scheme of `url` (`s3`).
    public var scheme: String { String(url.prefix { $0 != ":" }) }

    /// The config of the store at `path`, or nil when its objects are local.
    public static func read(store path: String) throws -> ObjectsConfig? {
        let file = path + "/objects.json"
        guard FileIO.exists(file) else { return nil }
        guard let config = JSONText.decoded(ObjectsConfig.self, String(decoding: try FileIO.readFile(file), as: UTF8.self)) else {
            throw StoreError.unsupportedFormat("\(file) does not describe where the store's objects are")
        }
        return config
    }

    public func write(store path: String) throws {
        try FileIO.atomicWrite(path + "/objects.json", Array((JSONText.encode(self) + "\n").utf8), sync: true)
    }
}

/// The blob-store backends that live outside the store directory (S3), by URL scheme. Their code sits
/// in leaf targets the file system's targets do not import: the executable registers them at start.
public enum BlobBackends {
    public struct Backend: Sendable {
        /// Checks that the objects can be reached with the credentials at hand and claims them for a new
        /// store (refusing objects another store holds); called before anything of the store is made.
        /// `attaching`: the store exists (another host made it), so its objects must be there already.
        public var prepare: @Sendable (ObjectsConfig, _ attaching: Bool) throws -> Void
        /// Opens the objects of an existing store; `index` is where a packed backend keeps its index,
        /// `cacheDirectory` its local cache.
        public var open: @Sendable (ObjectsConfig, _ index: any PackIndex, _ cacheDirectory: String, Headroom) throws -> any BlobStore
        public init(prepare: @escaping @Sendable (ObjectsConfig, Bool) throws -> Void,
                    open: @escaping @Sendable (ObjectsConfig, any PackIndex, String, Headroom) throws -> any BlobStore) {
            self.prepare = prepare
            self.open = open
        }
    }

    private static let registered = Mutex<[String: Backend]>([:])

    public static func register(scheme: String, _ backend: Backend) {
        registered.withLock { $0[scheme] = backend }
    }

    public static func backend(for config: ObjectsConfig) throws -> Backend {
        guard let b = registered.withLock({ $0[config.scheme] }) else {
            throw StoreError.io(EINVAL, "\(config.url): this aetherfs keeps objects locally or on s3:// only")
        }
        return b
    }
}
