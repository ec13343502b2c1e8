//! Re-reading only the functions a kernel event touched, and merging them
//! into the last inventory: a PF's link going down is one function read,
//! not the 2056 of a large node. What a change drags in follows from what
//! was read (a VF that came or went changes its PF's `virtfnN` list; a PF
//! whose list changed has VFs that came or went), so the reads go on until
//! nothing new is dragged in. The periodic full scan stays the safety net.

use std::collections::{BTreeSet, HashMap};

use anyhow::Context;
use rdma::RdmaDevice;
use sriov::PciAddress;
use sriov::inventory::{Inventory, Reread, Role};

use super::{NodeInventory, rdma_name};

/// What a partial rescan made of the last inventory.
#[derive(Debug, Clone)]
pub struct Rescanned {
    /// The last inventory with the re-read functions in place.
    pub inventory: NodeInventory,
    /// Every address read: the targets and what their changes dragged in.
    pub read: BTreeSet<PciAddress>,
}

impl NodeInventory {
    /// Re-reads `targets`, and whatever their changes drag in, from this
    /// inventory's sysfs root, and merges them into a copy of it.
    pub fn rescan(&self, targets: &BTreeSet<PciAddress>) -> anyhow::Result<Rescanned> {
        let mut reread = Reread::default();
        let mut rdma = HashMap::new();
        let mut next = targets.clone();
        while !next.is_empty() {
            let (more, more_rdma) = sriov::inventory::read_with(&self.sysfs_root, &next, rdma_name)
                .with_context(|| {
                    format!(
                        "cannot re-read PCI devices {next:?} under {}",
                        self.sysfs_root.display()
                    )
                })?;
            let dragged = self.dragged_in(&more);
            reread.extend(more);
            rdma.extend(more_rdma);
            next = dragged.difference(&reread.addresses).copied().collect();
        }
        let read = reread.addresses.clone();
        Ok(Rescanned {
            inventory: self.merge(reread, rdma),
            read,
        })
    }

    /// The functions worth reading too, given what `reread` found compared
    /// with this inventory: the PF of a VF that appeared, left or changed
    /// PF (its `virtfnN` list changed with it), and the VFs that came to or
    /// left a PF's list. VFs a PF still lists need no read: their index,
    /// e-switch mode and PCIe root are joined from the PF again anyway.
    fn dragged_in(&self, reread: &Reread) -> BTreeSet<PciAddress> {
        let pf_of = |role: Option<&Role>| match role {
            Some(Role::Vf { pf, .. }) => Some(*pf),
            _ => None,
        };
        let vfs_of = |role: Option<&Role>| -> BTreeSet<PciAddress> {
            match role {
                Some(Role::Pf { vfs, .. }) => vfs.iter().copied().collect(),
                _ => BTreeSet::new(),
            }
        };
        let mut more = BTreeSet::new();
        for &address in &reread.addresses {
            let was = self.device_at(address).map(|d| &d.function.role);
            let is = reread.get(address).map(|f| &f.role);
            if pf_of(was) != pf_of(is) {
                more.extend(pf_of(was));
                more.extend(pf_of(is));
            }
            more.extend(vfs_of(was).symmetric_difference(&vfs_of(is)));
        }
        more
    }

