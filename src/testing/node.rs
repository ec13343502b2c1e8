//! A node's claim side as the driver builds it at start, for tests and
//! benchmarks: a store with pools, the inventory of a fixture sysfs tree,
//! and a preparer over them.

use std::path::Path;
use std::sync::Arc;

use ipam::{Ipam, PoolConfig, PoolScope, SubnetConfig};

use crate::claim::device_ops::DeviceOps;
use crate::claim::prepare::{PrepareConfig, Preparer};
use crate::inventory::NodeInventory;

/// The DRA driver name the tests and benchmarks use.
pub const DRIVER: &str = "sriov.dra.dev";

/// A node-local pool of one whole subnet, no gateway, no routes.
pub fn pool(name: &str, subnet: &str) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        scope: Some(PoolScope::Node),
        block_size: None,
        subnets: vec![SubnetConfig {
            subnet: subnet.parse().expect("test subnet"),
            range_start: None,
            range_end: None,
            gateway: None,
        }],
        exclude: vec![],
        routes: vec![],
    }
}

/// The device names of every VF in `inventory`: what a test node offers.
pub fn offered_vfs(inventory: &NodeInventory) -> Vec<String> {
    inventory
        .devices
        .iter()
        .filter(|d| d.function.is_vf())
        .map(|d| d.name())
        .collect()
}

/// Where a test node keeps things and what it calls itself.
pub struct NodeParts<'a> {
    /// The fixture sysfs tree.
    pub sysfs: &'a Path,
    /// Holds `state.redb`.
    pub state_dir: &'a Path,
    /// CDI specs.
    pub cdi_dir: &'a Path,
    /// The store's pools.
    pub pools: &'a [PoolConfig],
    /// The slices' pool name (the node name).
    pub pool: &'a str,
    /// The boot the records are written in.
    pub boot_id: &'a str,
}

impl NodeParts<'_> {
    /// Opens the store and builds a preparer offering every VF of the
    /// tree, with `ops` standing in for the NIC.
    pub fn preparer(&self, ops: Arc<dyn DeviceOps>) -> (Arc<Ipam>, Preparer) {
        let inventory = NodeInventory::discover(self.sysfs).expect("inventory");
        let offered = offered_vfs(&inventory);
        let ipam = Arc::new(Ipam::open(self.state_dir, self.pools).expect("ipam"));
        let preparer = Preparer::new(
            PrepareConfig {
                driver: DRIVER.into(),
                pool: self.pool.into(),
                cdi_dir: self.cdi_dir.to_path_buf(),
                boot_id: self.boot_id.into(),
            },
            ipam.clone(),
            &inventory,
            offered,
            ops,
        )
        .expect("preparer");
        (ipam, preparer)
    }
}
