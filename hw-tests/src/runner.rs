//! Runs a profile's cases, NIC model by NIC model, on this node or on the
//! simulated NIC, and collects the report. Every case is listed for every
//! model: the ones a profile leaves out as `skipped`, the ones this node
//! cannot run as `needs hardware`, and in a simulated run every case that
//! ran as `simulated`, never `pass`.

use std::path::{Path, PathBuf};

use sriov::PciAddress;
use sriov::bind::{DriverBinder, FsSysfsWriter};
use sriov::fixture::Fixture;
use sriov::netlink::RouteSocket;
use sriov::policy::PfStatus;
use sriov::testing::RecordingSysfsWriter;
use sriov::testing::sim_pf::{DriverProfile, SimulatedPf};
use sriov::vf_config::VfTarget;

use crate::cases::{self, CaseResult, NoIndependentReader, Outcome};
use crate::discovery;
use crate::iproute::IpLinkReader;
use crate::pair;
use crate::profile::{CaseKind, NicProfile, NodeInfo, Profile};
use crate::report::{Entry, NicReport, Report, timed};
use crate::sim_sysfs::SimSysfs;
use crate::tools::need_root;

/// Runs `profile` on this node (sysfs at `sysfs_root`, devices at `/dev`).
pub fn run_on_node(profile: &Profile, sysfs_root: &Path) -> Report {
    Report {
        node: profile.node.name.clone(),
        simulated: false,
        nics: profile
            .nics
            .iter()
            .map(|nic| NicReport {
                model: nic.model.clone(),
                pfs: nic.pfs.clone(),
                entries: nic_on_node(nic, sysfs_root),
            })
            .collect(),
    }
}

/// The PCI address behind interface `pf`.
fn pf_address(sysfs_root: &Path, pf: &str) -> Result<PciAddress, String> {
    let link = sysfs_root.join("class/net").join(pf).join("device");
    let target = std::fs::read_link(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} points nowhere", link.display()))?
        .parse()
        .map_err(|e| format!("{}: {e}", link.display()))
}

