//! Checks on a parsed node config that serde's types cannot express.

use anyhow::bail;

use super::NodeConfig;

/// Longest DRA driver name the API accepts (`DriverNameMaxLength`).
const MAX_DRIVER_NAME: usize = 63;

impl NodeConfig {
    /// Rejects values the API server or the kubelet would refuse later.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !is_dns_subdomain(&self.driver_name) || self.driver_name.len() > MAX_DRIVER_NAME {
            bail!(
                "driverName {:?}: expected a lower-case DNS subdomain of at most {MAX_DRIVER_NAME} characters, e.g. sriov.dra.dev",
                self.driver_name
            );
        }
        if let Some(node) = &self.node_name
            && !is_dns_subdomain(node)
        {
            bail!("nodeName {node:?}: expected a lower-case DNS subdomain");
        }
        for (i, s) in self.selectors.iter().enumerate() {
            if s.is_empty() {
                bail!(
                    "selectors[{i}]: an empty selector would match every device; list at least one field"
                );
            }
        }
        if !self.debug_address.ip().is_loopback() && !self.debug_allow_remote {
            bail!(
                "debugAddress {} is not a loopback address: the debug API shows every claim, address and device of this node without authentication; set debugAllowRemote: true to serve it beyond the node (and firewall it)",
                self.debug_address
            );
        }
        ipam::validate_pools(&self.ipam.pools).map_err(|e| anyhow::anyhow!("ipam.pools: {e}"))?;
        if self.ipam.block_leasing.check_interval_seconds == 0 {
            bail!("ipam.blockLeasing.checkIntervalSeconds: expected at least 1");
        }
        Ok(())
    }
}

/// RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`, alphanumeric at
/// both ends, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_subdomains() {
        assert!(is_dns_subdomain("sriov.dra.dev"));
        assert!(is_dns_subdomain("node-1"));
        for bad in ["", "Node", "a..b", "-a", "a-", "a_b"] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn empty_selector_is_refused() {
        let err = NodeConfig::parse("selectors: [{}]", "t").unwrap_err();
        assert!(format!("{err:#}").contains("selectors[0]"));
    }
}
