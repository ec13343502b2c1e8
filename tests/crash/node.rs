//! The node the driver runs on in the harness: stand-in VFs (macvlans on
//! host veths) named in a fixture sysfs, the pods' network namespaces, the
//! test API over HTTP with the pods' claims, the runtime's socket, and the
//! node config pointing everything into one temporary directory.
//!
//! Dropping it removes every link (deleting a stand-in's parent deletes its
//! macvlan in whatever namespace it is), every namespace and every file,
//! also when the test fails.

use serde_json::{Value, json};
use sriov::PciAddress;
use sriov::netlink::link::{self, LinkFacts};
use sriov::netlink::{RouteSocket, RouteTransport};
use sriov_dra::attach::netns::PinnedNetns;
use sriov_dra::testing::claim_object::{Allocation, allocated_claim, vf_config};
use sriov_dra::testing::driver_home::{DriverHome, dual_stack_pool_yaml};
use sriov_dra::testing::driver_process::ClaimId;
use sriov_dra::testing::netns::{StandIn, facts, stand_in_tree};

/// The driver name the node config sets.
pub const DRIVER: &str = "sriov.dra.dev";
/// The node's name, and so its slices' pool.
pub const NODE: &str = "crash-node";
/// The pods' namespace.
pub const NAMESPACE: &str = "ran";
/// The address pool every claim takes from: dual-stack, with a route.
pub const POOL_V4: &str = "10.77.0.0/24";
/// The pool's IPv6 subnet.
pub const POOL_V6: &str = "fd00:77::/64";
/// The pool's route (destination, gateway), added in each pod.
pub const ROUTE: (&str, &str) = ("10.78.0.0/16", "10.77.0.1");

/// One device of one of a pod's claims.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Which of the pod's claims (0, 1, …) it belongs to.
    pub claim: usize,
    /// The request it answers.
    pub request: &'static str,
    /// Which stand-in VF.
    pub vf: usize,
    /// `ifName` in the claim, if set.
    pub if_name: Option<&'static str>,
    /// The name it must have in the pod.
    pub pod_name: &'static str,
    /// `mtu` in the claim, if set.
    pub mtu: Option<u32>,
}

/// A pod and what its claims ask for.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Pod name (its UID is `pod-<name>`).
    pub name: &'static str,
    /// Its claims' devices.
    pub devices: Vec<DeviceSpec>,
}

impl PodSpec {
    /// The pod's UID.
    pub fn uid(&self) -> String {
        format!("pod-{}", self.name)
    }

    /// How many claims it has.
    pub fn claims(&self) -> usize {
        self.devices.iter().map(|d| d.claim + 1).max().unwrap_or(0)
    }
}

/// The pods of the harness: one with two VFs of two claims from one pool
/// (so a crash can fall between them, and an unprepare of one claim leaves
/// the other's VF in the pod record), one relying on the default name, one
/// with its own name and MTU.
pub fn pod_specs() -> Vec<PodSpec> {
    vec![
        PodSpec {
            name: "du-0",
            devices: vec![
                DeviceSpec {
                    claim: 0,
                    request: "fronthaul",
                    vf: 0,
                    if_name: Some("fh0"),
                    pod_name: "fh0",
                    mtu: Some(1400),
                },
                DeviceSpec {
                    claim: 1,
                    request: "midhaul",
                    vf: 1,
                    if_name: Some("mh0"),
                    pod_name: "mh0",
                    mtu: None,
                },
            ],
        },
        PodSpec {
            name: "cu-0",
            devices: vec![DeviceSpec {
                claim: 0,
                request: "f1",
                vf: 2,
                if_name: None,
                pod_name: "net1",
                mtu: None,
            }],
        },
        PodSpec {
            name: "upf-0",
            devices: vec![DeviceSpec {
                claim: 0,
                request: "n3",
                vf: 3,
                if_name: Some("n3"),
                pod_name: "n3",
                mtu: Some(1450),
            }],
        },
    ]
}

/// PCI address of stand-in VF `n` in the fixture sysfs.
pub fn pci(n: usize) -> PciAddress {
    PciAddress::new(0, 0x7c, 1, n as u8).expect("a valid PCI address")
}

