#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS
import AetherStore

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a store (mount does this on first use).", discussion: "A store is private to its owner; with --shared it belongs to a group too (mode 2770, its files 0660), so that other uids of the group can review, propose and read.\n\nWith --objects the store keeps its objects in packs on S3-compatible storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials), with a local cache in the store directory; the metadata stays in the store directory unless --meta names a PostgreSQL database (its password from PGPASSWORD or ~/.pgpass). A store with --meta is shared by hosts: on the first host init makes it (the database and the objects must hold no other store); on every other host the same --objects and --meta attach a new local directory to it (its working layers and cache).\n\nExamples:\n  aetherfs init --store /srv/aether\n  aetherfs init --store /srv/team --shared dev\n  aetherfs init --store /srv/s3 --objects s3://bucket/aether --s3-endpoint http://127.0.0.1:8333\n  aetherfs init --store /srv/team --objects s3://bucket/team --meta postgres://aether@db.internal/team")
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "Share the new store with this group (a name or a gid).") var shared: String?
    @Option(name: .long, help: "Keep the new store's objects at s3://BUCKET/PREFIX.") var objects: String?
    @Option(name: .customLong("s3-endpoint"), help: "The S3 server's http(s)://HOST[:PORT] (default: AWS's endpoint of the region).") var s3Endpoint: String?
    @Option(name: .customLong("s3-region"), help: "The S3 region (default: $AWS_REGION, else us-east-1).") var s3Region: String?
    @Option(name: .long, help: "Keep the new store's shared records in PostgreSQL at postgres://USER@HOST[:PORT]/DATABASE (with --objects); a database that holds a store already is attached to.") var meta: String?
    @Option(name: .customLong("cache-size"), help: "The local cache of objects from S3, in bytes or with KiB, MiB, GiB (default 2GiB).") var cacheSize: String?

    func run() throws {
        let repo = try fail { () throws(AetherError) -> Repository in
            var objectsAt: ObjectsConfig?
            if let objects {
                if FileIO.exists(global.storePath + "/FORMAT") { throw .exists("a store at \(global.storePath); --objects is for a new one") }
                let cache = try cacheSize.map { (text) throws(AetherError) -> Int64 in
                    guard let b = ServeCommand.bytes(text), b >= 0 else { throw .invalid("--cache-size \(text): a size such as 512MiB or 2GiB") }
                    return Int64(b)
                } ?? ObjectsConfig.defaultCacheBytes
                objectsAt = ObjectsConfig(url: objects, endpoint: s3Endpoint, region: s3Region, cacheBytes: cache, store: Repository.newStoreID())
            } else if s3Endpoint != nil || s3Region != nil || cacheSize != nil || meta != nil {
                throw .invalid("--s3-endpoint, --s3-region, --cache-size and --meta go with --objects")
            }
            guard let shared else { return try Repository(path: global.storePath, create: true, objectsAt: objectsAt, metaAt: meta) }
            let gid: UInt32
            if let n = UInt32(shared) { gid = n } else if let g = getgrnam(shared) { gid = g.pointee.gr_gid } else {
                throw .invalid("--shared \(shared): no such group")
            }
            if FileIO.exists(global.storePath + "/FORMAT") { throw .exists("a store at \(global.storePath); --shared is for a new one") }
            return try Repository(path: global.storePath, create: true, sharedGroup: gid, objectsAt: objectsAt, metaAt: meta)
        }
        let at = repo.objectsConfig
        say(global.json ? JSONText.encode(StoreInfo(store: repo.path, format: Repository.formatVersion, objects: at?.url, metadata: repo.metaConfig?.url,
                                                    id: at?.store))
                        : "store \(repo.path) (format \(Repository.formatVersion)\((at?.store).map { ", id \($0)" } ?? ""))"
                          + ((at?.url).map { ", objects at \($0)" } ?? "") + ((repo.metaConfig?.url).map { ", metadata at \($0)" } ?? ""))
    }
}
