//! The node a crash case runs the driver on: its home (config, state,
//! sockets, the test API from `sriov_dra::testing`), the pod's network
//! namespace, the claim, and the VFs with how they were before anything
//! touched them — on a lab node the profile's real VFs (and their PF-side
//! settings), in a simulated run a macvlan stand-in in a fixture sysfs.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sriov::PciAddress;
use sriov::netlink::RouteSocket;
use sriov::netlink::RouteTransport;
use sriov::netlink::link::{self};
use sriov::vf_config::{self, VfState, VfTarget};
use sriov_dra::attach::netns::PinnedNetns;
use sriov_dra::testing::claim_object::{Allocation, allocated_claim, vf_config};
use sriov_dra::testing::driver_home::{DriverHome, dual_stack_pool_yaml};
use sriov_dra::testing::driver_process::ClaimId;
use sriov_dra::testing::netns::{StandIn, facts, stand_in_tree};
use sriov_dra::testing::vf_place::{Seen, look};

use crate::profile::NicProfile;
use crate::tools::vf_netdev;

/// The driver name the node config sets.
pub const DRIVER: &str = "sriov.dra.dev";
/// The node's name (the slices' pool).
pub const NODE: &str = "lab-crash";
/// The claim's and the pod's namespace.
pub const NAMESPACE: &str = "lab";
/// The pod's name.
pub const POD: &str = "crash-pod";
/// The pod's UID.
pub const POD_UID: &str = "pod-lab-crash";
/// The claim's name.
pub const CLAIM: &str = "crash-claim";
/// The interface name the netdevice VF gets in the pod.
pub const IF_NAME: &str = "crash0";
/// The MTU the claim asks for (below any VF's default, so a detach must
/// restore it).
pub const MTU: u32 = 1400;
/// The VLAN the claim asks for on a real PF.
pub const VLAN: u16 = 1017;
/// The pool the claim's addresses come from (documentation ranges).
pub const POOL: &str = "crash";
/// The pool's IPv4 subnet.
pub const POOL_V4: &str = "203.0.113.0/24";
/// The pool's IPv6 subnet.
pub const POOL_V6: &str = "2001:db8:c4a5::/64";
/// The pool's route (destination, gateway), added in the pod.
pub const ROUTE: (&str, &str) = ("198.18.0.0/15", "203.0.113.1");

/// A VF's PF-side settings as the PF reports them.
pub struct PfSide {
    /// The PF and VF index.
    pub target: VfTarget,
    /// The settings before the case.
    pub original: VfState,
}

impl PfSide {
    fn read(pf: &str, vf: u32) -> Result<PfSide, String> {
        let target = VfTarget {
            pf: pf.to_string(),
            vf,
        };
        let mut socket = RouteSocket::new().map_err(|e| e.to_string())?;
        let original = vf_config::read_vf_state(&mut socket, &target)
            .map_err(|e| format!("VF {vf} of {pf}: {e}"))?;
        Ok(PfSide { target, original })
    }

    /// The settings now.
    pub fn now(&self) -> Result<VfState, String> {
        let mut socket = RouteSocket::new().map_err(|e| e.to_string())?;
        vf_config::read_vf_state(&mut socket, &self.target).map_err(|e| e.to_string())
    }
}

/// The VF the claim uses as a netdevice: moved into the pod.
pub struct NetdevVf {
    /// Its PCI address (its device name in the slices).
    pub pci: PciAddress,
    /// How the host saw it before the case: what "home" means.
    pub original: Seen,
    /// Its PF-side settings, on a real PF.
    pub pf: Option<PfSide>,
}

/// The VF the claim asks for in `dpdk` mode: bound to vfio-pci, no netdev
/// while prepared.
pub struct DpdkVf {
    /// Its PCI address.
    pub pci: PciAddress,
    /// Its kernel driver before the case.
    pub original_driver: String,
    /// Its netdev name before the case.
    pub original_name: String,
    /// Its PF-side settings.
    pub pf: PfSide,
}