fn nic_on_node(nic: &NicProfile, sysfs_root: &Path) -> Vec<Entry> {
    let pf = &nic.pfs[0];
    // Without the PF there is nothing to run: every case says so.
    let missing: Vec<&String> = nic
        .pfs
        .iter()
        .filter(|p| !sysfs_root.join("class/net").join(p).exists())
        .collect();
    let mut entries = Vec::new();
    for kind in CaseKind::ALL {
        if !nic.wants(kind) {
            entries.push(Entry::instant(
                kind.to_string(),
                Outcome::Skipped("not in the profile's cases".into()),
            ));
            continue;
        }
        if !missing.is_empty() {
            entries.push(Entry::instant(
                kind.to_string(),
                Outcome::NeedsHardware(format!(
                    "PF {} is not on this node",
                    missing
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ));
            continue;
        }
        if let Err(e) = need_root() {
            entries.push(Entry::instant(kind.to_string(), Outcome::Skipped(e)));
            continue;
        }
        match kind {
            CaseKind::Discovery => entries.push(timed(|| CaseResult {
                name: "discovery/matches-lspci-ip".into(),
                outcome: discovery::check(sysfs_root, nic),
            })),
            CaseKind::VfPolicy => {
                let pfs: Result<Vec<(String, PciAddress)>, String> = nic
                    .pfs
                    .iter()
                    .map(|p| pf_address(sysfs_root, p).map(|a| (p.clone(), a)))
                    .collect();
                match pfs {
                    Err(e) => entries.push(Entry::instant("policy/vf-count", Outcome::Fail(e))),
                    Ok(pfs) => {
                        entries.push(timed(|| vf_count_case(sysfs_root, &pfs, nic.num_vfs)));
                        entries.push(if nic.allow_resize {
                            let mut writer = FsSysfsWriter::new(sysfs_root);
                            timed(|| cases::run_resize_case(&mut writer, sysfs_root, pfs[0].1))
                        } else {
                            Entry::instant(
                                "policy/numvfs-resize",
                                Outcome::Skipped("allow_resize = false in the profile".into()),
                            )
                        });
                    }
                }
            }
            CaseKind::VfSettings => match RouteSocket::new() {
                Err(e) => entries.push(Entry::instant("vf-settings", Outcome::Fail(e.to_string()))),
                Ok(mut socket) => {
                    let target = VfTarget {
                        pf: pf.clone(),
                        vf: nic.test_vf,
                    };
                    for case in cases::setting_cases() {
                        entries.push(timed(|| {
                            cases::run_setting_case(&mut socket, &mut IpLinkReader, &target, &case)
                        }));
                    }
                }
            },
            CaseKind::Vfio => {
                let vf = pf_address(sysfs_root, pf).and_then(|_| {
                    let link = sysfs_root
                        .join("class/net")
                        .join(pf)
                        .join(format!("device/virtfn{}", nic.test_vf));
                    let target = std::fs::read_link(&link)
                        .map_err(|e| format!("{}: {e}", link.display()))?;
                    target
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .parse::<PciAddress>()
                        .map_err(|e| format!("{}: {e}", link.display()))
                });
                match vf {
                    Err(e) => entries.push(Entry::instant(
                        "bind/vfio-roundtrip",
                        Outcome::NeedsHardware(format!("VF {} of {pf}: {e}", nic.test_vf)),
                    )),
                    Ok(vf) => {
                        let mut binder =
                            DriverBinder::new(sysfs_root, "/dev", FsSysfsWriter::new(sysfs_root));
                        entries.push(timed(|| cases::run_bind_case(&mut binder, vf)));
                    }
                }
            }
            CaseKind::PingPair => entries.extend(pair::ping_cases(sysfs_root, nic)),
            CaseKind::RdmaExclusive => entries.push(pair::rdma_move_case(sysfs_root, nic)),
            CaseKind::RdmaPerf => entries.extend(pair::perf_cases(sysfs_root, nic)),
        }
    }
    entries
}

/// `policy/vf-count`: every PF has the profile's VF count, as sriov-dra's
/// `pfPolicies` would leave it (a differing count is what the driver would
/// recreate at start, destroying every VF of the PF).
pub fn vf_count_case(sysfs_root: &Path, pfs: &[(String, PciAddress)], want: u32) -> CaseResult {
    let mut wrong = Vec::new();
    for (name, address) in pfs {
        match PfStatus::read(sysfs_root, *address) {
            Err(e) => wrong.push(format!("PF {name}: {e}")),
            Ok(s) if s.total_vfs < want => wrong.push(format!(
                "PF {name} supports {} VFs (sriov_totalvfs); the profile wants {want}",
                s.total_vfs
            )),
            Ok(s) if s.num_vfs != want || s.vfs.len() != want as usize => wrong.push(format!(
                "PF {name} has {} VFs ({} virtfn links); the profile wants {want} (pfPolicies numVfs: {want} would recreate them)",
                s.num_vfs,
                s.vfs.len()
            )),
            Ok(_) => {}
        }
    }
    CaseResult {
        name: "policy/vf-count".into(),
        outcome: if wrong.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail(wrong.join("; "))
        },
    }
}

/// The profile `--simulate` runs: one simulated ConnectX, every case.
pub fn simulated_profile() -> Profile {
    Profile {
        node: NodeInfo {
            name: "a simulated node".into(),
            description: "CI: simulated mlx5 PF and fixture sysfs".into(),
        },
        nics: vec![NicProfile {
            model: "simulated mlx5 (ConnectX-6 Dx, legacy eswitch)".into(),
            vendor_id: "15b3".into(),
            device_id: "101d".into(),
            driver: "mlx5_core".into(),
            pfs: vec!["ens1f0".into()],
            num_vfs: 8,
            test_vf: 3,
            pair_vfs: [0, 1],
            cases: CaseKind::ALL.to_vec(),
            allow_resize: true,
            peer: None,
        }],
    }
}

/// Runs the simulated profile: the PF-side settings against a
/// [`SimulatedPf`], binding and VF counts on the E810 fixture with a
/// kernel-like writer. Nothing here is reported as a pass.
pub fn run_simulated(scratch: &Path) -> Result<Report, String> {
    let profile = simulated_profile();
    let nic = &profile.nics[0];
    let mut entries = Vec::new();
    for kind in CaseKind::ALL {
        match kind {
            CaseKind::Discovery => entries.push(Entry::instant(
                "discovery/matches-lspci-ip",
                Outcome::NeedsHardware(
                    "lspci and ip link see this machine, not the simulated NIC".into(),
                ),
            )),
            CaseKind::VfPolicy => {
                let tree = fixture(scratch, "policy")?;
                let pf: PciAddress = "0000:af:00.0".parse().map_err(|e| format!("{e}"))?;
                let count = PfStatus::read(&tree, pf)
                    .map_err(|e| e.to_string())?
                    .num_vfs;
                entries.push(simulated(
                    timed(|| vf_count_case(&tree, &[("ens2f0".into(), pf)], count)),
                    "E810 fixture sysfs",
                    "sriov_numvfs and virtfn links agree",
                ));
                let mut writer = SimSysfs::new(&tree, RecordingSysfsWriter::new(&tree));
                entries.push(simulated(
                    timed(|| cases::run_resize_case(&mut writer, &tree, pf)),
                    "E810 fixture sysfs with the kernel's sriov_numvfs rules",
                    "resized and back",
                ));
            }
            CaseKind::VfSettings => {
                let mut pf =
                    SimulatedPf::new(&nic.pfs[0], nic.num_vfs, DriverProfile::mlx5_legacy());
                let target = VfTarget {
                    pf: nic.pfs[0].clone(),
                    vf: nic.test_vf,
                };
                for case in cases::setting_cases() {
                    entries.push(simulated(
                        timed(|| {
                            cases::run_setting_case(
                                &mut pf,
                                &mut NoIndependentReader,
                                &target,
                                &case,
                            )
                        }),
                        "simulated mlx5 PF over the netlink wire format",
                        "set, read back, restored",
                    ));
                }
            }
            CaseKind::Vfio => {
                let tree = fixture(scratch, "vfio")?;
                let vf: PciAddress = "0000:af:01.0".parse().map_err(|e| format!("{e}"))?;
                let dev = tree.join("dev");
                std::fs::create_dir_all(&dev).map_err(|e| format!("{}: {e}", dev.display()))?;
                let writer = RecordingSysfsWriter::new(&tree).with_default_driver(vf, "iavf");
                let mut binder =
                    DriverBinder::new(&tree, &dev, SimSysfs::new(&tree, writer).with_dev(&dev));
                entries.push(simulated(
                    timed(|| cases::run_bind_case(&mut binder, vf)),
                    "E810 fixture sysfs with a kernel-like writer",
                    "bound to vfio-pci, /dev/vfio/N there, restored",
                ));
            }
            CaseKind::PingPair => {
                for case in ["traffic/ping-v4", "traffic/ping-v6"] {
                    entries.push(Entry::instant(
                        case,
                        Outcome::NeedsHardware("two VFs of a real PF".into()),
                    ));
                }
            }
            CaseKind::RdmaExclusive => entries.push(Entry::instant(
                "rdma/exclusive-move",
                Outcome::NeedsHardware("a VF with an RDMA device".into()),
            )),
            CaseKind::RdmaPerf => {
                for case in ["rdma/ib_write_bw", "rdma/ib_send_lat"] {
                    entries.push(Entry::instant(
                        case,
                        Outcome::NeedsHardware("two RDMA VFs and perftest".into()),
                    ));
                }
            }
        }
    }
    Ok(Report {
        node: profile.node.name.clone(),
        simulated: true,
        nics: vec![NicReport {
            model: nic.model.clone(),
            pfs: nic.pfs.clone(),
            entries,
        }],
    })
}

fn simulated(mut entry: Entry, source: &str, done: &str) -> Entry {
    entry.outcome = entry.outcome.as_simulated(source, done);
    entry
}

/// A fresh E810 fixture tree under `scratch`.
fn fixture(scratch: &Path, name: &str) -> Result<PathBuf, String> {
    let tree = scratch.join(name);
    Fixture::E810
        .build(&tree)
        .map_err(|e| format!("fixture {}: {e}", tree.display()))?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_run_never_passes_and_lists_every_case() {
        let dir = tempfile::tempdir().unwrap();
        let report = run_simulated(dir.path()).unwrap();
        let entries = &report.nics[0].entries;
        assert!(
            report.simulated && !report.failed(),
            "{}",
            report.markdown()
        );
        assert!(
            entries.iter().all(|e| e.outcome.result() != "pass"),
            "{}",
            report.markdown()
        );
        for case in [
            "discovery/matches-lspci-ip",
            "policy/vf-count",
            "policy/numvfs-resize",
            "vf-settings/vlan",
            "bind/vfio-roundtrip",
            "traffic/ping-v6",
            "rdma/exclusive-move",
            "rdma/ib_send_lat",
        ] {
            assert!(entries.iter().any(|e| e.case == case), "{case} missing");
        }
    }

    #[test]
    fn a_profile_on_a_node_without_its_nic_needs_hardware() {
        let dir = tempfile::tempdir().unwrap();
        let mut profile = simulated_profile();
        profile.nics[0].pfs = vec!["no-such-pf0".into()];
        profile.nics[0].cases = vec![CaseKind::Discovery, CaseKind::VfSettings];
        let report = run_on_node(&profile, dir.path());
        let entries = &report.nics[0].entries;
        assert_eq!(entries.len(), CaseKind::ALL.len());
        for e in entries {
            match e.case.as_str() {
                "discovery" | "vf-settings" => assert_eq!(
                    e.outcome,
                    Outcome::NeedsHardware("PF no-such-pf0 is not on this node".into())
                ),
                _ => assert_eq!(
                    e.outcome,
                    Outcome::Skipped("not in the profile's cases".into())
                ),
            }
        }
    }

    #[test]
    fn a_wrong_vf_count_names_the_pf_and_both_counts() {
        let dir = tempfile::tempdir().unwrap();
        Fixture::E810.build(dir.path()).unwrap();
        let pf: PciAddress = "0000:af:00.0".parse().unwrap();
        let r = vf_count_case(dir.path(), &[("ens2f0".into(), pf)], 16);
        let Outcome::Fail(reason) = r.outcome else {
            panic!("{:?}", r.outcome)
        };
        assert!(reason.starts_with("PF ens2f0 "), "{reason}");
    }
}
