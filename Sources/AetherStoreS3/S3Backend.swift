#if canImport(Glibc)
import Glibc
#endif
import Foundation
import AetherModel
import AetherStore

/// The `s3://` backend of `BlobBackends`: packs on an S3-compatible bucket, their index in the store's
/// metadata, a disk cache in the store directory.
public enum S3Backend {
    /// The marker object at the prefix's top: which store the objects there belong to.
    static let markerKey = "aetherfs-store.json"

    struct Marker: Codable { var format: Int; var store: String; var created: Double }

    public static func register() {
        BlobBackends.register(scheme: "s3", BlobBackends.Backend(prepare: { try prepare($0, attaching: $1) }, open: open))
    }

    static func client(_ config: ObjectsConfig) throws -> S3Client {
        let location = try S3Location(url: config.url, endpoint: config.endpoint, region: config.region)
        return S3Client(location: location, credentials: try S3Credentials.fromEnvironment())
    }

    /// Claims the prefix for the store with a conditional PUT of the marker; a prefix that holds another
    /// store's marker is refused.
    /// A store that is attached to (`attaching`) must find its own marker there.
    @Sendable static func prepare(_ config: ObjectsConfig, attaching: Bool) throws {
        let s3 = try client(config)
        let marker = Marker(format: 1, store: config.store, created: secondsNow())
        let found = try s3.get(markerKey, range: nil).flatMap { JSONText.decoded(Marker.self, String(decoding: $0, as: UTF8.self)) }
        if attaching && found == nil {
            throw StoreError.io(ENOENT, "\(s3.location.url) holds no objects of store \(config.store), which the metadata names; give the --objects its first host gave")
        }
        if found == nil, try s3.put(markerKey, Array(JSONText.encode(marker).utf8), ifAbsent: true) { return }
        let standing = try found ?? s3.get(markerKey, range: nil).flatMap { JSONText.decoded(Marker.self, String(decoding: $0, as: UTF8.self)) }
        guard standing?.store == config.store else {
            throw StoreError.io(EEXIST, "\(s3.location.url) already holds the objects of another store (\(standing?.store ?? "unreadable marker")); give another bucket or prefix")
        }
    }

    @Sendable static func open(_ config: ObjectsConfig, index: any PackIndex, cacheDirectory: String, headroom: Headroom) throws -> any BlobStore {
        let cache = config.cacheBytes > 0 ? try DiskCache(directory: cacheDirectory, budget: config.cacheBytes, headroom: headroom) : nil
        return PackedBlobStore(bucket: try client(config), index: index, cache: cache)
    }
}