/// Everything a crash case's driver works on.
pub struct LabNode {
    /// A simulated run's stand-in VF (deleted first on drop).
    _stand_in: Option<StandIn>,
    /// The netdevice VF.
    pub netdev: NetdevVf,
    /// The DPDK VF, when the profile allows DPDK and vfio-pci is there.
    pub dpdk: Option<DpdkVf>,
    /// The pod's network namespace.
    pub netns: PinnedNetns,
    /// The sysfs the driver reads.
    pub sysfs_root: PathBuf,
    /// The pod's claim, as the kubelet names it.
    pub claim: ClaimId,
    _sysfs: Option<tempfile::TempDir>,
    /// The driver's home and the test API. Last: removed after the rest.
    pub home: DriverHome,
}

impl LabNode {
    /// A stand-in VF (a macvlan, up) named in a fixture sysfs: what the
    /// simulated run uses. Needs root.
    pub async fn simulated() -> Result<LabNode, String> {
        let mut host = RouteSocket::new().map_err(|e| e.to_string())?;
        let stand_in = StandIn::new(&mut host);
        let f = facts(&mut host, &stand_in.name).ok_or("the stand-in VF vanished")?;
        host.request("stand-in up", link::set_up_message(f.index, true), 0)
            .map_err(|e| e.to_string())?;
        let pci = PciAddress::new(0, 0x7d, 1, 0).ok_or("a PCI address")?;
        let original = look(&mut host, &f.mac)?.ok_or("the stand-in VF vanished")?;
        let sysfs = stand_in_tree(&[(pci, Some(stand_in.name.as_str()))]);
        let sysfs_root = sysfs.path().to_path_buf();
        let netdev = NetdevVf {
            pci,
            original,
            pf: None,
        };
        Self::finish(
            netdev,
            None,
            sysfs_root,
            Some(sysfs),
            Some(stand_in),
            "offerPfs: true\n".into(),
        )
        .await
    }

    /// The profile's VFs of its first PF: `test_vf` as the netdevice VF
    /// and, with `dpdk`, the first other pair VF as the DPDK one.
    pub async fn on_hardware(
        nic: &NicProfile,
        sysfs_root: &Path,
        dpdk: bool,
    ) -> Result<LabNode, String> {
        let pf = &nic.pfs[0];
        let name = vf_netdev(sysfs_root, pf, nic.test_vf)?;
        let mut host = RouteSocket::new().map_err(|e| e.to_string())?;
        let f = facts(&mut host, &name)
            .ok_or_else(|| format!("VF netdev {name} is not in the host"))?;
        let original =
            look(&mut host, &f.mac)?.ok_or_else(|| format!("VF netdev {name} vanished"))?;
        let netdev = NetdevVf {
            pci: vf_pci(sysfs_root, pf, nic.test_vf)?,
            original,
            pf: Some(PfSide::read(pf, nic.test_vf)?),
        };
        let mut vfs = vec![nic.test_vf];
        let dpdk = match dpdk.then(|| dpdk_vf(nic)).flatten() {
            None => None,
            Some(vf) => {
                vfs.push(vf);
                let pci = vf_pci(sysfs_root, pf, vf)?;
                let device = sysfs_root.join("bus/pci/devices").join(pci.to_string());
                Some(DpdkVf {
                    pci,
                    original_driver: link_name(&device.join("driver"))?,
                    original_name: vf_netdev(sysfs_root, pf, vf)?,
                    pf: PfSide::read(pf, vf)?,
                })
            }
        };
        let selectors: Vec<String> = vfs.iter().map(|v| format!("\"{pf}#{v}\"")).collect();
        let extra = format!("selectors:\n  - pfNames: [{}]\n", selectors.join(", "));
        Self::finish(netdev, dpdk, sysfs_root.to_path_buf(), None, None, extra).await
    }

