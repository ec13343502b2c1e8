//! Linux network interface names, as the kernel's `dev_valid_name()`
//! accepts them.
//!
//! One rule for the whole project: a claim's `ifName` is checked when the
//! claim is prepared with the same rule that attach applies, so a name
//! cannot pass the first and fail the pod at the second.

/// Longest interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Why `name` is not a usable interface name, or `None` if it is.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Some("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Some("is . or ..");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some("contains '/', ':', whitespace or a control character");
    }
    if name.contains('%') {
        return Some("contains '%', which the kernel would expand into a number");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_rules() {
        for good in [
            "net1",
            "fh0",
            "ens1f0v7",
            "a-b_c.d",
            "x".repeat(15).as_str(),
        ] {
            assert_eq!(ifname_problem(good), None, "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("sixteen-bytes-xx", "longer"),
            ("..", ". or .."),
            ("a/b", "'/'"),
            ("a b", "whitespace"),
            ("net%d", "'%'"),
        ] {
            assert!(
                ifname_problem(bad).is_some_and(|w| w.contains(why)),
                "{bad}"
            );
        }
    }
}
