//! VF creation policy (`pfPolicies` in the node config): how many VFs each
//! selected PF should have, and the `sriov_numvfs` writes that get it there.
//!
//! Changing `sriov_numvfs` destroys every VF of the PF, so a PF with a VF
//! prepared for a claim is never resized: the plan is refused with a message
//! naming the PF, the VF and the claim.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PciAddress;
use crate::bind::SysfsWriter;
use crate::sysfs::{SysfsError, link_target_name, list_dir, parse_decimal, read_optional};

/// Which PF a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PfSelector {
    /// The PF's netdev name (`ens1f0`).
    PfName(String),
    /// The PF's PCI address (`0000:3b:00.0`), stable across renames.
    PciAddress(PciAddress),
}

impl PfSelector {
    /// True when `pf` is the PF this selector names.
    pub fn matches(&self, pf: &PfStatus) -> bool {
        match self {
            PfSelector::PfName(name) => pf.netdevs.iter().any(|n| n == name),
            PfSelector::PciAddress(addr) => *addr == pf.address,
        }
    }
}

/// One entry of `pfPolicies`: a PF and the number of VFs it should have.
///
/// Read through [`PfPolicyFields`], because serde cannot refuse unknown
/// fields next to a flattened enum: a misspelt `numvfs: 4` beside
/// `numVfs: 8` must be an error naming it, not silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "PfPolicyFields")]
pub struct PfPolicy {
    /// The PF (`pfName: ens1f0` or `pciAddress: 0000:3b:00.0`).
    #[serde(flatten)]
    pub selector: PfSelector,
    /// Wanted `sriov_numvfs`.
    pub num_vfs: u32,
}

/// A `pfPolicies` entry as written: exactly one of `pfName` and
/// `pciAddress`, and `numVfs`; nothing else.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PfPolicyFields {
    /// The PF's netdev name.
    #[serde(default)]
    pub pf_name: Option<String>,
    /// The PF's PCI address.
    #[serde(default)]
    pub pci_address: Option<PciAddress>,
    /// Wanted `sriov_numvfs`.
    pub num_vfs: u32,
}

impl TryFrom<PfPolicyFields> for PfPolicy {
    type Error = String;

    fn try_from(f: PfPolicyFields) -> Result<Self, String> {
        let selector = match (f.pf_name, f.pci_address) {
            (Some(name), None) => PfSelector::PfName(name),
            (None, Some(address)) => PfSelector::PciAddress(address),
            (Some(_), Some(_)) => {
                return Err("a PF policy names its PF by pfName or by pciAddress, not both".into());
            }
            (None, None) => {
                return Err(
                    "a PF policy needs pfName or pciAddress to say which PF it is for".into(),
                );
            }
        };
        Ok(PfPolicy {
            selector,
            num_vfs: f.num_vfs,
        })
    }
}

/// The SR-IOV facts of one PF that a resize decision needs, read fresh
/// right before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfStatus {
    /// PCI address.
    pub address: PciAddress,
    /// Netdev names (usually one).
    pub netdevs: Vec<String>,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// Addresses of the current VFs (`virtfnN` links).
    pub vfs: Vec<PciAddress>,
}

impl fmt::Display for PfStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.netdevs.first() {
            Some(name) => write!(f, "PF {name} ({})", self.address),
            None => write!(f, "PF {}", self.address),
        }
    }
}

