//! Which prepared claims a pod has, and which of their devices go into
//! its network namespace (in which order, so `net1`, `net2`, … are stable).

use std::sync::Arc;

use ipam::Ipam;

use crate::apis::Mode;
use crate::attach::plan::{PodDevice, RouteSpec};
use crate::state::{ClaimRecord, StateError, boot, claims};

/// Where the handler finds the claims prepared for a pod.
pub trait PodClaims: Send + Sync + 'static {
    /// Claim records whose claim is reserved for the pod with this UID.
    fn claims_for_pod(&self, pod_uid: &str) -> Result<Vec<ClaimRecord>, StateError>;
}

/// Claims from the state store, matched on the pod UIDs the claim was
/// reserved for when it was prepared. Only claims prepared completely and
/// in this boot count: a half-prepared record is being rolled back, and one
/// from before a reboot describes VFs that no longer exist as recorded.
pub struct StoreClaims {
    store: Arc<Ipam>,
    boot_id: String,
}

impl StoreClaims {
    /// Reads records from the state store (which the IPAM handle owns).
    pub fn new(store: Arc<Ipam>, boot_id: &str) -> Self {
        StoreClaims {
            store,
            boot_id: boot_id.to_string(),
        }
    }
}

impl PodClaims for StoreClaims {
    fn claims_for_pod(&self, pod_uid: &str) -> Result<Vec<ClaimRecord>, StateError> {
        let records = claims::list(self.store.database())?;
        Ok(records
            .into_iter()
            .filter(|r| boot::prepared_in_this_boot(r, &self.boot_id))
            .filter(|r| r.reserved_for.iter().any(|uid| uid == pod_uid))
            .collect())
    }
}

/// The devices of `records` that go into the pod's namespace, in claim then
/// allocation order (which gives `net1`, `net2`, … their numbers).
///
/// A route goes to the first device that carries it: the pod has one main
/// routing table, and two VFs from one pool would otherwise both add the
/// pool's route, the second refused (`EEXIST`) and the pod with it.
pub fn netdevice_devices(records: &[ClaimRecord]) -> Vec<PodDevice> {
    let mut records: Vec<&ClaimRecord> = records.iter().collect();
    records.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut out = Vec::new();
    let mut in_pod: Vec<RouteSpec> = Vec::new();
    for r in records {
        for d in r
            .devices
            .iter()
            .filter(|d| d.config.mode == Mode::Netdevice)
        {
            let mut routes: Vec<RouteSpec> = Vec::new();
            let pool_routes = d.addresses.iter().flat_map(|a| a.routes.iter());
            for route in pool_routes.chain(d.config.routes.iter()) {
                let spec = RouteSpec {
                    destination: route.dst,
                    gateway: route.gw,
                };
                if !routes.contains(&spec) && !in_pod.contains(&spec) {
                    routes.push(spec);
                }
            }
            in_pod.extend(routes.iter().copied());
            out.push(PodDevice {
                claim: format!("{}/{}", r.namespace, r.name),
                device: d.device.clone(),
                pci_address: d.pci_address,
                if_name: d.if_name.clone(),
                mtu: d.config.mtu,
                mac: d.config.settings.mac(),
                addresses: d
                    .addresses
                    .iter()
                    .flat_map(|a| a.addresses.iter().map(|x| x.address))
                    .collect(),
                routes,
                rdma_device: d.rdma_device.clone(),
                rdma_exclusive: d.config.rdma_exclusive,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::records::{POD, pci, prepared, record};

    #[test]
    fn a_damaged_record_of_another_claim_does_not_stop_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Ipam::open(dir.path(), &[]).unwrap());
        claims::init(store.database()).unwrap();
        let mine = record(
            "fronthaul",
            vec![prepared(pci(1), Mode::Netdevice, None, None)],
        );
        claims::put(store.database(), &mine).unwrap();
        claims::put_raw(store.database(), "uid-other", b"\x00garbage").unwrap();

        let found = StoreClaims::new(store, "boot").claims_for_pod(POD).unwrap();
        assert_eq!(found, [mine]);
    }

    #[test]
    fn only_netdevice_vfs_go_to_the_pod_in_claim_order_with_routes_once() {
        let records = [
            record("z-dpdk", vec![prepared(pci(3), Mode::Dpdk, None, None)]),
            record(
                "a-fronthaul",
                vec![
                    prepared(pci(1), Mode::Netdevice, Some("10.1.0.5/24"), Some("fh0")),
                    prepared(pci(2), Mode::Netdevice, None, None),
                ],
            ),
        ];
        let devices = netdevice_devices(&records);
        let names: Vec<&str> = devices.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["pci-0000-5b-02-1", "pci-0000-5b-02-2"]);
        let d = &devices[0];
        assert_eq!(d.claim, "ran/a-fronthaul");
        assert_eq!(d.if_name.as_deref(), Some("fh0"));
        assert_eq!(d.mtu, Some(1400));
        assert_eq!(
            d.addresses,
            ["10.1.0.5/24".parse::<ipnetwork::IpNetwork>().unwrap()]
        );
        assert_eq!(
            d.routes.len(),
            1,
            "the pool's route and the config's same route count once"
        );
        assert!(devices[1].addresses.is_empty());
    }

    #[test]
    fn two_vfs_of_one_pool_add_the_pools_route_once_to_the_pod() {
        // Found by the crash harness: the second VF's identical route was
        // refused with EEXIST and the pod failed to start.
        let records = [record(
            "fronthaul",
            vec![
                prepared(pci(1), Mode::Netdevice, Some("10.1.0.5/24"), None),
                prepared(pci(2), Mode::Netdevice, Some("10.1.0.6/24"), None),
            ],
        )];
        let devices = netdevice_devices(&records);
        let routes: Vec<usize> = devices.iter().map(|d| d.routes.len()).collect();
        assert_eq!(routes, [1, 0], "{devices:?}");
        assert_eq!(
            devices[0].routes[0].destination,
            "10.99.0.0/16".parse::<ipnetwork::IpNetwork>().unwrap()
        );
    }

    #[test]
    fn rdma_device_and_exclusive_flag_come_from_the_claim_record() {
        let mut exclusive = prepared(pci(1), Mode::Netdevice, None, None);
        exclusive.rdma_device = Some("mlx5_3".into());
        exclusive.config.rdma_exclusive = true;
        let mut shared = prepared(pci(2), Mode::Netdevice, None, None);
        shared.rdma_device = Some("mlx5_4".into());
        let plain = prepared(pci(3), Mode::Netdevice, None, None);
        let devices = netdevice_devices(&[record("rdma", vec![exclusive, shared, plain])]);
        let rdma: Vec<(Option<&str>, bool)> = devices
            .iter()
            .map(|d| (d.rdma_device.as_deref(), d.rdma_exclusive))
            .collect();
        assert_eq!(
            rdma,
            [
                (Some("mlx5_3"), true),
                (Some("mlx5_4"), false),
                (None, false)
            ]
        );
    }

    #[test]
    fn two_claims_of_one_pod_get_net1_and_net2() {
        // Each claim was prepared on its own; neither set ifName.
        let mut second = record(
            "b-midhaul",
            vec![prepared(pci(2), Mode::Netdevice, None, None)],
        );
        second.uid = "uid-b".into();
        let records = [
            record(
                "a-fronthaul",
                vec![prepared(pci(1), Mode::Netdevice, None, None)],
            ),
            second,
        ];
        let devices = netdevice_devices(&records);
        let names = crate::attach::plan::pod_interface_names(&devices).unwrap();
        assert_eq!(names, ["net1", "net2"]);
    }
}
