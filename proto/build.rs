//! Compiles our .proto files with protox (pure Rust, no system protoc) and
//! generates Rust code with prost; gRPC stubs only for the kubelet APIs.

use std::path::PathBuf;

/// Kubelet-facing APIs: gRPC, so tonic server and client stubs are generated.
const GRPC_PROTOS: &[&str] = &[
    "pluginregistration/v1/api.proto",
    "dra/v1/api.proto",
    "dra/v1beta1/api.proto",
];

/// NRI runs over ttrpc: messages only, our own transport dispatches methods.
const TTRPC_PROTOS: &[&str] = &["nri/v1alpha1/api.proto", "ttrpc/request.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("protos");
    println!("cargo:rerun-if-changed={}", root.display());

    let grpc = protox::compile(GRPC_PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(grpc)?;

    let ttrpc = protox::compile(TTRPC_PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(ttrpc)?;
    Ok(())
}