/// Why a policy cannot be planned or applied.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The PF's sysfs attributes could not be read.
    #[error("PF {address}: {source}")]
    Read {
        /// The PF.
        address: PciAddress,
        /// The read failure.
        #[source]
        source: SysfsError,
    },
    /// The device is not an SR-IOV PF.
    #[error("PF {address}: not an SR-IOV physical function ({path} is missing)")]
    NotSriov {
        /// The device.
        address: PciAddress,
        /// The missing attribute.
        path: PathBuf,
    },
    /// More VFs asked for than the device supports.
    #[error("{pf}: numVfs {asked} is more than sriov_totalvfs {total}")]
    TooManyVfs {
        /// The PF, with its name.
        pf: String,
        /// numVfs of the policy.
        asked: u32,
        /// sriov_totalvfs.
        total: u32,
    },
    /// Two policies select the same PF with different counts.
    #[error("{pf}: pfPolicies disagree (numVfs {first} and {second}); one PF needs one policy")]
    Conflict {
        /// The PF.
        pf: String,
        /// The first policy's numVfs.
        first: u32,
        /// The other one's.
        second: u32,
    },
    /// Resizing would destroy a VF that a claim is using.
    #[error(
        "refusing to change sriov_numvfs of {pf} from {from} to {to}: its VF {vf} is prepared for claim {claim}; release the claim first"
    )]
    VfInUse {
        /// The PF, with its name.
        pf: String,
        /// Current numVfs.
        from: u32,
        /// Wanted numVfs.
        to: u32,
        /// The prepared VF.
        vf: PciAddress,
        /// The claim holding it.
        claim: String,
    },
    /// Writing `sriov_numvfs` failed (EBUSY, ENOMEM, driver refused).
    #[error("{pf}: writing {value} to sriov_numvfs failed: {source}{rollback}")]
    Write {
        /// The PF.
        pf: String,
        /// What was written.
        value: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// What became of the VFs the failed resize had already removed
        /// (`; set back to 4 VFs`), empty when nothing had changed.
        rollback: String,
    },
}

impl PfStatus {
    /// Reads a PF's SR-IOV state under `sysfs_root`.
    pub fn read(sysfs_root: &Path, address: PciAddress) -> Result<PfStatus, PolicyError> {
        let dev = sysfs_root.join("bus/pci/devices").join(address.to_string());
        let read = |r: Result<String, SysfsError>| {
            r.map_err(|source| PolicyError::Read { address, source })
        };
        let number = |name: &str| -> Result<u32, PolicyError> {
            let path = dev.join(name);
            let text = read(read_optional(&path).map(|v| v.unwrap_or_default()))?;
            if text.is_empty() {
                return Err(PolicyError::NotSriov { address, path });
            }
            parse_decimal(&path, &text).map_err(|source| PolicyError::Read { address, source })
        };
        let num_vfs = number("sriov_numvfs")?;
        let total_vfs = number("sriov_totalvfs")?;
        let netdevs =
            list_dir(&dev.join("net")).map_err(|source| PolicyError::Read { address, source })?;
        let mut vfs = Vec::new();
        for entry in list_dir(&dev).map_err(|source| PolicyError::Read { address, source })? {
            if !entry.starts_with("virtfn") {
                continue;
            }
            let link = dev.join(&entry);
            let target = link_target_name(&link)
                .map_err(|source| PolicyError::Read { address, source })?
                .unwrap_or_default();
            let vf = target.parse().map_err(|_| PolicyError::Read {
                address,
                source: SysfsError::Parse {
                    path: link,
                    content: target.clone(),
                    expected: "a link to the VF's PCI address",
                },
            })?;
            vfs.push(vf);
        }
        Ok(PfStatus {
            address,
            netdevs,
            num_vfs,
            total_vfs,
            vfs,
        })
    }
}

/// The policy selecting `pf`, if any; two selecting it with different
/// counts are a configuration error.
pub fn policy_for<'a>(
    policies: &'a [PfPolicy],
    pf: &PfStatus,
) -> Result<Option<&'a PfPolicy>, PolicyError> {
    let mut found: Option<&PfPolicy> = None;
    for p in policies.iter().filter(|p| p.selector.matches(pf)) {
        match found {
            Some(first) if first.num_vfs != p.num_vfs => {
                return Err(PolicyError::Conflict {
                    pf: pf.to_string(),
                    first: first.num_vfs,
                    second: p.num_vfs,
                });
            }
            Some(_) => {}
            None => found = Some(p),
        }
    }
    Ok(found)
}

