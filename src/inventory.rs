//! The node's devices as the driver sees them: PCI functions joined with
//! their RDMA devices and their PF's interface name, and which are offered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rdma::RdmaDevice;
use serde::Serialize;
use sriov::PciAddress;
use sriov::class_index::ClassIndex;
use sriov::inventory::{Inventory, PciFunction, Role, Skipped};
use sriov::memo::ScanMemo;
use sriov::sysfs::{SysDir, SysfsError};

use crate::config::NodeConfig;

mod rescan;

pub use rescan::Rescanned;

/// One PCI function with what the driver joins to it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDevice {
    /// What sysfs says about the function.
    #[serde(flatten)]
    pub function: PciFunction,
    /// Its RDMA device, if it has one.
    pub rdma: Option<RdmaDevice>,
    /// The PF's interface name (a VF's parent; `None` for PFs and when the
    /// PF has no netdev).
    pub pf_name: Option<String>,
}

/// Every network function of the node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeInventory {
    /// Devices in PCI address order.
    pub devices: Vec<NodeDevice>,
    /// Entries passed over during the scan, with why.
    pub skipped: Vec<Skipped>,
    /// The sysfs root it was read from, where the details a scan leaves
    /// out (an RDMA device's char devices) are read when needed.
    #[serde(skip)]
    pub sysfs_root: PathBuf,
}

impl NodeInventory {
    /// Scans `sysfs_root` for PCI functions and their RDMA devices.
    pub fn discover(sysfs_root: &Path) -> anyhow::Result<Self> {
        // A one-off scan: nothing to keep for a next one.
        Self::discover_remembering(sysfs_root, &ScanMemo::with_max_dirs(0))
    }

    /// [`discover`](Self::discover) for a process that scans the same tree
    /// again and again: `memo` carries what cannot change between scans
    /// (see [`sriov::memo`]), so each reads only what can.
    pub fn discover_remembering(sysfs_root: &Path, memo: &ScanMemo) -> anyhow::Result<Self> {
        // Every function's RDMA device from one pass over `class/infiniband`
        // where the tree has it (a function it lists none for is asked
        // itself), else from each function's directory.
        let (inv, rdma) =
            sriov::inventory::scan_remembering(sysfs_root, memo, |dir, address, classes| {
                // From the `class/infiniband` index where the tree has one; a
                // function it lists none for is asked itself.
                match classes
                    .infiniband
                    .as_ref()
                    .and_then(|i| indexed_rdma_name(i, address))
                {
                    Some(found) => Ok(Some(found)),
                    None => rdma_name(dir, address),
                }
            })
            .with_context(|| {
                format!(
                    "cannot inventory PCI devices under {}",
                    sysfs_root.display()
                )
            })?;
        Ok(NodeInventory::join(inv, rdma, sysfs_root))
    }

    /// The driver's view of a PCI inventory: each function with its RDMA
    /// device (from `rdma`, by address) and its PF's interface name.
    fn join(
        inv: Inventory,
        mut rdma: HashMap<PciAddress, Option<RdmaDevice>>,
        sysfs_root: &Path,
    ) -> NodeInventory {
        let pf_names: HashMap<PciAddress, String> = inv
            .functions
            .iter()
            .filter(|f| matches!(f.role, Role::Pf { .. }))
            .filter_map(|f| Some((f.address, f.netdev.as_ref()?.name.clone())))
            .collect();
        let devices = inv
            .functions
            .into_iter()
            .map(|function| {
                let pf_name = function
                    .vf_of()
                    .and_then(|(pf, _)| pf_names.get(&pf).cloned());
                NodeDevice {
                    rdma: rdma.remove(&function.address).flatten(),
                    function,
                    pf_name,
                }
            })
            .collect();
        NodeInventory {
            devices,
            skipped: inv.skipped,
            sysfs_root: sysfs_root.to_path_buf(),
        }
    }

    /// The device at `address`, if the inventory has one.
    pub fn device_at(&self, address: PciAddress) -> Option<&NodeDevice> {
        // Devices are in PCI address order.
        self.devices
            .binary_search_by_key(&address, |d| d.function.address)
            .ok()
            .and_then(|i| self.devices.get(i))
    }

    /// Reads the RDMA details (ports, GUID, char devices) a scan leaves
    /// out, for every device: the operator's full view (`discover -o json`,
    /// the debug API's `/inventory`).
    pub fn read_rdma_details(&mut self) -> anyhow::Result<()> {
        for dev in &mut self.devices {
            if let Some(r) = &mut dev.rdma {
                r.details = Some(rdma::details_of(&self.sysfs_root, r)?);
            }
        }
        Ok(())
    }

    /// The devices the config offers, in PCI address order.
    pub fn offered<'a>(&'a self, config: &'a NodeConfig) -> impl Iterator<Item = &'a NodeDevice> {
        self.devices.iter().filter(|d| d.is_offered(config))
    }
}

/// What a scan reads with each function while its directory is open: its
/// RDMA device, by name only (what a slice publishes), from the function's
/// own `infiniband/` (partial rescans, and where the index has none).
fn rdma_name(dir: &SysDir, address: PciAddress) -> Result<Option<RdmaDevice>, SysfsError> {
    Ok(rdma::inventory::names_in(dir, address)?.into_iter().next())
}

/// [`rdma_name`] from the `class/infiniband` index.
fn indexed_rdma_name(index: &ClassIndex, address: PciAddress) -> Option<RdmaDevice> {
    index.members(address).first().map(|m| RdmaDevice {
        name: m.name.clone(),
        pci_address: address,
        details: None,
    })
}

