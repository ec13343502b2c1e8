//! What must hold after each crash and restart, for the stage the kubelet
//! and the runtime believe the pod is in: the VF wholly in the pod (name,
//! MTU, the claim's addresses, up) or wholly home (its original name, MTU,
//! up state and addresses); on a real PF its PF-side settings the claim's
//! (prepared) or the original ones (idle), read back over netlink; a DPDK
//! VF on vfio-pci or back on its driver under its name; and the driver's
//! records (debug API), addresses and CDI specs saying exactly that.

use std::collections::BTreeSet;

use ipam::Allocation;
use ipnetwork::IpNetwork;
use sriov::netlink::RouteSocket;
use sriov_dra::state::Phase;
use sriov_dra::state::attachments::AttachState;
use sriov_dra::testing::driver_view::{DriverView, addresses_of, cdi_files};
use sriov_dra::testing::vf_place::{home_as_before, look, look_in};

use super::lab::{DRIVER, IF_NAME, LabNode, MTU, POD_UID, VLAN, link_name};

/// Where the pod is, as the kubelet and the runtime believe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The claim is not prepared.
    Idle,
    /// The claim is prepared; no sandbox runs (before it started or after
    /// it stopped).
    Prepared,
    /// The sandbox runs.
    Running,
}

/// Addresses as `203.0.113.2/24, 2001:db8:c4a5::1/64`.
fn list(addresses: &BTreeSet<IpNetwork>) -> String {
    let all: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    format!("[{}]", all.join(", "))
}