/// What to do with one PF's `sriov_numvfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumVfsPlan {
    /// Already right.
    Unchanged,
    /// Write these values in order: 0 first when VFs exist (the kernel
    /// refuses N→M with EBUSY), then the wanted count.
    Resize {
        /// Current count.
        from: u32,
        /// Wanted count.
        to: u32,
        /// Values to write to `sriov_numvfs`.
        writes: Vec<u32>,
    },
}

/// Plans `policy` for `pf`. `prepared` maps each VF prepared for a claim to
/// that claim's name (from the state store, not only memory).
pub fn plan_num_vfs(
    policy: &PfPolicy,
    pf: &PfStatus,
    prepared: &BTreeMap<PciAddress, String>,
) -> Result<NumVfsPlan, PolicyError> {
    let (from, to) = (pf.num_vfs, policy.num_vfs);
    if from == to {
        return Ok(NumVfsPlan::Unchanged);
    }
    if to > pf.total_vfs {
        return Err(PolicyError::TooManyVfs {
            pf: pf.to_string(),
            asked: to,
            total: pf.total_vfs,
        });
    }
    if let Some((vf, claim)) = pf
        .vfs
        .iter()
        .find_map(|vf| prepared.get(vf).map(|c| (*vf, c)))
    {
        return Err(PolicyError::VfInUse {
            pf: pf.to_string(),
            from,
            to,
            vf,
            claim: claim.clone(),
        });
    }
    let mut writes = Vec::new();
    if from != 0 {
        writes.push(0);
    }
    if to != 0 {
        writes.push(to);
    }
    Ok(NumVfsPlan::Resize { from, to, writes })
}

