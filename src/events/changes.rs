//! What a rescan found different from the last one, by device name: for
//! the log line that says why the slices changed (or that nothing did).

use std::collections::BTreeMap;

use crate::inventory::{NodeDevice, NodeInventory};

/// Devices added, removed and changed between two inventories.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Devices only in the new inventory.
    pub added: Vec<String>,
    /// Devices only in the old one.
    pub removed: Vec<String>,
    /// Devices in both whose sysfs facts differ.
    pub changed: Vec<String>,
}

impl Changes {
    /// True when the inventories hold the same devices with the same facts.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares two inventories device by device.
pub fn diff(before: &NodeInventory, after: &NodeInventory) -> Changes {
    let index = |inv: &NodeInventory| -> BTreeMap<String, NodeDevice> {
        inv.devices.iter().map(|d| (d.name(), d.clone())).collect()
    };
    let (old, new) = (index(before), index(after));
    let mut changes = Changes::default();
    for (name, device) in &new {
        match old.get(name) {
            None => changes.added.push(name.clone()),
            Some(was) if !same(was, device) => changes.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    changes.removed = old
        .keys()
        .filter(|name| !new.contains_key(*name))
        .cloned()
        .collect();
    changes
}

fn same(a: &NodeDevice, b: &NodeDevice) -> bool {
    a.function == b.function && a.pf_name == b.pf_name && a.rdma == b.rdma
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::fixture::Fixture;

    #[test]
    fn a_link_going_down_is_one_changed_pf_and_a_new_vf_is_added() {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::ConnectX6Dx.build(dir.path()).unwrap();
        let before = NodeInventory::discover(dir.path()).unwrap();
        assert!(diff(&before, &before).is_empty());

        let pf = dir.path().join("bus/pci/devices/0000:3b:00.0");
        std::fs::write(pf.join("net/ens1f0np0/operstate"), "down\n").unwrap();
        let after = NodeInventory::discover(dir.path()).unwrap();
        let changes = diff(&before, &after);
        assert_eq!(changes.changed, ["pci-0000-3b-00-0"]);
        assert!(changes.added.is_empty() && changes.removed.is_empty());

        let fewer = NodeInventory {
            devices: before.devices[..17].to_vec(),
            skipped: vec![],
            sysfs_root: dir.path().to_path_buf(),
        };
        let changes = diff(&fewer, &before);
        assert_eq!(changes.added, [before.devices[17].name()]);
        assert_eq!(diff(&before, &fewer).removed, changes.added);
    }
}
