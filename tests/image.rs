//! The image ships the driver without test doubles: its build leaves out
//! the default `demo` feature (which pulls in `test-support`).

#[test]
fn the_image_builds_without_default_features() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("the Dockerfile builds with cargo");
    assert!(build.contains("--no-default-features"), "{build}");
    assert!(!build.contains("--features"), "{build}");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest.contains("default = [\"demo\"]") && manifest.contains("demo = [\"test-support\"]"),
        "the demo (and only it) brings the doubles into a default build"
    );
}
