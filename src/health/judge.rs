//! Judging each device's health from one inventory: a VF is unhealthy when
//! its PF's link is down or its PF no longer provides it (SR-IOV disabled,
//! the VF removed). Pure, so every case is tested on fixture trees.

use std::collections::BTreeMap;

use sriov::PciAddress;
use sriov::inventory::{PciFunction, Role};

use crate::inventory::{NodeDevice, NodeInventory};

/// Why a device cannot carry traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The uplink is down: the PF's `operstate` (which follows its carrier)
    /// says so. For an offered PF, its own link.
    PfLinkDown {
        /// The PF's interface name.
        pf: String,
        /// The `operstate` read (`down`, `lowerlayerdown`, ...).
        operstate: String,
    },
    /// The PF no longer provides this VF: SR-IOV was disabled
    /// (`sriov_numvfs` 0) or the VF left sysfs while a claim holds it.
    SriovLost {
        /// The PF's PCI address, when the VF is still there to say it.
        pf: Option<PciAddress>,
    },
}

impl Problem {
    /// The last part of the taint key (`<driver>/<reason>`), a label name.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::PfLinkDown { .. } => "pf-link-down",
            Problem::SriovLost { .. } => "pf-sriov-lost",
        }
    }

    /// What an operator reads in the kubelet's pod status and in logs.
    pub fn message(&self) -> String {
        match self {
            Problem::PfLinkDown { pf, operstate } => {
                format!("PF {pf} link is {operstate}")
            }
            Problem::SriovLost { pf: Some(pf) } => {
                format!("PF {pf} has SR-IOV disabled or no longer lists this VF")
            }
            Problem::SriovLost { pf: None } => {
                "the VF is gone from sysfs: its PF's SR-IOV was disabled or the device removed"
                    .to_string()
            }
        }
    }
}

/// `operstate` values that mean the link cannot pass traffic. `unknown`
/// (drivers without link state) and `dormant`/`testing` are not judged.
fn link_is_down(operstate: &str) -> bool {
    matches!(operstate, "down" | "lowerlayerdown" | "notpresent")
}

/// The health of each named device: `None` healthy, else its problem.
///
/// `names` are the devices published or held by a claim; a name the
/// inventory lacks is a VF that vanished (a held VF keeps being published
/// with its last attributes, so it must be judged too).
pub fn judge<'a>(
    inventory: &NodeInventory,
    names: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, Option<Problem>> {
    names
        .into_iter()
        .map(|name| (name.to_string(), judge_one(inventory, name)))
        .collect()
}

fn judge_one(inventory: &NodeInventory, name: &str) -> Option<Problem> {
    let Some(device) = find_by_name(inventory, name) else {
        return Some(Problem::SriovLost { pf: None });
    };
    let f = &device.function;
    match &f.role {
        Role::Vf { pf, .. } => {
            let Some(parent) = find(inventory, *pf) else {
                return Some(Problem::SriovLost { pf: Some(*pf) });
            };
            match &parent.function.role {
                Role::Pf { num_vfs, .. } if *num_vfs > 0 => link_problem(&parent.function),
                _ => Some(Problem::SriovLost { pf: Some(*pf) }),
            }
        }
        Role::Pf { .. } | Role::Plain => link_problem(f),
    }
}

fn link_problem(pf: &PciFunction) -> Option<Problem> {
    let netdev = pf.netdev.as_ref()?;
    let operstate = netdev.operstate.as_deref()?;
    link_is_down(operstate).then(|| Problem::PfLinkDown {
        pf: netdev.name.clone(),
        operstate: operstate.to_string(),
    })
}

/// Devices are in PCI address order, so lookups are binary searches.
fn find(inventory: &NodeInventory, address: PciAddress) -> Option<&NodeDevice> {
    inventory
        .devices
        .binary_search_by_key(&address, |d| d.function.address)
        .ok()
        .and_then(|i| inventory.devices.get(i))
}

fn find_by_name<'a>(inventory: &'a NodeInventory, name: &str) -> Option<&'a NodeDevice> {
    let address = PciAddress::from_device_name(name).ok()?;
    find(inventory, address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov::fixture::Fixture;

    fn fixture(f: Fixture) -> tempfile::TempDir {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        dir
    }

    fn pf_dir(root: &std::path::Path, pf: &str) -> std::path::PathBuf {
        root.join("bus/pci/devices").join(pf)
    }

    #[test]
    fn every_vf_of_a_pf_whose_link_is_up_is_healthy() {
        let dir = fixture(Fixture::ConnectX6Dx);
        let inv = NodeInventory::discover(dir.path()).unwrap();
        let names: Vec<String> = inv.devices.iter().map(|d| d.name()).collect();
        let verdicts = judge(&inv, names.iter().map(String::as_str));
        assert_eq!(verdicts.len(), 18);
        assert!(verdicts.values().all(Option::is_none), "{verdicts:?}");
    }

    #[test]
    fn a_pf_link_going_down_makes_its_vfs_unhealthy_and_only_them() {
        let dir = fixture(Fixture::ConnectX6Dx);
        let pf1 = pf_dir(dir.path(), "0000:3b:00.1");
        std::fs::write(pf1.join("net/ens1f1np1/operstate"), "down\n").unwrap();
        let inv = NodeInventory::discover(dir.path()).unwrap();
        let verdicts = judge(&inv, ["pci-0000-3b-02-1", "pci-0000-3b-00-2"]);
        assert_eq!(
            verdicts["pci-0000-3b-02-1"],
            Some(Problem::PfLinkDown {
                pf: "ens1f1np1".into(),
                operstate: "down".into()
            })
        );
        assert_eq!(verdicts["pci-0000-3b-00-2"], None, "a VF of the other PF");
        let p = verdicts["pci-0000-3b-02-1"].clone().unwrap();
        assert_eq!(p.reason(), "pf-link-down");
        assert_eq!(p.message(), "PF ens1f1np1 link is down");
    }

    #[test]
    fn a_vanished_vf_and_a_pf_without_vfs_lost_sriov() {
        let dir = fixture(Fixture::E810);
        let pf = pf_dir(dir.path(), "0000:af:00.0");
        let inv = NodeInventory::discover(dir.path()).unwrap();
        let gone = judge(&inv, ["pci-0000-af-07-0"]);
        assert_eq!(
            gone["pci-0000-af-07-0"],
            Some(Problem::SriovLost { pf: None })
        );
        std::fs::write(pf.join("sriov_numvfs"), "0\n").unwrap();
        let inv = NodeInventory::discover(dir.path()).unwrap();
        let verdicts = judge(&inv, ["pci-0000-af-01-0"]);
        let problem = verdicts["pci-0000-af-01-0"].clone().unwrap();
        assert_eq!(problem.reason(), "pf-sriov-lost");
        assert!(problem.message().contains("0000:af:00.0"), "{problem:?}");
    }

    #[test]
    fn unknown_operstate_is_not_judged() {
        assert!(!link_is_down("unknown"));
        assert!(!link_is_down("up"));
        assert!(link_is_down("lowerlayerdown"));
    }
}
