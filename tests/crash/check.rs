//! The invariants after a crash and a restart, checked against the kernel
//! (links, addresses, routes in the host and in each pod), the driver's
//! records (its debug API) and the CDI directory, given what the kubelet
//! and the runtime believe.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{Stage, World};
use crate::node::{DRIVER, Node, POOL_V4, POOL_V6, ROUTE, pci};
use ipnetwork::IpNetwork;
use sriov::netlink::RouteSocket;
use sriov_dra::state::Phase;
use sriov_dra::state::attachments::AttachState;
use sriov_dra::testing::driver_process::debug_get;
use sriov_dra::testing::driver_view::{DriverView, addresses_of, cdi_files};
use sriov_dra::testing::netns::facts;
use sriov_dra::testing::vf_place::{Seen, home_as_before, look, look_in};

/// Every invariant that does not hold now, each naming what and where.
pub async fn violations(node: &Node, world: &World) -> Vec<String> {
    let mut out = Vec::new();
    let view = match DriverView::read(&node.home).await {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let (claims, pods) = (&view.claims, &view.pods);
    let unreadable: Vec<serde_json::Value> = match debug_get(&node.home, "/unreadable").await {
        Ok(u) => u,
        Err(e) => return vec![e],
    };
    if !unreadable.is_empty() {
        out.push(format!("unreadable records: {unreadable:?}"));
    }
    if !view.orphans.is_empty() {
        out.push(format!("orphaned allocations: {:?}", view.orphans));
    }

    // No address held twice; none held by a claim that is not prepared.
    let mut holders: BTreeMap<IpNetwork, String> = BTreeMap::new();
    for a in &view.allocations {
        for assigned in &a.addresses {
            if let Some(other) = holders.insert(assigned.address, a.owner.to_string()) {
                out.push(format!(
                    "address {} is held twice: by {other} and by {}",
                    assigned.address, a.owner
                ));
            }
        }
    }
    let prepared: BTreeSet<&str> = world
        .pods
        .iter()
        .filter(|p| p.stage != Stage::Idle)
        .flat_map(|p| p.claims.iter().map(|c| c.uid.as_str()))
        .collect();
    for a in &view.allocations {
        if !prepared.contains(a.owner.claim_uid.as_str()) {
            out.push(format!(
                "allocation {} is held by {}, a claim that is not prepared",
                a, a.owner
            ));
        }
    }
    for r in claims {
        if !prepared.contains(r.uid.as_str()) {
            out.push(format!(
                "claim {}/{} ({}) has a record ({:?}) but is not prepared",
                r.namespace, r.name, r.uid, r.phase
            ));
        }
    }
    for uid in &world.deleted {
        if claims.iter().any(|r| &r.uid == uid)
            || view.allocations.iter().any(|a| &a.owner.claim_uid == uid)
        {
            out.push(format!(
                "claim {uid}, deleted while the driver was down, is not released"
            ));
        }
    }

    // The CDI directory holds one spec per prepared claim, nothing else.
    let files = cdi_files(&node.home);
    let wanted: BTreeSet<String> = prepared
        .iter()
        .map(|uid| format!("{DRIVER}-{uid}.json"))
        .collect();
    if files != wanted {
        out.push(format!(
            "CDI directory holds {files:?}, expected exactly {wanted:?}"
        ));
    }

    let running: BTreeSet<String> = world
        .pods
        .iter()
        .filter(|p| p.stage == Stage::Running)
        .map(|p| p.spec.uid())
        .collect();
    for record in pods {
        if !running.contains(&record.pod_uid) {
            out.push(format!(
                "pod {} has an attachment record ({:?}) but is not running",
                record.pod, record.state
            ));
        }
    }

    let mut host = match RouteSocket::new() {
        Ok(s) => s,
        Err(e) => return vec![format!("host rtnetlink socket: {e}")],
    };
    for (i, pod) in world.pods.iter().enumerate() {
        let netns = node.netns[i].path();
        let record_of = |claim: usize| view.claim(&pod.claims[claim].uid);
        if pod.stage != Stage::Idle {
            for (n, claim) in pod.claims.iter().enumerate() {
                match record_of(n) {
                    Some(r) if r.phase == Phase::Prepared => {}
                    other => out.push(format!(
                        "pod {}: claim {} is prepared for the kubelet, its record is {:?}",
                        pod.spec.name,
                        claim.uid,
                        other.map(|r| r.phase)
                    )),
                }
            }
        }
        let attached = pods.iter().find(|p| p.pod_uid == pod.spec.uid());
        let mut pod_routes = Vec::new();
        for d in &pod.spec.devices {
            let vf = &node.vfs[d.vf];
            let device = pci(d.vf).device_name();
            let where_ = format!("pod {}, device {device} ({})", pod.spec.name, vf.link.name);
            let in_pod = match look_in(netns, &vf.original.mac) {
                Ok(seen) => seen,
                Err(e) => {
                    out.push(format!("{where_}: reading the pod netns: {e}"));
                    continue;
                }
            };
            let allocated = addresses_of(record_of(d.claim), &device);
            if pod.stage != Stage::Idle {
                let v4 = allocated.iter().filter(|a| a.is_ipv4()).count();
                let v6 = allocated.iter().filter(|a| a.is_ipv6()).count();
                let inside = allocated.iter().all(|a| {
                    let net: IpNetwork = if a.is_ipv4() { POOL_V4 } else { POOL_V6 }
                        .parse()
                        .expect("pool subnet");
                    net.contains(a.ip()) && a.prefix() == net.prefix()
                });
                if v4 != 1 || v6 != 1 || !inside {
                    out.push(format!(
                        "{where_}: holds {allocated:?}, expected one address of each family from the pool"
                    ));
                }
            }
            if pod.stage == Stage::Running {
                let Some(seen) = in_pod else {
                    out.push(format!("{where_}: the pod runs but the VF is not in it"));
                    continue;
                };
                let mtu = d.mtu.unwrap_or(vf.original.mtu);
                if seen.link.name != d.pod_name || seen.link.mtu != mtu || !seen.link.up {
                    out.push(format!(
                        "{where_}: in the pod as {} (MTU {}, up {}), expected {} (MTU {mtu}, up)",
                        seen.link.name, seen.link.mtu, seen.link.up, d.pod_name
                    ));
                }
                if seen.addresses != allocated {
                    out.push(format!(
                        "{where_}: has {:?} in the pod, its claim holds {allocated:?}",
                        seen.addresses
                    ));
                }
                pod_routes.extend(seen.routes.iter().copied());
                match attached.and_then(|p| {
                    p.attachments
                        .iter()
                        .find(|a| a.device == device)
                        .map(|a| (p.state, a))
                }) {
                    Some((AttachState::Attached, a))
                        if a.if_name == d.pod_name
                            && a.addresses.iter().copied().collect::<BTreeSet<_>>()
                                == allocated
                            && a.netns == netns => {}
                    other => out.push(format!(
                        "{where_}: in the pod, but its attachment record is {other:?}"
                    )),
                }
                if facts(&mut host, &vf.original.name).is_some() {
                    out.push(format!(
                        "{where_}: the pod runs, but a link named {} is in the host",
                        vf.original.name
                    ));
                }
            } else {
                if let Some(seen) = in_pod {
                    out.push(format!(
                        "{where_}: the pod does not run, but the VF is in its netns as {}",
                        seen.link.name
                    ));
                    continue;
                }
                match look(&mut host, &vf.original.mac) {
                    Ok(Some(seen)) => {
                        // A stand-in starts with no addresses.
                        let original = Seen {
                            link: vf.original.clone(),
                            addresses: BTreeSet::new(),
                            routes: BTreeSet::new(),
                        };
                        if let Err(e) = home_as_before(&seen, &original) {
                            out.push(format!("{where_}: {e}"));
                        }
                    }
                    Ok(None) => out.push(format!("{where_}: neither in the pod nor home")),
                    Err(e) => out.push(format!("{where_}: reading the host: {e}")),
                }
            }
        }
        // The pool's route, once per pod (out of the first VF with it).
        let route = (
            ROUTE.0.parse::<IpNetwork>().expect("route"),
            Some(ROUTE.1.parse::<IpAddr>().expect("gateway")),
        );
        let count = pod_routes.iter().filter(|r| **r == route).count();
        if pod.stage == Stage::Running && count != 1 {
            out.push(format!(
                "pod {}: the pool's route is there {count} times ({pod_routes:?}), expected once",
                pod.spec.name
            ));
        }
    }
    out
}
