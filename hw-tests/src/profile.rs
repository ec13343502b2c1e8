//! Lab profiles: what a lab node has and which cases to run on it, in TOML
//! (see `hw-tests/README.md` and `hw-tests/profiles/`). Strict: a
//! misspelt key is an error naming it, so a typo never silently skips a case.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use ipnetwork::IpNetwork;
use serde::Deserialize;

/// A lab node's profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The node.
    pub node: NodeInfo,
    /// Its NIC models, one entry per model.
    #[serde(rename = "nic")]
    pub nics: Vec<NicProfile>,
}

/// The node a profile describes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Its name, printed in the report.
    pub name: String,
    /// Free text (kernel, firmware, BIOS settings worth knowing).
    #[serde(default)]
    pub description: String,
}

/// One NIC model of the node and what to check on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicProfile {
    /// Model name, heading its part of the report (`ConnectX-6 Dx`).
    pub model: String,
    /// PCI vendor ID, hex without `0x` (`15b3`).
    pub vendor_id: String,
    /// The PFs' PCI device ID, hex (`101d`).
    pub device_id: String,
    /// The PFs' kernel driver (`mlx5_core`, `ice`).
    pub driver: String,
    /// The PFs' interface names expected on the node.
    pub pfs: Vec<String>,
    /// How many VFs each PF must have (the VF creation policy).
    pub num_vfs: u32,
    /// The VF index the single-VF cases use.
    #[serde(default)]
    pub test_vf: u32,
    /// The two VF indexes (of the first PF) the pair cases use.
    #[serde(default = "default_pair")]
    pub pair_vfs: [u32; 2],
    /// Which cases to run; every other case is reported `skipped: not in profile`.
    pub cases: Vec<CaseKind>,
    /// Let `policy/numvfs-resize` destroy and recreate the PF's VFs.
    #[serde(default)]
    pub allow_resize: bool,
    /// Addresses the pair cases give the two VFs.
    #[serde(default)]
    pub peer: Option<PeerAddresses>,
}

fn default_pair() -> [u32; 2] {
    [0, 1]
}

/// The addresses of the two VFs of a pair case, per family.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAddresses {
    /// Two IPv4 addresses with prefix (`192.0.2.1/24`, `192.0.2.2/24`).
    #[serde(default)]
    pub ipv4: Vec<IpNetwork>,
    /// Two IPv6 addresses with prefix.
    #[serde(default)]
    pub ipv6: Vec<IpNetwork>,
}

/// The cases a profile can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseKind {
    /// The inventory matches `lspci` and `ip link`.
    Discovery,
    /// Each PF has the VF count the profile asks for; with
    /// `allow_resize`, also a resize and back.
    VfPolicy,
    /// Every PF-side VF setting set, read back and restored.
    VfSettings,
    /// vfio-pci bind and unbind, with `/dev/vfio/N`.
    Vfio,
    /// Two VFs of one PF in two netns ping each other (v4 and v6).
    PingPair,
    /// A VF's RDMA device moved exclusively into a netns, seen there by `rdma link`.
    RdmaExclusive,
    /// `ib_write_bw` and `ib_send_lat` between the pair's RDMA devices.
    RdmaPerf,
}

impl CaseKind {
    /// Every kind, in report order.
    pub const ALL: [CaseKind; 7] = [
        CaseKind::Discovery,
        CaseKind::VfPolicy,
        CaseKind::VfSettings,
        CaseKind::Vfio,
        CaseKind::PingPair,
        CaseKind::RdmaExclusive,
        CaseKind::RdmaPerf,
    ];
}

impl fmt::Display for CaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaseKind::Discovery => "discovery",
            CaseKind::VfPolicy => "vf-policy",
            CaseKind::VfSettings => "vf-settings",
            CaseKind::Vfio => "vfio",
            CaseKind::PingPair => "ping-pair",
            CaseKind::RdmaExclusive => "rdma-exclusive",
            CaseKind::RdmaPerf => "rdma-perf",
        })
    }
}

impl NicProfile {
    /// Whether the profile asks for `kind`.
    pub fn wants(&self, kind: CaseKind) -> bool {
        self.cases.contains(&kind)
    }
}

