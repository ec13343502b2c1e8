//! Reading the chart's files, shared by the chart tests (`tests/chart.rs`,
//! without helm) and the rendering tests (`tests/helm.rs`).

#![allow(dead_code)] // each test crate uses its own part

use std::path::{Path, PathBuf};

/// `charts/sriov-dra`.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sriov-dra")
}

/// A file's text; a missing file fails the test naming it.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files of `dir` named `<prefix>*.yaml`, sorted.
pub fn yaml_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    yaml_files_where(dir, |name| name.starts_with(prefix))
}

/// The `*.yaml` files of `dir` whose name passes `keep`, sorted.
fn yaml_files_where(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| keep(n) && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    files
}

/// Every example manifest (claim templates with their pods).
pub fn example_manifests() -> Vec<PathBuf> {
    yaml_files_where(&chart_dir().join("examples"), |name| {
        !name.starts_with("values-")
    })
}

/// The example values files (one per node pool): at least two.
pub fn example_values_files() -> Vec<PathBuf> {
    let files = yaml_files(&chart_dir().join("examples"), "values-");
    assert!(files.len() >= 2, "two node pools: {files:?}");
    files
}
