//! Compiles our .proto files with protox (pure Rust, no system protoc) and
//! generates Rust code with prost; gRPC stubs only for the kubelet APIs.
//! For the ttrpc services (NRI) it writes method-name constants instead,
//! since our own transport dispatches on those names.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Kubelet-facing APIs: gRPC, so tonic server and client stubs are generated.
const GRPC_PROTOS: &[&str] = &[
    "pluginregistration/v1/api.proto",
    "dra/v1/api.proto",
    "dra/v1beta1/api.proto",
    "dra-health/v1alpha1/api.proto",
];

/// NRI runs over ttrpc: messages only, our own transport dispatches methods.
const TTRPC_PROTOS: &[&str] = &["nri/v1alpha1/api.proto", "ttrpc/request.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("protos");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.display());

    let grpc = protox::compile(GRPC_PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(grpc)?;

    let ttrpc = protox::compile(TTRPC_PROTOS, [&root])?;
    let mut methods = String::new();
    for file in ttrpc
        .file
        .iter()
        .filter(|f| f.package() == "nri.pkg.api.v1alpha1")
    {
        for service in &file.service {
            let name = service.name();
            let module = format!("{}_methods", snake(name, false));
            writeln!(
                methods,
                "/// Method names of service `{name}`, as sent in ttrpc `Request.method`."
            )?;
            writeln!(methods, "pub mod {module} {{")?;
            let mut all = Vec::new();
            for method in &service.method {
                let m = method.name();
                let constant = snake(m, true);
                writeln!(methods, "    /// `{name}.{m}`.")?;
                writeln!(methods, "    pub const {constant}: &str = {m:?};")?;
                all.push(constant);
            }
            writeln!(
                methods,
                "    /// Every method of `{name}`, in .proto order."
            )?;
            writeln!(
                methods,
                "    pub const ALL: &[&str] = &[{}];",
                all.join(", ")
            )?;
            writeln!(methods, "}}")?;
        }
    }
    std::fs::write(out_dir.join("nri_methods.rs"), methods)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(ttrpc)?;
    Ok(())
}

/// `RunPodSandbox` → `run_pod_sandbox` (or `RUN_POD_SANDBOX` when `upper`).
fn snake(camel: &str, upper: bool) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        if upper {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}
