//! The node configuration file: where things are on this node and which
//! devices it offers.
//!
//! The Helm chart renders it from a node pool's values. Parsing is strict:
//! an unknown or misspelt field is an error naming it, because a silently
//! ignored selector offers the wrong NICs to the scheduler.

mod selector;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

pub use selector::{DeviceSelector, VfRange};

/// Default DRA driver name (DESIGN.md: a contract, configurable).
pub const DEFAULT_DRIVER_NAME: &str = "sriov.dra.dev";

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeConfig {
    /// DRA driver name: the ResourceSlices' `spec.driver`.
    pub driver_name: String,
    /// This node's name; falls back to `$NODE_NAME`, then the hostname.
    pub node_name: Option<String>,
    /// Where sysfs is mounted (`/sys`; a host mount in a container).
    pub sysfs_root: PathBuf,
    /// Directory of `state.redb`.
    pub state_dir: PathBuf,
    /// The kubelet's root directory (plugin sockets live below it).
    pub kubelet_dir: PathBuf,
    /// The container runtime's NRI socket.
    pub nri_socket: PathBuf,
    /// Where CDI specs are written.
    pub cdi_dir: PathBuf,
    /// Debug API listen address; loopback unless told otherwise.
    pub debug_address: SocketAddr,
    /// Allow a `debug_address` that is not loopback. The debug API shows
    /// every claim, address and device of the node without authentication,
    /// so serving it beyond the node must be asked for in so many words.
    pub debug_allow_remote: bool,
    /// Offer PFs and non-SR-IOV functions too, not only VFs.
    pub offer_pfs: bool,
    /// Interfaces never offered or touched (the node's management NIC).
    pub exclude_interfaces: Vec<String>,
    /// Which devices to offer; a device offered if any selector matches.
    /// Empty offers every VF.
    pub selectors: Vec<DeviceSelector>,
    /// PFs whose VF count the driver sets at start-up (`numVfs`).
    pub pf_policies: Vec<sriov::policy::PfPolicy>,
    /// Address pools claims draw from.
    pub ipam: NodeIpam,
}

/// The `ipam` section: the node's address pools.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeIpam {
    /// Pools by name; see the README's IPAM section.
    #[serde(default)]
    pub pools: Vec<ipam::PoolConfig>,
    /// How blocks of `scope: cluster` pools are leased and given back.
    #[serde(default)]
    pub block_leasing: BlockLeasing,
}

/// The `ipam.blockLeasing` section: the background leaser's watermark and
/// grace period (README, "Cluster-wide pools").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BlockLeasing {
    /// Lease another block when fewer addresses than this are free in the
    /// node's blocks of a pool (per family).
    pub min_free: u32,
    /// Give back a block that has been empty this long, if the watermark
    /// still holds without it.
    pub return_empty_after_seconds: u64,
    /// How often the watermark is checked; a Prepare that finds a pool dry
    /// wakes the leaser at once.
    pub check_interval_seconds: u64,
}

impl Default for BlockLeasing {
    fn default() -> Self {
        BlockLeasing {
            min_free: 16,
            return_empty_after_seconds: 600,
            check_interval_seconds: 5,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            driver_name: DEFAULT_DRIVER_NAME.into(),
            node_name: None,
            sysfs_root: "/sys".into(),
            state_dir: "/var/lib/sriov-dra".into(),
            kubelet_dir: "/var/lib/kubelet".into(),
            nri_socket: "/var/run/nri/nri.sock".into(),
            cdi_dir: "/var/run/cdi".into(),
            debug_address: SocketAddr::from(([127, 0, 0, 1], 9464)),
            debug_allow_remote: false,
            offer_pfs: false,
            exclude_interfaces: Vec::new(),
            selectors: Vec::new(),
            pf_policies: Vec::new(),
            ipam: NodeIpam::default(),
        }
    }
}