    async fn finish(
        netdev: NetdevVf,
        dpdk: Option<DpdkVf>,
        sysfs_root: PathBuf,
        sysfs: Option<tempfile::TempDir>,
        stand_in: Option<StandIn>,
        selectors: String,
    ) -> Result<LabNode, String> {
        let home = DriverHome::new(DRIVER, NODE)
            .await
            .map_err(|e| format!("driver home: {e}"))?;
        home.write_config(
            &sysfs_root,
            &(selectors + &dual_stack_pool_yaml(POOL, POOL_V4, POOL_V6, ROUTE)),
        )
        .map_err(|e| format!("node config: {e}"))?;
        let netns_dir = home.dir.path().join("netns");
        std::fs::create_dir_all(&netns_dir).map_err(|e| format!("{}: {e}", netns_dir.display()))?;
        let netns =
            PinnedNetns::create(&netns_dir.join("pod")).map_err(|e| format!("pod netns: {e}"))?;
        let claim = ClaimId {
            namespace: NAMESPACE.into(),
            name: CLAIM.into(),
            uid: "uid-lab-crash-claim".into(),
        };
        let spec = ClaimSpec {
            netdev: netdev.pci.device_name(),
            dpdk: dpdk.as_ref().map(|d| d.pci.device_name()),
            pf_settings: netdev.pf.is_some(),
        };
        home.api.put_claim(&claim_json(&spec, &claim));
        Ok(LabNode {
            _stand_in: stand_in,
            netdev,
            dpdk,
            netns,
            sysfs_root,
            claim,
            _sysfs: sysfs,
            home,
        })
    }
}

/// The VF a DPDK request uses: the first pair VF that is not `test_vf`.
pub fn dpdk_vf(nic: &NicProfile) -> Option<u32> {
    nic.pair_vfs.into_iter().find(|v| *v != nic.test_vf)
}

/// Whether the DPDK VF can be bound to vfio-pci on this node: the driver
/// is loaded and the VF has an IOMMU group.
pub fn vfio_ready(nic: &NicProfile, sysfs_root: &Path) -> bool {
    let Some(vf) = dpdk_vf(nic) else {
        return false;
    };
    sysfs_root.join("bus/pci/drivers/vfio-pci").is_dir()
        && sysfs_root
            .join("class/net")
            .join(&nic.pfs[0])
            .join(format!("device/virtfn{vf}/iommu_group"))
            .exists()
}

/// The PCI address of VF `vf` of the PF called `pf`.
fn vf_pci(sysfs_root: &Path, pf: &str, vf: u32) -> Result<PciAddress, String> {
    let link = sysfs_root
        .join("class/net")
        .join(pf)
        .join(format!("device/virtfn{vf}"));
    link_name(&link)?
        .parse()
        .map_err(|e| format!("{}: {e}", link.display()))
}

/// The last path component of a symlink's target (a driver, a PCI address).
pub fn link_name(link: &Path) -> Result<String, String> {
    let target = std::fs::read_link(link).map_err(|e| format!("{}: {e}", link.display()))?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{} points nowhere", link.display()))
}

/// What the crash claim asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSpec {
    /// The netdevice VF's device name.
    pub netdev: String,
    /// The DPDK VF's device name, if any.
    pub dpdk: Option<String>,
    /// Whether the netdevice VF gets PF-side settings (VLAN, trust): only
    /// on a real PF.
    pub pf_settings: bool,
}

