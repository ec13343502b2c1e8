//! The kernel's link and PCI announcements as [`Nudge`]s: one thread per
//! subscription (the sockets are blocking), each ending once the nudge
//! channel is closed. A subscription that cannot be opened is logged and
//! left out: the periodic full scan still runs.

use std::time::Duration;

use sriov::netlink::events::{LinkEvent, LinkEvents, Uevent, Uevents};
use tracing::{debug, warn};

use super::{Nudge, NudgeSender, nudge};

/// How long a read waits before the thread checks whether it is still wanted.
const POLL: Duration = Duration::from_secs(1);
/// Pause after a failed read, so a broken socket cannot spin.
const BACKOFF: Duration = Duration::from_millis(200);

/// The nudge of a link event.
pub fn link_nudge(event: &LinkEvent) -> Nudge {
    Nudge::Link {
        name: event
            .name
            .clone()
            .unwrap_or_else(|| format!("#{}", event.index)),
    }
}

/// The nudge of a uevent, for the ones that change the inventory: a PCI
/// function added, removed, bound or unbound, or a network interface
/// appearing or leaving (a VF's netdev comes after its driver binds).
pub fn uevent_nudge(event: &Uevent) -> Option<Nudge> {
    let device = || {
        event
            .pci_slot()
            .map(str::to_string)
            .or_else(|| event.vars.get("INTERFACE").cloned())
            .unwrap_or_else(|| event.devpath.rsplit('/').next().unwrap_or("").to_string())
    };
    match (event.subsystem.as_str(), event.action.as_str()) {
        ("pci", "add" | "remove" | "bind" | "unbind") | ("net", "add" | "remove" | "move") => {
            Some(Nudge::Pci {
                action: event.action.clone(),
                device: device(),
            })
        }
        _ => None,
    }
}

/// Starts both subscriptions in the calling thread's network namespace
/// (the host's, for the driver). Returns how many started.
pub fn spawn(tx: NudgeSender) -> usize {
    let mut started = 0;
    match LinkEvents::open(POLL) {
        Ok(links) => {
            let tx = tx.clone();
            started += spawn_reader("link-events", move || {
                match links.recv() {
                    Ok(events) => events.iter().for_each(|e| {
                        debug!(link = ?e.name, index = e.index, removed = e.removed, up = ?e.up, "link event");
                        nudge(&tx, link_nudge(e));
                    }),
                    Err(e) => {
                        // ENOBUFS: the kernel dropped events for us.
                        warn!(error = %e, "link events lost; rescanning everything");
                        nudge(&tx, Nudge::Overrun);
                        std::thread::sleep(BACKOFF);
                    }
                }
                !tx.is_closed()
            });
        }
        Err(e) => warn!(error = %e, "no link events; relying on the periodic scan"),
    }
    match Uevents::open(POLL) {
        Ok(uevents) => {
            started += spawn_reader("pci-uevents", move || {
                match uevents.recv() {
                    Ok(Some(event)) => {
                        if let Some(n) = uevent_nudge(&event) {
                            debug!(?n, "uevent");
                            nudge(&tx, n);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "uevents lost; rescanning everything");
                        nudge(&tx, Nudge::Overrun);
                        std::thread::sleep(BACKOFF);
                    }
                }
                !tx.is_closed()
            });
        }
        Err(e) => warn!(error = %e, "no PCI uevents; relying on the periodic scan"),
    }
    started
}

/// Runs `step` on a named thread until it returns false.
fn spawn_reader(name: &str, mut step: impl FnMut() -> bool + Send + 'static) -> usize {
    match std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || while step() {})
    {
        Ok(_) => 1,
        Err(e) => {
            warn!(thread = name, error = %e, "cannot start the event thread");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn uevent(subsystem: &str, action: &str, vars: &[(&str, &str)]) -> Uevent {
        Uevent {
            action: action.into(),
            devpath: "/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2".into(),
            subsystem: subsystem.into(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn pci_add_remove_bind_unbind_and_netdev_arrivals_nudge_and_the_rest_do_not() {
        for action in ["add", "remove", "bind", "unbind"] {
            let ev = uevent("pci", action, &[("PCI_SLOT_NAME", "0000:3b:00.2")]);
            assert_eq!(
                uevent_nudge(&ev),
                Some(Nudge::Pci {
                    action: action.into(),
                    device: "0000:3b:00.2".into()
                })
            );
        }
        let netdev = uevent("net", "add", &[("INTERFACE", "ens1f0v0")]);
        assert!(
            matches!(uevent_nudge(&netdev), Some(Nudge::Pci { device, .. }) if device == "ens1f0v0")
        );
        assert_eq!(uevent_nudge(&uevent("pci", "change", &[])), None);
        assert_eq!(uevent_nudge(&uevent("usb", "add", &[])), None);
    }

    /// Both real subscriptions, as the driver starts them: a veth pair
    /// made in a fresh network namespace (so the host sees nothing) comes
    /// through the link socket as a link nudge and through the uevent
    /// socket as an interface arrival.
    #[test]
    fn a_veth_made_in_a_fresh_netns_nudges_through_both_real_sockets() {
        if !crate::testing::netns::have_root(
            "a_veth_made_in_a_fresh_netns_nudges_through_both_real_sockets",
        ) {
            return;
        }
        let seen = std::thread::spawn(|| {
            // SAFETY: unshare only moves this throw-away thread (and the
            // threads it starts) into a new network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let (tx, mut rx) = crate::events::channel();
            assert_eq!(spawn(tx), 2, "both subscriptions open");
            sriov::testing::create_veth("nudgeA", "nudgeB");
            let want = [
                Nudge::Link {
                    name: "nudgeA".into(),
                },
                Nudge::Pci {
                    action: "add".into(),
                    device: "nudgeA".into(),
                },
            ];
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut seen = Vec::new();
            while !want.iter().all(|w| seen.contains(w)) && std::time::Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(n) => seen.push(n),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            drop(rx);
            (want, seen)
        })
        .join()
        .unwrap();
        let (want, seen) = seen;
        for w in &want {
            assert!(seen.contains(w), "{w:?} not among {seen:?}");
        }
    }

    #[test]
    fn a_link_without_a_name_is_named_by_index() {
        let ev = LinkEvent {
            removed: true,
            index: 12,
            name: None,
            up: None,
        };
        assert_eq!(link_nudge(&ev), Nudge::Link { name: "#12".into() });
    }
}
