//! Judging each device's health from one inventory: a VF is unhealthy when
//! its PF's link is down (by `operstate` or for want of carrier) or its PF
//! no longer provides it (SR-IOV disabled, the VF removed). Pure, so every
//! case is tested on fixture trees.

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
    /// The uplink has no carrier though `operstate` does not say down:
    /// some drivers never set `operstate` and leave it `unknown`. Published
    /// under the same reason as [`Problem::PfLinkDown`]: it is the same
    /// failure (cable, transceiver or link partner), and tolerations and
    /// selectors written for a dead uplink must match it whatever the
    /// driver.
    PfNoCarrier {
        /// The PF's interface name.
        pf: String,
        /// The `operstate` read alongside (`unknown`, `up`, ...), if any.
        operstate: Option<String>,
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
            Problem::PfLinkDown { .. } | Problem::PfNoCarrier { .. } => "pf-link-down",
            Problem::SriovLost { .. } => "pf-sriov-lost",
        }
    }

    /// What an operator reads in the kubelet's pod status and in logs.
    pub fn message(&self) -> String {
        match self {
            Problem::PfLinkDown { pf, operstate } => {
                format!("PF {pf} link is {operstate}")
            }
            Problem::PfNoCarrier {
                pf,
                operstate: Some(operstate),
            } => {
                format!("PF {pf} link is down: no carrier (operstate {operstate})")
            }
            Problem::PfNoCarrier {
                pf,
                operstate: None,
            } => {
                format!("PF {pf} link is down: no carrier")
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

/// `operstate` first: where it says down, that is the problem (the
/// carrier, `0` or unreadable, only repeats it). Otherwise a carrier read
/// as `0` is; one not read (`None`) proves nothing.
fn link_problem(pf: &PciFunction) -> Option<Problem> {
    let netdev = pf.netdev.as_ref()?;
    let operstate = netdev.operstate.as_deref();
    if let Some(down) = operstate.filter(|s| link_is_down(s)) {
        return Some(Problem::PfLinkDown {
            pf: netdev.name.clone(),
            operstate: down.to_string(),
        });
    }
    (netdev.carrier == Some(false)).then(|| Problem::PfNoCarrier {
        pf: netdev.name.clone(),
        operstate: operstate.map(str::to_string),
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

    /// Judges `pci-0000-3b-02-1`, a VF of PF `ens1f1np1`, after writing
    /// the PF's `operstate` and, unless `None`, its `carrier` (else the
    /// file is removed, as a read the kernel refused).
    fn vf_with_pf_link(operstate: &str, carrier: Option<&str>) -> Option<Problem> {
        let dir = fixture(Fixture::ConnectX6Dx);
        let netdev = pf_dir(dir.path(), "0000:3b:00.1").join("net/ens1f1np1");
        std::fs::write(netdev.join("operstate"), format!("{operstate}\n")).unwrap();
        match carrier {
            Some(c) => std::fs::write(netdev.join("carrier"), format!("{c}\n")).unwrap(),
            None => std::fs::remove_file(netdev.join("carrier")).unwrap(),
        }
        let inv = NodeInventory::discover(dir.path()).unwrap();
        judge(&inv, ["pci-0000-3b-02-1"])["pci-0000-3b-02-1"].clone()
    }

    #[test]
    fn no_carrier_is_a_link_down_even_when_operstate_is_unknown() {
        let problem = vf_with_pf_link("unknown", Some("0")).unwrap();
        assert_eq!(
            problem,
            Problem::PfNoCarrier {
                pf: "ens1f1np1".into(),
                operstate: Some("unknown".into())
            }
        );
        assert_eq!(problem.reason(), "pf-link-down", "the same taint key");
        assert_eq!(
            problem.message(),
            "PF ens1f1np1 link is down: no carrier (operstate unknown)"
        );
    }

    #[test]
    fn carrier_is_judged_only_when_read_as_0() {
        assert_eq!(vf_with_pf_link("up", Some("1")), None);
        assert_eq!(vf_with_pf_link("unknown", Some("1")), None);
        assert_eq!(vf_with_pf_link("unknown", None), None, "not read");
        assert!(matches!(
            vf_with_pf_link("up", Some("0")),
            Some(Problem::PfNoCarrier { .. })
        ));
    }

    #[test]
    fn carrier_back_clears_it() {
        let dir = fixture(Fixture::ConnectX6Dx);
        let netdev = pf_dir(dir.path(), "0000:3b:00.1").join("net/ens1f1np1");
        std::fs::write(netdev.join("operstate"), "unknown\n").unwrap();
        let verdict = |carrier: &str| {
            std::fs::write(netdev.join("carrier"), format!("{carrier}\n")).unwrap();
            let inv = NodeInventory::discover(dir.path()).unwrap();
            judge(&inv, ["pci-0000-3b-02-1"])["pci-0000-3b-02-1"].clone()
        };
        assert!(verdict("0").is_some());
        assert_eq!(verdict("1"), None);
    }

    #[test]
    fn without_an_operstate_the_message_names_only_the_carrier() {
        let problem = Problem::PfNoCarrier {
            pf: "ens3f0".into(),
            operstate: None,
        };
        assert_eq!(problem.message(), "PF ens3f0 link is down: no carrier");
    }

    #[test]
    fn a_down_operstate_names_the_problem_whatever_the_carrier() {
        let problem = vf_with_pf_link("down", Some("0")).unwrap();
        assert_eq!(problem.message(), "PF ens1f1np1 link is down");
        assert_eq!(
            vf_with_pf_link("down", None).map(|p| p.message()),
            Some("PF ens1f1np1 link is down".to_string()),
            "admin down: the kernel refuses the carrier read"
        );
    }

    #[test]
    fn unknown_operstate_is_not_judged() {
        assert!(!link_is_down("unknown"));
        assert!(!link_is_down("up"));
        assert!(link_is_down("lowerlayerdown"));
    }
}