impl Profile {
    /// Parses and checks a profile; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, String> {
        let profile: Profile = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        profile.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(profile)
    }

    /// Reads and parses the profile at `path`.
    pub fn load(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    fn check(&self) -> Result<(), String> {
        if self.nics.is_empty() {
            return Err("no [[nic]] entry; expected at least one NIC model".into());
        }
        let mut models = BTreeSet::new();
        for (i, nic) in self.nics.iter().enumerate() {
            let at = format!("nic[{i}] ({})", nic.model);
            if !models.insert(nic.model.as_str()) {
                return Err(format!("{at}: model is listed twice"));
            }
            for (field, id) in [("vendor_id", &nic.vendor_id), ("device_id", &nic.device_id)] {
                if id.len() != 4 || u16::from_str_radix(id, 16).is_err() {
                    return Err(format!(
                        "{at}: {field} {id:?} is not 4 hex digits (e.g. \"15b3\")"
                    ));
                }
            }
            if nic.pfs.is_empty() {
                return Err(format!(
                    "{at}: pfs is empty; expected the PFs' interface names"
                ));
            }
            if nic.test_vf >= nic.num_vfs {
                return Err(format!(
                    "{at}: test_vf {} is not below num_vfs {}",
                    nic.test_vf, nic.num_vfs
                ));
            }
            let [a, b] = nic.pair_vfs;
            if a == b || a >= nic.num_vfs || b >= nic.num_vfs {
                return Err(format!(
                    "{at}: pair_vfs {:?} must be two different VFs below num_vfs {}",
                    nic.pair_vfs, nic.num_vfs
                ));
            }
            if let Some(peer) = &nic.peer {
                for (family, list, v4) in [("ipv4", &peer.ipv4, true), ("ipv6", &peer.ipv6, false)]
                {
                    if !list.is_empty() && list.len() != 2 {
                        return Err(format!(
                            "{at}: peer.{family} has {} addresses; expected 2 (one per VF)",
                            list.len()
                        ));
                    }
                    if list.iter().any(|c| c.is_ipv4() != v4) {
                        return Err(format!(
                            "{at}: peer.{family} holds an address of the other family"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[node]
name = "lab-1"

[[nic]]
model = "E810-C"
vendor_id = "8086"
device_id = "1592"
driver = "ice"
pfs = ["ens2f0"]
num_vfs = 4
cases = ["vf-settings", "ping-pair"]

[nic.peer]
ipv4 = ["192.0.2.1/24", "192.0.2.2/24"]
"#;

    #[test]
    fn a_profile_reads_as_written() {
        let p = Profile::parse(MINIMAL, "lab.toml").unwrap();
        let nic = &p.nics[0];
        assert_eq!((nic.test_vf, nic.pair_vfs), (0, [0, 1]));
        assert!(nic.wants(CaseKind::PingPair) && !nic.wants(CaseKind::Vfio));
        assert_eq!(
            nic.peer.as_ref().unwrap().ipv4[1].to_string(),
            "192.0.2.2/24"
        );
    }

    #[test]
    fn mistakes_are_named_with_the_file() {
        for (change, expected) in [
            (("num_vfs = 4", "numvfs = 4"), "unknown field `numvfs`"),
            (
                ("\"ping-pair\"", "\"pingpair\""),
                "unknown variant `pingpair`",
            ),
            (
                ("device_id = \"1592\"", "device_id = \"0x1592\""),
                "device_id \"0x1592\" is not 4 hex digits",
            ),
            (
                ("num_vfs = 4", "num_vfs = 4\ntest_vf = 4"),
                "test_vf 4 is not below num_vfs 4",
            ),
            (
                ("\"192.0.2.2/24\"", "\"2001:db8::2/64\""),
                "peer.ipv4 holds an address of the other family",
            ),
            (("pfs = [\"ens2f0\"]", "pfs = []"), "pfs is empty"),
        ] {
            let text = MINIMAL.replace(change.0, change.1);
            let err = Profile::parse(&text, "lab.toml").unwrap_err();
            assert!(err.starts_with("lab.toml: "), "{err}");
            assert!(err.contains(expected), "{change:?}: {err}");
        }
    }

    #[test]
    fn the_sample_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        for name in ["connectx6dx.toml", "e810.toml"] {
            let p = Profile::load(&dir.join(name)).unwrap();
            assert_eq!(p.nics.len(), 1, "{name}");
        }
    }
}