    /// This inventory with `reread`'s functions in place of what it said
    /// about the re-read addresses, their RDMA devices from `rdma`, and PF
    /// names joined again (a PF's rename reaches its VFs). Pure.
    pub fn merge(
        &self,
        reread: Reread,
        rdma: HashMap<PciAddress, Option<RdmaDevice>>,
    ) -> NodeInventory {
        let last = Inventory {
            functions: self.devices.iter().map(|d| d.function.clone()).collect(),
            skipped: self.skipped.clone(),
        };
        let mut all_rdma: HashMap<PciAddress, Option<RdmaDevice>> = self
            .devices
            .iter()
            .filter(|d| !reread.addresses.contains(&d.function.address))
            .map(|d| (d.function.address, d.rdma.clone()))
            .collect();
        all_rdma.extend(rdma);
        let merged = sriov::inventory::merge(last, reread);
        NodeInventory::join(merged, all_rdma, &self.sysfs_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::fixture::{Fixture, rename_class_device};
    use std::fs;

    fn addrs(list: &[&str]) -> BTreeSet<PciAddress> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn same(a: &NodeInventory, b: &NodeInventory) {
        assert_eq!(
            serde_json::to_value(&a.devices).unwrap(),
            serde_json::to_value(&b.devices).unwrap()
        );
    }

    #[test]
    fn a_pf_link_change_reads_only_the_pf() {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::Scale2048.build(dir.path()).unwrap();
        let last = NodeInventory::discover(dir.path()).unwrap();
        let pf = last.devices.iter().find(|d| !d.function.is_vf()).unwrap();
        let name = pf.function.netdev.as_ref().unwrap().name.clone();
        let pf_dir = dir
            .path()
            .join("bus/pci/devices")
            .join(pf.function.address.to_string());
        fs::write(pf_dir.join(format!("net/{name}/operstate")), "down\n").unwrap();

        let rescanned = last.rescan(&BTreeSet::from([pf.function.address])).unwrap();
        assert_eq!(rescanned.read, BTreeSet::from([pf.function.address]));
        same(
            &rescanned.inventory,
            &NodeInventory::discover(dir.path()).unwrap(),
        );
        let now = rescanned.inventory.device_at(pf.function.address).unwrap();
        assert_eq!(
            now.function.netdev.as_ref().unwrap().operstate.as_deref(),
            Some("down")
        );
    }

    #[test]
    fn a_vf_removed_drags_in_its_pf_and_a_pf_with_sriov_disabled_its_vfs() {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::E810.build(dir.path()).unwrap();
        let last = NodeInventory::discover(dir.path()).unwrap();
        let devices = dir.path().join("bus/pci/devices");
        let remove_vf = |vf: &str, index: u32| {
            let link = devices.join(vf);
            fs::remove_dir_all(fs::canonicalize(&link).unwrap()).unwrap();
            fs::remove_file(&link).unwrap();
            fs::remove_file(devices.join(format!("0000:af:00.0/virtfn{index}"))).unwrap();
        };
        remove_vf("0000:af:01.3", 3);
        fs::write(devices.join("0000:af:00.0/sriov_numvfs"), "3\n").unwrap();
        let one = last.rescan(&addrs(&["0000:af:01.3"])).unwrap();
        assert_eq!(one.read, addrs(&["0000:af:00.0", "0000:af:01.3"]));
        same(
            &one.inventory,
            &NodeInventory::discover(dir.path()).unwrap(),
        );

        // SR-IOV disabled, and only the PF's event arrived: its VFs are read.
        for (vf, i) in [
            ("0000:af:01.0", 0),
            ("0000:af:01.1", 1),
            ("0000:af:01.2", 2),
        ] {
            remove_vf(vf, i);
        }
        fs::write(devices.join("0000:af:00.0/sriov_numvfs"), "0\n").unwrap();
        let all = one.inventory.rescan(&addrs(&["0000:af:00.0"])).unwrap();
        assert_eq!(all.read.len(), 4, "{:?}", all.read);
        same(
            &all.inventory,
            &NodeInventory::discover(dir.path()).unwrap(),
        );
        assert_eq!(all.inventory.devices.len(), 1);
    }

    #[test]
    fn a_renamed_pf_renames_its_vfs_pf_name_and_a_rebound_vf_gets_its_rdma_device() {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::ConnectX6Dx.build(dir.path()).unwrap();
        let last = NodeInventory::discover(dir.path()).unwrap();
        let devices = dir.path().join("bus/pci/devices");
        let rename = |class: &str, path: &str, new: &str| {
            rename_class_device(dir.path(), class, &devices.join(path), new).unwrap();
        };
        rename("net", "0000:3b:00.1/net/ens1f1np1", "uplink1");
        rename("infiniband", "0000:3b:02.1/infiniband/mlx5_17", "mlx5_99");
        let r = last
            .rescan(&addrs(&["0000:3b:00.1", "0000:3b:02.1"]))
            .unwrap();
        same(&r.inventory, &NodeInventory::discover(dir.path()).unwrap());
        let vf = r
            .inventory
            .device_at("0000:3b:02.1".parse().unwrap())
            .unwrap();
        assert_eq!(vf.pf_name.as_deref(), Some("uplink1"));
        assert_eq!(vf.rdma.as_ref().unwrap().name, "mlx5_99");
        let other = r
            .inventory
            .device_at("0000:3b:01.2".parse().unwrap())
            .unwrap();
        assert_eq!(
            other.pf_name.as_deref(),
            Some("uplink1"),
            "not re-read, joined again"
        );
    }

    #[test]
    fn a_missing_root_fails_naming_it() {
        let last = NodeInventory {
            sysfs_root: "/nonexistent".into(),
            ..Default::default()
        };
        let err = last.rescan(&addrs(&["0000:af:00.0"])).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/bus/pci/devices"),
            "{err:#}"
        );
        assert!(last.rescan(&BTreeSet::new()).unwrap().read.is_empty());
    }
}
