//! What this binary was built with, for `sriov-dra --version`: the lab's
//! crash cases (`hw-tests`) run only a binary whose version line says
//! `failpoints`, and anyone can tell a test build from a release one.

/// The Cargo features compiled in, in alphabetical order.
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "demo")]
    "demo",
    #[cfg(feature = "failpoints")]
    "failpoints",
    #[cfg(feature = "test-support")]
    "test-support",
];

/// The version line's text after the program name:
/// `0.1.0 (features: demo, failpoints, test-support)`, or
/// `0.1.0 (features: none)`.
pub fn version() -> String {
    let features = if FEATURES.is_empty() {
        "none".to_string()
    } else {
        FEATURES.join(", ")
    };
    format!("{} (features: {features})", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_package_version_and_the_features() {
        let v = version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        assert_eq!(
            v.contains("failpoints"),
            cfg!(feature = "failpoints"),
            "{v}"
        );
        assert!(v.ends_with(')'), "{v}");
    }
}