/// A stand-in VF and how it was before any pod had it.
pub struct Vf {
    /// The macvlan (dropping it deletes it).
    pub link: StandIn,
    /// Its state at the start: what "home" means.
    pub original: LinkFacts,
}

/// Everything the driver touches: its home (config, state, sockets, the
/// test API) and the node's stand-ins and pod namespaces.
pub struct Node {
    /// The stand-in VFs. Declared before the namespaces: their links go
    /// first.
    pub vfs: Vec<Vf>,
    /// Each pod's network namespace, by the order of [`pod_specs`].
    pub netns: Vec<PinnedNetns>,
    /// The fixture sysfs (its own scratch directory).
    _sysfs: tempfile::TempDir,
    /// The driver's home and the test API. Last: removed after the rest.
    pub home: DriverHome,
}

impl Node {
    /// Creates the stand-ins (VF 0 up, the others down, so a detach must
    /// also bring a link up again), the namespaces, the API and the config.
    pub async fn new(vf_count: usize, pod_count: usize) -> Node {
        let mut host = RouteSocket::new().expect("rtnetlink socket");
        let mut vfs = Vec::with_capacity(vf_count);
        for n in 0..vf_count {
            let link = StandIn::new(&mut host);
            if n == 0 {
                let f = facts(&mut host, &link.name).expect("stand-in exists");
                host.request("stand-in up", link::set_up_message(f.index, true), 0)
                    .expect("stand-in up");
            }
            let original = facts(&mut host, &link.name).expect("stand-in exists");
            vfs.push(Vf { link, original });
        }
        let entries: Vec<(PciAddress, Option<&str>)> = vfs
            .iter()
            .enumerate()
            .map(|(n, v)| (pci(n), Some(v.link.name.as_str())))
            .collect();
        let sysfs = stand_in_tree(&entries);
        let home = DriverHome::new(DRIVER, NODE).await.expect("driver home");
        std::fs::create_dir_all(home.dir.path().join("netns")).expect("netns dir");
        let netns = (0..pod_count)
            .map(|i| {
                PinnedNetns::create(&home.dir.path().join(format!("netns/pod{i}")))
                    .expect("pod netns")
            })
            .collect();
        home.write_config(sysfs.path(), &config())
            .expect("node config");
        Node {
            vfs,
            netns,
            _sysfs: sysfs,
            home,
        }
    }
}

/// The node config beyond the home's paths: stand-ins are offered as they
/// are, and one dual-stack pool with a route.
fn config() -> String {
    "offerPfs: true\n".to_string() + &dual_stack_pool_yaml("fronthaul", POOL_V4, POOL_V6, ROUTE)
}

/// The ResourceClaim object for `pod`'s claim number `claim`, named `name`
/// (UID `uid`), as the scheduler leaves it: allocated on this node, reserved for the pod, each
/// request with an opaque `VfConfig` that asks only for what a tenant may
/// (name, MTU, a pool address); no PF-side settings, which stand-ins
/// cannot take.
pub fn claim_json(pod: &PodSpec, claim: usize, name: &str, uid: &str) -> Value {
    let devices: Vec<&DeviceSpec> = pod.devices.iter().filter(|d| d.claim == claim).collect();
    let configs: Vec<Value> = devices
        .iter()
        .map(|d| {
            let mut parameters = json!({"ipam": {"pool": "fronthaul"}});
            if let Some(n) = d.if_name {
                parameters["ifName"] = json!(n);
            }
            if let Some(m) = d.mtu {
                parameters["mtu"] = json!(m);
            }
            vf_config(DRIVER, d.request, parameters)
        })
        .collect();
    let names: Vec<String> = devices.iter().map(|d| pci(d.vf).device_name()).collect();
    let allocated: Vec<(&str, &str)> = devices
        .iter()
        .zip(&names)
        .map(|(d, device)| (d.request, device.as_str()))
        .collect();
    let id = ClaimId {
        namespace: NAMESPACE.into(),
        name: name.into(),
        uid: uid.into(),
    };
    let pod_uid = pod.uid();
    let at = Allocation {
        driver: DRIVER,
        pool: NODE,
        pod_name: pod.name,
        pod_uid: &pod_uid,
    };
    allocated_claim(&id, at, &allocated, configs)
}
