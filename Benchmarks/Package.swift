// swift-tools-version: 6.1
// The benchmarks: their own package, so that the root package (and `make test`, and CI builds)
// never fetch or build ordo-one/benchmark. Run with `swift package benchmark` from this folder,
// or `make bench` from the root (which also runs scripts/bench-e2e).
import Foundation
import PackageDescription

// A path dependency is known by its folder's name (`flippio`, `main`, a worktree's name...).
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "FlippioBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
    ],
    targets: [
        .executableTarget(
            name: "FlippioBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FlippioEngine", package: root),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Benchmarks/FlippioBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
