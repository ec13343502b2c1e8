//! Which PCI functions a batch of nudges asks to read again, so a round
//! re-reads those instead of the whole node: a PCI event names its
//! function (and its PF, whose `virtfnN` list moves with VFs), a link event
//! names an interface, found in the last inventory or through
//! `<sysfs>/class/net/<name>/device`. What cannot be mapped (lost events,
//! a link gone before it could be looked up and unknown to the last
//! inventory) asks for a full scan. Slice nudges read nothing: the round
//! republishes what the last inventory says.

use std::collections::BTreeSet;
use std::path::Path;

use sriov::PciAddress;

use super::Nudge;
use crate::inventory::NodeInventory;

/// What a round reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every function: the nudges could not be mapped to functions.
    Full {
        /// Why, for the log.
        why: String,
    },
    /// Only these functions, merged into the last inventory; none at all
    /// when only our slices changed (or only non-PCI links).
    Partial(BTreeSet<PciAddress>),
}

/// Whose a network interface is, as sysfs says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOwner {
    /// A PCI function's (for virtio-net, the PCI function under its
    /// `virtioN` device).
    Pci(PciAddress),
    /// No PCI function's: a veth, a bridge, a USB NIC.
    NotPci,
    /// No such interface (any more), or a name that cannot be one.
    Gone,
}

/// The functions `nudges` ask to read again, given the last inventory;
/// `owner` answers whose an interface is now ([`link_owner`] in the driver).
pub fn plan(
    nudges: &BTreeSet<Nudge>,
    last: &NodeInventory,
    owner: impl Fn(&str) -> LinkOwner,
) -> Plan {
    let mut targets = BTreeSet::new();
    for nudge in nudges {
        match nudge {
            Nudge::Overrun => {
                return Plan::Full {
                    why: "kernel events were lost".into(),
                };
            }
            Nudge::Slice { .. } => {}
            Nudge::Pci { device, .. } => match device.parse::<PciAddress>() {
                Ok(address) => {
                    targets.insert(address);
                    let pf = last.device_at(address).and_then(|d| d.function.vf_of());
                    targets.extend(pf.map(|(pf, _)| pf));
                }
                // A netdev's uevent names the interface.
                Err(_) => match link_targets(device, last, &owner) {
                    Some(found) => targets.extend(found),
                    None => return unmapped(nudge),
                },
            },
            Nudge::Link { name } => match link_targets(name, last, &owner) {
                Some(found) => targets.extend(found),
                None => return unmapped(nudge),
            },
        }
    }
    Plan::Partial(targets)
}

fn unmapped(nudge: &Nudge) -> Plan {
    Plan::Full {
        why: format!("cannot tell which device {nudge:?} is about"),
    }
}

/// The functions an event on interface `name` may have changed: the one
/// that had the name at the last scan and the one that has it now (a
/// rename, a new VF netdev). `None` when neither is known.
fn link_targets(
    name: &str,
    last: &NodeInventory,
    owner: &impl Fn(&str) -> LinkOwner,
) -> Option<Vec<PciAddress>> {
    let had = last
        .devices
        .iter()
        .find(|d| d.function.netdev.as_ref().is_some_and(|n| n.name == name))
        .map(|d| d.function.address);
    let has = owner(name);
    match (had, has) {
        (None, LinkOwner::Gone) => None,
        (had, LinkOwner::Pci(now)) => Some(had.into_iter().chain([now]).collect()),
        (had, LinkOwner::NotPci | LinkOwner::Gone) => Some(had.into_iter().collect()),
    }
}

/// Whose interface `name` is, from `<sysfs_root>/class/net/<name>/device`.
pub fn link_owner(sysfs_root: &Path, name: &str) -> LinkOwner {
    // A kernel interface name has no '/' and is not a dot entry; the
    // `#<index>` of a nameless link event is no entry either.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return LinkOwner::Gone;
    }
    let net = sysfs_root.join("class/net").join(name);
    let device = match std::fs::canonicalize(net.join("device")) {
        Ok(device) => device,
        // A virtual interface has no device link.
        Err(_) if net.exists() => return LinkOwner::NotPci,
        Err(_) => return LinkOwner::Gone,
    };
    let address = |p: &Path| p.file_name()?.to_str()?.parse::<PciAddress>().ok();
    if let Some(a) = address(&device) {
        return LinkOwner::Pci(a);
    }
    let virtio = device
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("virtio"));
    match device.parent().and_then(address) {
        Some(a) if virtio => LinkOwner::Pci(a),
        _ => LinkOwner::NotPci,
    }
}

#[cfg(test)]
#[path = "targets_tests.rs"]
mod tests;
