// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "AetherFS",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "aetherfs", targets: ["aetherfs"]),
        .executable(name: "aetherfs-chunkbench", targets: ["aetherfs-chunkbench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", from: "0.12.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // C libraries: one module each, imported by exactly one Swift target.
        .systemLibrary(name: "CFuse", path: "CFuse", pkgConfig: "fuse3"),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd"),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),
        .systemLibrary(name: "CArchive", path: "Sources/CArchive"),

        // The vocabulary: ids, records, the domain's protocols; no I/O.
        .target(name: "AetherModel", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "AetherStore", dependencies: [
            "AetherModel", "CZstd", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherMeta", dependencies: ["AetherModel", "CSQLite"]),
        .executableTarget(name: "aetherfs-chunkbench", dependencies: ["AetherModel", "AetherStore"]),
        .target(name: "AetherCore", dependencies: [
            "AetherModel", "AetherStore", "AetherMeta",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherVFS", dependencies: [
            "AetherModel", "AetherCore", "AetherStore", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherFUSE", dependencies: [
            "AetherModel", "AetherVFS", "AetherStore", "CFuse", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Archives (export, import) over libarchive: a leaf the file system's targets do not import.
        .target(name: "AetherArchive", dependencies: ["AetherModel", "AetherCore", "AetherStore", "AetherVFS", "CArchive"]),
        // The service surface (aetherfs serve) over Hummingbird: a leaf, like the archives.
        .target(name: "AetherServe", dependencies: [
            "AetherModel", "AetherCore", "AetherStore", "AetherVFS", "AetherArchive",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // Objects on S3-compatible storage, in packs (SigV4 over async-http-client): a leaf as well.
        .target(name: "AetherStoreS3", dependencies: [
            "AetherModel", "AetherStore",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Shared metadata on PostgreSQL (postgres-nio): a leaf as well.
        .target(name: "AetherMetaPostgres", dependencies: [
            "AetherModel", "AetherMeta",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherCLI", dependencies: [
            "AetherModel", "AetherCore", "AetherVFS", "AetherFUSE", "AetherArchive", "AetherServe", "AetherStoreS3", "AetherMetaPostgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            // The MCP server (aetherfs mcp): on Linux the SDK needs only swift-system and swift-log.
            .product(name: "MCP", package: "swift-sdk"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "aetherfs", dependencies: ["AetherCLI"]),

        .target(name: "TestSupport"),
        .testTarget(name: "AetherStoreTests", dependencies: ["AetherModel", "AetherStore", "AetherStoreS3", "AetherMeta", "TestSupport"]),
        .testTarget(name: "AetherCoreTests", dependencies: ["AetherModel", "AetherCore", "AetherMeta", "AetherMetaPostgres", "TestSupport"]),
        .testTarget(name: "AetherVFSTests", dependencies: ["AetherModel", "AetherVFS", "AetherStore", "TestSupport"]),
        .testTarget(name: "AetherServeTests", dependencies: ["AetherModel", "AetherServe", "TestSupport"]),
        .testTarget(name: "AetherStoreS3Tests", dependencies: ["AetherModel", "AetherStore", "AetherStoreS3", "AetherMeta", "TestSupport"]),
        .testTarget(name: "MountTests", dependencies: ["AetherCore", "TestSupport"]),
    ]
)