impl NodeConfig {
    /// Parses and validates a config document; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        // An empty file is a valid "all defaults" config.
        let config: NodeConfig = if text.trim().is_empty() {
            NodeConfig::default()
        } else {
            serde_yaml::from_str(text).with_context(|| format!("invalid node config {origin}"))?
        };
        config
            .validate()
            .with_context(|| format!("invalid node config {origin}"))?;
        Ok(config)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read node config {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The node name: config, then `$NODE_NAME`, then the kernel hostname.
    pub fn resolve_node_name(&self) -> anyhow::Result<String> {
        if let Some(name) = &self.node_name {
            return Ok(name.clone());
        }
        if let Ok(name) = std::env::var("NODE_NAME")
            && !name.is_empty()
        {
            return Ok(name);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").context(
            "no nodeName in the config, NODE_NAME unset, and the hostname is unreadable",
        )?;
        Ok(host.trim().to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_means_defaults() {
        let c = NodeConfig::parse("", "test").unwrap();
        assert_eq!(c.driver_name, "sriov.dra.dev");
        assert_eq!(c.debug_address.to_string(), "127.0.0.1:9464");
        assert!(c.selectors.is_empty());
    }

    #[test]
    fn full_config_parses() {
        let c = NodeConfig::parse(
            r#"
driverName: sriov.example.com
nodeName: worker-1
sysfsRoot: /host/sys
offerPfs: true
excludeInterfaces: [eno1]
selectors:
  - vendors: ["15b3"]
    pfNames: ["ens1f0np0#0-3,6"]
    linkTypes: [ethernet]
    rdma: true
  - pciAddresses: ["0000:af:01.2"]
    drivers: [vfio-pci]
"#,
            "test",
        )
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("worker-1"));
        assert_eq!(c.selectors.len(), 2);
        assert_eq!(c.resolve_node_name().unwrap(), "worker-1");
    }

    #[test]
    fn pools_and_pf_policies_parse_and_are_checked() {
        let c = NodeConfig::parse(
            r#"
pfPolicies:
  - pfName: ens1f0np0
    numVfs: 8
ipam:
  pools:
    - name: fronthaul
      scope: node
      subnets:
        - subnet: 10.1.0.0/24
          gateway: 10.1.0.1
"#,
            "node.yaml",
        )
        .unwrap();
        assert_eq!(c.pf_policies[0].num_vfs, 8);
        assert_eq!(c.ipam.pools.len(), 1);
        assert_eq!(c.ipam.block_leasing, BlockLeasing::default());
        let err = NodeConfig::parse(
            "ipam:\n  pools:\n    - name: fh\n      scope: node\n      subnets: [{subnet: 10.1.0.0/24, gateway: 10.2.0.1}]\n",
            "node.yaml",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("fh") && msg.contains("gateway"), "{msg}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err =
            NodeConfig::parse("selectors:\n  - vendor: [\"15b3\"]\n", "node.yaml").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("node.yaml") && msg.contains("unknown field `vendor`"),
            "{msg}"
        );
        let err = NodeConfig::parse("driverNmae: x\n", "node.yaml").unwrap_err();
        assert!(format!("{err:#}").contains("driverNmae"));
        let err = NodeConfig::parse(
            "pfPolicies:\n  - pfName: ens1f0\n    numVfs: 8\n    numvfs: 4\n",
            "node.yaml",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `numvfs`"),
            "{err:#}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        for (yaml, needle) in [
            ("selectors: [{vendors: [\"15b3x\"]}]", "vendors"),
            ("selectors: [{pfNames: [\"ens1#7-2\"]}]", "ens1#7-2"),
            ("selectors: [{pciAddresses: [\"3b:02\"]}]", "3b:02"),
            ("selectors: [{linkTypes: [ethernt]}]", "ethernt"),
            ("driverName: Not_A_Domain", "driverName"),
            ("debugAddress: localhost", "debugAddress"),
            ("debugAllowRemote: yes please", "debugAllowRemote"),
        ] {
            let err = format!("{:#}", NodeConfig::parse(yaml, "node.yaml").unwrap_err());
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn a_remote_debug_address_needs_debug_allow_remote() {
        let err = NodeConfig::parse("debugAddress: 0.0.0.0:9464\n", "node.yaml").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("node.yaml")
                && msg.contains("debugAddress 0.0.0.0:9464 is not a loopback address")
                && msg.contains("debugAllowRemote: true"),
            "{msg}"
        );
        let c = NodeConfig::parse(
            "debugAddress: 0.0.0.0:9464\ndebugAllowRemote: true\n",
            "node.yaml",
        )
        .unwrap();
        assert!(c.debug_allow_remote);
        NodeConfig::parse("debugAddress: \"[::1]:9464\"\n", "node.yaml")
            .expect("IPv6 loopback is local");
    }
}
