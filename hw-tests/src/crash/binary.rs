//! The prerequisite of the crash cases: a `sriov-dra` binary built with
//! the `failpoints` feature. It is asked, not trusted by its name:
//! `sriov-dra --version` names the features compiled in.

use std::path::Path;
use std::process::Command;

/// The features a `--version` line names (`sriov-dra 0.1.0 (features:
/// demo, failpoints)`), or `None` when the line has no feature list (a
/// binary older than the list, or not sriov-dra at all).
pub fn features(version_line: &str) -> Option<Vec<String>> {
    let list = version_line.trim().split_once("(features: ")?.1;
    let list = list.strip_suffix(')')?;
    Some(
        list.split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty() && *f != "none")
            .map(str::to_string)
            .collect(),
    )
}

/// `Ok` when `binary` exists, runs, and was built with failpoints; else
/// the reason, naming the binary and what it said.
pub fn check(binary: &Path) -> Result<(), String> {
    if !binary.is_file() {
        return Err(format!("{} does not exist", binary.display()));
    }
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let line = String::from_utf8_lossy(&out.stdout);
    match features(&line) {
        Some(f) if f.iter().any(|f| f == "failpoints") => Ok(()),
        Some(_) => Err(format!(
            "{} was built without failpoints ({}); build it with `cargo build --features failpoints`",
            binary.display(),
            line.trim()
        )),
        None => Err(format!(
            "{} names no features in its --version ({:?}); is it sriov-dra?",
            binary.display(),
            line.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feature_list_is_read_from_the_version_line() {
        assert_eq!(
            features("sriov-dra 0.1.0 (features: demo, failpoints, test-support)\n"),
            Some(vec![
                "demo".into(),
                "failpoints".into(),
                "test-support".into()
            ])
        );
        assert_eq!(features("sriov-dra 0.1.0 (features: none)"), Some(vec![]));
        assert_eq!(features("sriov-dra 0.1.0"), None);
        assert_eq!(features("ip utility, iproute2-6.1.0"), None);
    }

    #[test]
    fn a_missing_or_foreign_binary_is_named() {
        let err = check(Path::new("/nonexistent/sriov-dra")).unwrap_err();
        assert_eq!(err, "/nonexistent/sriov-dra does not exist");
        let err = check(Path::new("/bin/true")).unwrap_err();
        assert!(err.contains("names no features"), "{err}");
    }
}