/// The claim as the scheduler leaves it: allocated on this node, reserved
/// for the pod; the class's `VfPolicy` lets it set the VLAN, trust and the
/// DPDK mode. The DPDK request comes first, so its claim's first change
/// is a vfio binding (where `prepare::record_plan` fires).
pub fn claim_json(spec: &ClaimSpec, claim: &ClaimId) -> Value {
    let mut devices: Vec<(&str, &str, Value)> = Vec::new();
    if let Some(device) = &spec.dpdk {
        devices.push(("dpdk", device, json!({"mode": "dpdk"})));
    }
    let mut netdev = json!({"ifName": IF_NAME, "mtu": MTU, "ipam": {"pool": POOL}});
    if spec.pf_settings {
        netdev["vlan"] = json!(VLAN);
        netdev["trust"] = json!(true);
    }
    devices.push(("net", &spec.netdev, netdev));
    let names: Vec<&str> = devices.iter().map(|(r, _, _)| *r).collect();
    let mut configs = vec![json!({"source": "FromClass", "requests": names, "opaque": {
        "driver": DRIVER, "parameters": {
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy",
            "allowedVlans": [VLAN.to_string()], "allowedPools": [POOL],
            "claimMaySet": ["trust", "mode", "mtu", "routes"]}}})];
    configs.extend(
        devices
            .iter()
            .map(|(r, _, config)| vf_config(DRIVER, r, config.clone())),
    );
    let at = Allocation {
        driver: DRIVER,
        pool: NODE,
        pod_name: POD,
        pod_uid: POD_UID,
    };
    let allocated: Vec<(&str, &str)> = devices.iter().map(|(r, d, _)| (*r, *d)).collect();
    allocated_claim(claim, at, &allocated, configs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::resource::v1::ResourceClaim;
    use sriov_dra::apis::{Mode, RequestConfig, configs_for_request};
    use sriov_dra::kube::claims::allocation_for_driver;

    fn claim() -> ClaimId {
        ClaimId {
            namespace: NAMESPACE.into(),
            name: CLAIM.into(),
            uid: "uid-1".into(),
        }
    }

    /// The request's merged config, as the driver's prepare reads it.
    fn config_of(json: Value, request: &str) -> RequestConfig {
        let parsed: ResourceClaim = serde_json::from_value(json).unwrap();
        let allocated = allocation_for_driver(parsed, "uid-1", DRIVER).unwrap();
        assert_eq!(allocated.reserved_for, [POD_UID]);
        configs_for_request(
            "lab/crash-claim",
            DRIVER,
            &allocated.configs,
            request,
            allocated.device_class(request),
        )
        .unwrap()
    }

    #[test]
    fn on_a_real_pf_the_claim_passes_its_class_policy_with_vlan_trust_and_dpdk() {
        let spec = ClaimSpec {
            netdev: "pci-0000-3b-02-2".into(),
            dpdk: Some("pci-0000-3b-02-0".into()),
            pf_settings: true,
        };
        let json = claim_json(&spec, &claim());
        assert_eq!(
            json["status"]["allocation"]["devices"]["results"][0]["request"],
            "dpdk"
        );
        let net = config_of(json.clone(), "net").config;
        assert_eq!(net.settings.vlan().map(|v| v.id), Some(VLAN));
        assert_eq!(net.settings.trust(), Some(true));
        assert_eq!(net.if_name.as_deref(), Some(IF_NAME));
        let dpdk = config_of(json, "dpdk").config;
        assert_eq!((dpdk.mode, dpdk.settings.vlan()), (Mode::Dpdk, None));
    }

    #[test]
    fn the_dpdk_vf_is_the_other_pair_vf_and_needs_vfio_pci_and_an_iommu_group() {
        let profile = crate::profile::Profile::parse(
            r#"
[node]
name = "n"
[[nic]]
model = "m"
vendor_id = "8086"
device_id = "1592"
driver = "ice"
pfs = ["pf0"]
num_vfs = 4
test_vf = 0
pair_vfs = [0, 2]
allow_dpdk = true
cases = ["crash"]
"#,
            "test",
        )
        .unwrap();
        let nic = &profile.nics[0];
        assert_eq!(dpdk_vf(nic), Some(2));
        let root = tempfile::tempdir().unwrap();
        let group = root.path().join("class/net/pf0/device/virtfn2/iommu_group");
        std::fs::create_dir_all(&group).unwrap();
        assert!(!vfio_ready(nic, root.path()), "vfio-pci is not loaded");
        std::fs::create_dir_all(root.path().join("bus/pci/drivers/vfio-pci")).unwrap();
        assert!(vfio_ready(nic, root.path()));
        std::fs::remove_dir(&group).unwrap();
        assert!(!vfio_ready(nic, root.path()), "no IOMMU group");
    }

    #[test]
    fn on_stand_ins_the_claim_asks_for_nothing_pf_side() {
        let spec = ClaimSpec {
            netdev: "pci-0000-7d-01-0".into(),
            dpdk: None,
            pf_settings: false,
        };
        let json = claim_json(&spec, &claim());
        let net = config_of(json.clone(), "net").config;
        assert_eq!((net.settings.vlan(), net.settings.trust()), (None, None));
        assert_eq!(
            json["spec"]["devices"]["requests"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
