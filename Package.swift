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
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C libraries: one module each, imported by exactly one Swift target.
        .systemLibrary(name: "CFuse", path: "CFuse", pkgConfig: "fuse3"),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd"),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        .systemLibrary(name: "CSystem", path: "Sources/CSystem"),

        .target(name: "AetherStore", dependencies: [
            "CZstd", "CSystem",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherMeta", dependencies: ["CSQLite"]),
        .executableTarget(name: "aetherfs-chunkbench", dependencies: ["AetherStore"]),
        .target(name: "AetherCore", dependencies: [
            "AetherStore", "AetherMeta",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherVFS", dependencies: [
            "AetherCore", "AetherStore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherFUSE", dependencies: [
            "AetherVFS", "AetherStore", "CFuse", "CSystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AetherCLI", dependencies: [
            "AetherCore", "AetherVFS", "AetherFUSE",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "aetherfs", dependencies: ["AetherCLI"]),

        .target(name: "TestSupport"),
        .testTarget(name: "AetherStoreTests", dependencies: ["AetherStore", "TestSupport"]),
        .testTarget(name: "AetherCoreTests", dependencies: ["AetherCore", "AetherMeta", "TestSupport"]),
        .testTarget(name: "AetherVFSTests", dependencies: ["AetherVFS", "AetherStore", "TestSupport"]),
        .testTarget(name: "MountTests", dependencies: ["AetherCore", "TestSupport"]),
    ]
)