/// Carries out a plan. The caller re-reads the inventory afterwards: the
/// VFs' addresses, netdevs and IOMMU groups are all new.
pub fn apply_num_vfs(
    writer: &mut impl SysfsWriter,
    pf: &PfStatus,
    plan: &NumVfsPlan,
) -> Result<(), PolicyError> {
    let NumVfsPlan::Resize { writes, .. } = plan else {
        return Ok(());
    };
    let rel = Path::new("bus/pci/devices")
        .join(pf.address.to_string())
        .join("sriov_numvfs");
    for (i, value) in writes.iter().enumerate() {
        if let Err(source) = writer.write(&rel, &value.to_string()) {
            // Past the first write the PF has 0 VFs: a node left without the
            // VFs it had is worse than one without the count it asked for.
            let rollback = if i == 0 || pf.num_vfs == 0 {
                String::new()
            } else {
                match writer.write(&rel, &pf.num_vfs.to_string()) {
                    Ok(()) => format!("; set back to {} VFs", pf.num_vfs),
                    Err(e) => format!(
                        "; setting it back to {} VFs failed too ({e}): the PF has none now",
                        pf.num_vfs
                    ),
                }
            };
            return Err(PolicyError::Write {
                pf: pf.to_string(),
                value: *value,
                source,
                rollback,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RecordingSysfsWriter;
    use std::fs;
    use std::os::unix::fs::symlink;

    const PF: &str = "0000:3b:00.0";

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    /// PF ens1f0 with `n` VFs at 0000:3b:02.<i>, 8 VFs at most.
    fn tree(n: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let real = root.join("devices/pci0000:3b").join(PF);
        fs::create_dir_all(real.join("net/ens1f0")).unwrap();
        fs::write(real.join("sriov_numvfs"), format!("{n}\n")).unwrap();
        fs::write(real.join("sriov_totalvfs"), "8\n").unwrap();
        for i in 0..n {
            let vf = format!("0000:3b:02.{i}");
            fs::create_dir_all(root.join("devices/pci0000:3b").join(&vf)).unwrap();
            symlink(format!("../{vf}"), real.join(format!("virtfn{i}"))).unwrap();
        }
        fs::create_dir_all(root.join("bus/pci/devices")).unwrap();
        symlink(
            format!("../../../devices/pci0000:3b/{PF}"),
            root.join("bus/pci/devices").join(PF),
        )
        .unwrap();
        dir
    }

    fn policy(yaml_like_json: &str) -> PfPolicy {
        serde_json::from_str(yaml_like_json).unwrap()
    }

    #[test]
    fn a_policy_entry_is_parsed_strictly() {
        let parse = |json: &str| serde_json::from_str::<PfPolicy>(json).map_err(|e| e.to_string());
        assert_eq!(
            parse(r#"{"pciAddress": "0000:3b:00.0", "numVfs": 4}"#)
                .unwrap()
                .selector,
            PfSelector::PciAddress(addr(PF))
        );
        for (json, needle) in [
            (
                r#"{"pfName": "ens1f0", "numVfs": 8, "numvfs": 4}"#,
                "numvfs",
            ),
            (
                r#"{"pfName": "ens1f0", "pciAddress": "0000:3b:00.0", "numVfs": 8}"#,
                "not both",
            ),
            (r#"{"numVfs": 8}"#, "pfName or pciAddress"),
            (r#"{"pfName": "ens1f0"}"#, "numVfs"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        // What is written reads back.
        let p = parse(r#"{"pfName": "ens1f0", "numVfs": 8}"#).unwrap();
        let back = serde_json::to_string(&p).unwrap();
        assert_eq!(back, r#"{"pfName":"ens1f0","numVfs":8}"#);
        assert_eq!(parse(&back).unwrap(), p);
    }

    #[test]
    fn reads_the_pf_and_its_vfs() {
        let dir = tree(2);
        let pf = PfStatus::read(dir.path(), addr(PF)).unwrap();
        assert_eq!(pf.num_vfs, 2);
        assert_eq!(pf.total_vfs, 8);
        assert_eq!(pf.netdevs, ["ens1f0"]);
        assert_eq!(pf.vfs, [addr("0000:3b:02.0"), addr("0000:3b:02.1")]);
    }

    #[test]
    fn policies_select_by_name_or_address_in_config_spelling() {
        let dir = tree(0);
        let pf = PfStatus::read(dir.path(), addr(PF)).unwrap();
        let by_name = policy(r#"{"pfName": "ens1f0", "numVfs": 4}"#);
        let by_addr = policy(r#"{"pciAddress": "0000:3b:00.0", "numVfs": 4}"#);
        let other = policy(r#"{"pfName": "ens2f0", "numVfs": 2}"#);
        assert!(by_name.selector.matches(&pf) && by_addr.selector.matches(&pf));
        assert!(!other.selector.matches(&pf));
        let list = [other.clone(), by_name.clone(), by_addr];
        assert_eq!(policy_for(&list, &pf).unwrap(), Some(&by_name));
        let conflicting = [by_name, policy(r#"{"pfName": "ens1f0", "numVfs": 6}"#)];
        let err = policy_for(&conflicting, &pf).unwrap_err().to_string();
        assert_eq!(
            err,
            "PF ens1f0 (0000:3b:00.0): pfPolicies disagree (numVfs 4 and 6); one PF needs one policy"
        );
    }

    #[test]
    fn resize_writes_zero_then_n_and_nothing_when_equal() {
        let dir = tree(2);
        let pf = PfStatus::read(dir.path(), addr(PF)).unwrap();
        let none = BTreeMap::new();
        let plan =
            plan_num_vfs(&policy(r#"{"pfName": "ens1f0", "numVfs": 4}"#), &pf, &none).unwrap();
        assert_eq!(
            plan,
            NumVfsPlan::Resize {
                from: 2,
                to: 4,
                writes: vec![0, 4]
            }
        );
        let same =
            plan_num_vfs(&policy(r#"{"pfName": "ens1f0", "numVfs": 2}"#), &pf, &none).unwrap();
        assert_eq!(same, NumVfsPlan::Unchanged);

        let mut writer = RecordingSysfsWriter::inert(dir.path());
        apply_num_vfs(&mut writer, &pf, &plan).unwrap();
        assert_eq!(
            writer.log(),
            [
                format!("bus/pci/devices/{PF}/sriov_numvfs=0"),
                format!("bus/pci/devices/{PF}/sriov_numvfs=4")
            ]
        );
    }

    #[test]
    fn from_zero_only_n_is_written() {
        let dir = tree(0);
        let pf = PfStatus::read(dir.path(), addr(PF)).unwrap();
        let plan = plan_num_vfs(
            &policy(r#"{"pfName": "ens1f0", "numVfs": 8}"#),
            &pf,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            plan,
            NumVfsPlan::Resize {
                from: 0,
                to: 8,
                writes: vec![8]
            }
        );
    }

    #[test]
    fn refuses_to_resize_a_pf_with_a_prepared_vf() {
        let dir = tree(2);
        let pf = PfStatus::read(dir.path(), addr(PF)).unwrap();
        let prepared = BTreeMap::from([(addr("0000:3b:02.1"), "ran/fronthaul-0".to_string())]);
        let err = plan_num_vfs(
            &policy(r#"{"pfName": "ens1f0", "numVfs": 4}"#),
            &pf,
            &prepared,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to change sriov_numvfs of PF ens1f0 (0000:3b:00.0) from 2 to 4: its VF 0000:3b:02.1 is prepared for claim ran/fronthaul-0; release the claim first"
        );
        // A prepared VF of another PF does not block this one.
        let elsewhere = BTreeMap::from([(addr("0000:5e:02.1"), "x/y".to_string())]);
        assert!(
            plan_num_vfs(
                &policy(r#"{"pfName": "ens1f0", "numVfs": 4}"#),
                &pf,
                &elsewhere
            )
            .is_ok()
        );
    }

    /// Writes that fail for one value, as a driver refusing a VF count.
    struct Refusing {
        refuse: &'static str,
        log: Vec<String>,
    }

    impl SysfsWriter for Refusing {
        fn write(&mut self, _: &Path, value: &str) -> std::io::Result<()> {
            self.log.push(value.to_string());
            if value == self.refuse {
                return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
            }
            Ok(())
        }
    }

    #[test]
    fn a_failed_resize_puts_the_old_vf_count_back() {
        let dir = tree(2);
        let pf = PfStatus::read(dir.path(), addr(PF)).unwrap();
        let plan = plan_num_vfs(
            &policy(r#"{"pfName": "ens1f0", "numVfs": 8}"#),
            &pf,
            &BTreeMap::new(),
        )
        .unwrap();
        let mut w = Refusing {
            refuse: "8",
            log: Vec::new(),
        };
        let err = apply_num_vfs(&mut w, &pf, &plan).unwrap_err().to_string();
        assert_eq!(w.log, ["0", "8", "2"]);
        assert!(err.ends_with("; set back to 2 VFs"), "{err}");
        let mut w = Refusing {
            refuse: "0",
            log: Vec::new(),
        };
        let err = apply_num_vfs(&mut w, &pf, &plan).unwrap_err().to_string();
        assert_eq!(w.log, ["0"], "nothing changed, nothing to put back");
        assert!(err.contains("writing 0 to sriov_numvfs failed"), "{err}");
    }

    #[test]
    fn more_vfs_than_the_device_supports_is_an_error() {
        let dir = tree(0);
        let pf = PfStatus::read(dir.path(), addr(PF)).unwrap();
        let err = plan_num_vfs(
            &policy(r#"{"pfName": "ens1f0", "numVfs": 9}"#),
            &pf,
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PF ens1f0 (0000:3b:00.0): numVfs 9 is more than sriov_totalvfs 8"
        );
    }

    #[test]
    fn a_device_without_sriov_is_named() {
        let dir = tree(0);
        fs::remove_file(
            dir.path()
                .join("devices/pci0000:3b")
                .join(PF)
                .join("sriov_totalvfs"),
        )
        .unwrap();
        let err = PfStatus::read(dir.path(), addr(PF))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("PF 0000:3b:00.0: not an SR-IOV physical function"),
            "{err}"
        );
    }
}