impl NodeDevice {
    /// Whether the config offers this device to the scheduler.
    ///
    /// Excluded interfaces are never offered, and neither are the VFs of an
    /// excluded PF: the management NIC must stay out of reach.
    pub fn is_offered(&self, config: &NodeConfig) -> bool {
        let excluded = |name: Option<&str>| {
            name.is_some_and(|n| config.exclude_interfaces.iter().any(|e| e == n))
        };
        if excluded(self.function.netdev.as_ref().map(|n| n.name.as_str()))
            || excluded(self.pf_name.as_deref())
        {
            return false;
        }
        if !self.function.is_vf() && !config.offer_pfs {
            return false;
        }
        config.selectors.is_empty() || config.selectors.iter().any(|s| s.matches(self))
    }

    /// The name this device is published under (`pci-0000-3b-02-1`).
    pub fn name(&self) -> String {
        self.function.address.device_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::fixture::Fixture;

    fn discover(f: Fixture) -> NodeInventory {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        NodeInventory::discover(dir.path()).unwrap()
    }

    fn offered(inv: &NodeInventory, yaml: &str) -> Vec<String> {
        let config = NodeConfig::parse(yaml, "test").unwrap();
        inv.offered(&config)
            .map(|d| d.function.address.to_string())
            .collect()
    }

    #[test]
    fn joins_rdma_and_pf_names() {
        let inv = discover(Fixture::ConnectX6Dx);
        let vf = &inv.devices[2];
        assert_eq!(vf.function.address.to_string(), "0000:3b:00.2");
        assert_eq!(vf.pf_name.as_deref(), Some("ens1f0np0"));
        assert_eq!(vf.rdma.as_ref().unwrap().name, "mlx5_1");
    }

    #[test]
    fn the_class_indexes_give_what_listing_each_function_gives() {
        for fixture in Fixture::ALL {
            let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
            fixture.build(dir.path()).unwrap();
            let indexed = NodeInventory::discover(dir.path()).unwrap();
            // A VF whose RDMA device the index lost (renamed during the
            // pass) is asked itself.
            let _ = std::fs::remove_file(dir.path().join("class/infiniband/mlx5_1"));
            assert_eq!(
                serde_json::to_value(&NodeInventory::discover(dir.path()).unwrap().devices)
                    .unwrap(),
                serde_json::to_value(&indexed.devices).unwrap(),
                "{fixture}"
            );
            std::fs::remove_dir_all(dir.path().join("class")).unwrap();
            let listed = NodeInventory::discover(dir.path()).unwrap();
            assert_eq!(
                serde_json::to_value(&listed.devices).unwrap(),
                serde_json::to_value(&indexed.devices).unwrap(),
                "{fixture}"
            );
        }
    }

    #[test]
    fn rdma_details_are_read_on_request_only() {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::ConnectX6Dx.build(dir.path()).unwrap();
        let mut inv = NodeInventory::discover(dir.path()).unwrap();
        assert!(
            inv.devices
                .iter()
                .all(|d| d.rdma.as_ref().unwrap().details.is_none())
        );
        inv.read_rdma_details().unwrap();
        let vf = inv.devices[2].rdma.as_ref().unwrap();
        assert_eq!(
            vf.details.as_ref().unwrap().char_devices,
            [
                PathBuf::from("/dev/infiniband/rdma_cm"),
                PathBuf::from("/dev/infiniband/uverbs1")
            ]
        );
    }

    #[test]
    fn default_offers_every_vf_and_no_pf() {
        let inv = discover(Fixture::ConnectX6Dx);
        assert_eq!(offered(&inv, "").len(), 16);
        assert_eq!(offered(&inv, "offerPfs: true").len(), 18);
    }

    #[test]
    fn pf_name_ranges_select_vfs_by_index() {
        let inv = discover(Fixture::ConnectX6Dx);
        let got = offered(&inv, "selectors: [{pfNames: [\"ens1f1np1#0-1,7\"]}]");
        assert_eq!(got, ["0000:3b:01.2", "0000:3b:01.3", "0000:3b:02.1"]);
    }

    #[test]
    fn fields_and_within_a_selector_or_across() {
        let inv = discover(Fixture::E810);
        assert_eq!(
            offered(
                &inv,
                "selectors: [{vendors: [\"8086\"], drivers: [vfio-pci]}]"
            ),
            ["0000:af:01.2", "0000:af:01.3"]
        );
        assert_eq!(
            offered(
                &inv,
                "selectors: [{drivers: [vfio-pci]}, {pciAddresses: [\"0000:af:01.0\"]}]"
            ),
            ["0000:af:01.0", "0000:af:01.2", "0000:af:01.3"]
        );
        assert!(offered(&inv, "selectors: [{rdma: true}]").is_empty());
    }

    #[test]
    fn excluded_interfaces_and_their_vfs_are_never_offered() {
        let inv = discover(Fixture::E810);
        assert!(offered(&inv, "offerPfs: true\nexcludeInterfaces: [ens3f0]").is_empty());
        let inv = discover(Fixture::Virtio);
        assert_eq!(offered(&inv, "offerPfs: true"), ["0000:00:03.0"]);
        assert!(offered(&inv, "offerPfs: true\nexcludeInterfaces: [eth0]").is_empty());
    }

    #[test]
    fn link_type_selects_infiniband() {
        let inv = discover(Fixture::ConnectX7Ib);
        assert_eq!(
            offered(&inv, "selectors: [{linkTypes: [infiniband]}]").len(),
            4
        );
        assert!(offered(&inv, "selectors: [{linkTypes: [ethernet]}]").is_empty());
    }
}