/// Every invariant that does not hold now, each naming what and where.
pub async fn violations(node: &LabNode, stage: Stage) -> Vec<String> {
    let mut out = Vec::new();
    let view = match DriverView::read(&node.home).await {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let (claims, pods) = (&view.claims, &view.pods);
    let prepared = stage != Stage::Idle;
    let uid = &node.claim.uid;
    if !view.orphans.is_empty() {
        out.push(format!("orphaned allocations: {:?}", view.orphans));
    }
    let record = view.claim(uid);
    match (prepared, record) {
        (true, Some(r)) if r.phase == Phase::Prepared => {}
        (false, None) => {}
        (_, r) => out.push(format!(
            "claim {uid}: the kubelet believes it {}, its record is {:?}",
            if prepared { "prepared" } else { "unprepared" },
            r.map(|r| r.phase)
        )),
    }
    if claims.len() > usize::from(record.is_some()) {
        out.push(format!("records of other claims: {} in all", claims.len()));
    }
    let netdev = node.netdev.pci.device_name();
    let allocated = addresses_of(record, &netdev);
    let held: Vec<&Allocation> = view.allocations.iter().collect();
    if prepared {
        let families = (
            allocated.iter().filter(|a| a.is_ipv4()).count(),
            allocated.iter().filter(|a| a.is_ipv6()).count(),
        );
        if families != (1, 1) || held.len() != 1 {
            out.push(format!(
                "the claim holds {} ({} allocations), expected one address of each family",
                list(&allocated),
                held.len()
            ));
        }
    } else if !held.is_empty() {
        out.push(format!(
            "addresses held with the claim unprepared: {held:?}"
        ));
    }
    let cdi = cdi_files(&node.home);
    let wanted: BTreeSet<String> = if prepared {
        BTreeSet::from([format!("{DRIVER}-{uid}.json")])
    } else {
        BTreeSet::new()
    };
    if cdi != wanted {
        out.push(format!("CDI directory holds {cdi:?}, expected {wanted:?}"));
    }
    let attached = pods.iter().find(|p| p.pod_uid == POD_UID);
    match (stage, attached) {
        (Stage::Running, Some(p))
            if p.state == AttachState::Attached
                && p.attachments
                    .iter()
                    .any(|a| a.device == netdev && a.if_name == IF_NAME) => {}
        (Stage::Running, other) => out.push(format!(
            "the pod runs, its attachment record is {:?}",
            other.map(|p| p.state)
        )),
        (_, None) if pods.is_empty() => {}
        (_, _) => out.push(format!(
            "the pod does not run, attachment records: {:?}",
            pods.iter().map(|p| (&p.pod, p.state)).collect::<Vec<_>>()
        )),
    }
    out.extend(netdev_violations(node, stage, &allocated));
    out.extend(pf_violations(node, prepared));
    out
}

/// The netdevice VF wholly in the pod or wholly home.
fn netdev_violations(node: &LabNode, stage: Stage, allocated: &BTreeSet<IpNetwork>) -> Vec<String> {
    let vf = &node.netdev;
    let at = format!("VF {} ({})", vf.pci, vf.original.link.name);
    let in_pod = match look_in(node.netns.path(), &vf.original.link.mac) {
        Ok(seen) => seen,
        Err(e) => return vec![format!("{at}: reading the pod netns: {e}")],
    };
    let in_host = match RouteSocket::new()
        .map_err(|e| e.to_string())
        .and_then(|mut s| look(&mut s, &vf.original.link.mac))
    {
        Ok(seen) => seen,
        Err(e) => return vec![format!("{at}: reading the host: {e}")],
    };
    match (stage, in_pod, in_host) {
        (Stage::Running, Some(seen), None) => {
            let l = &seen.link;
            if l.name != IF_NAME || l.mtu != MTU || !l.up || &seen.addresses != allocated {
                vec![format!(
                    "{at}: in the pod as {} (MTU {}, up {}, addresses {}), expected {IF_NAME} (MTU {MTU}, up, addresses {})",
                    l.name,
                    l.mtu,
                    l.up,
                    list(&seen.addresses),
                    list(allocated)
                )]
            } else {
                Vec::new()
            }
        }
        (Stage::Running, pod, host) => vec![format!(
            "{at}: the pod runs; in the pod: {}, in the host: {}",
            pod.map_or("no".into(), |s| s.link.name),
            host.map_or("no".into(), |s| s.link.name)
        )],
        (_, None, Some(seen)) => home_as_before(&seen, &vf.original)
            .err()
            .map(|e| format!("{at}: {e}"))
            .into_iter()
            .collect(),
        (_, pod, host) => vec![format!(
            "{at}: the pod does not run; in the pod: {}, in the host: {}",
            pod.map_or("no".into(), |s| s.link.name),
            host.map_or("no".into(), |s| s.link.name)
        )],
    }
}

/// On a real PF: the claim's PF-side settings while prepared, the
/// original ones when not; the DPDK VF on vfio-pci while prepared, home
/// on its driver under its name when not.
fn pf_violations(node: &LabNode, prepared: bool) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(pf) = &node.netdev.pf {
        let at = format!("VF {} of {}", pf.target.vf, pf.target.pf);
        match pf.now() {
            Err(e) => out.push(format!("{at}: reading its PF-side settings: {e}")),
            Ok(now) if prepared => {
                if now.vlan.id != VLAN || !now.trust {
                    out.push(format!(
                        "{at}: prepared with VLAN {VLAN} and trust on, the PF says VLAN {} trust {}",
                        now.vlan.id, now.trust
                    ));
                }
            }
            Ok(now) if now != pf.original => out.push(format!(
                "{at}: unprepared, PF-side settings {now:?}, were {:?}",
                pf.original
            )),
            Ok(_) => {}
        }
    }
    if let Some(d) = &node.dpdk {
        let device = node
            .sysfs_root
            .join("bus/pci/devices")
            .join(d.pci.to_string());
        let driver = link_name(&device.join("driver")).unwrap_or_else(|e| format!("none ({e})"));
        let netdevs: Vec<String> = std::fs::read_dir(device.join("net"))
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let at = format!("DPDK VF {}", d.pci);
        if prepared && driver != "vfio-pci" {
            out.push(format!("{at}: prepared, but bound to {driver}"));
        }
        if !prepared && (driver != d.original_driver || netdevs != [d.original_name.clone()]) {
            out.push(format!(
                "{at}: unprepared as {driver} with netdevs {netdevs:?}, was {} with {}",
                d.original_driver, d.original_name
            ));
        }
        match d.pf.now() {
            Ok(now) if !prepared && now != d.pf.original => out.push(format!(
                "{at}: unprepared, PF-side settings {now:?}, were {:?}",
                d.pf.original
            )),
            Ok(_) => {}
            Err(e) => out.push(format!("{at}: reading its PF-side settings: {e}")),
        }
    }
    out
}
