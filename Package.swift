// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "flippio",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "flippio", targets: ["flippio"]),
        .executable(name: "flippio-devsim", targets: ["flippio-devsim"]),
        .library(name: "FlippioEngine", targets: ["FlippioEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", exact: "1.0.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
    ],
    targets: [
        // The engine: every part of DESIGN.md §2, one folder each. Knows nothing of the command line.
        .target(
            name: "FlippioEngine",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                "CSQLiteSession",
            ]
        ),
        // SQLite's session extension (changesets for the row-level merge), from the system libsqlite3.
        .target(name: "CSQLiteSession", linkerSettings: [.linkedLibrary("sqlite3")]),
        // The command line: a thin layer over the engine.
        .executableTarget(
            name: "flippio",
            dependencies: [
                "FlippioEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The emulated Android device: an adb server that the real `adb` client talks to.
        .target(name: "DeviceSimulator", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .executableTarget(
            name: "flippio-devsim",
            dependencies: [
                "DeviceSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Stand-ins for the libimobiledevice tools (idevice_id, ideviceinfo, ideviceinstaller, afcclient):
        // one binary that acts as the tool it is named after (tests symlink it under each name).
        .executableTarget(name: "flippio-ios-standin"),
        // Test helpers shared by every test target: temp folders, deadlines, the devsim harness.
        .target(name: "TestSupport", dependencies: ["DeviceSimulator"]),
        .testTarget(name: "DeviceSimulatorTests", dependencies: ["DeviceSimulator", "TestSupport"]),
        .testTarget(
            name: "FlippioEngineTests",
            dependencies: [
                "FlippioEngine", "TestSupport", "DeviceSimulator",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            // Captured tool output, read by path from the tests.
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "flippioTests", dependencies: ["FlippioEngine", "TestSupport", "DeviceSimulator"]),
    ]
)
