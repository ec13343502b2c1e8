//! Where a VF is, as the kernel shows it: its link, global addresses and
//! gateway routes in one network namespace, found by MAC (a VF keeps its
//! netdev MAC across namespaces; its name does not survive a move). The
//! crash harness and the lab's crash cases judge "wholly in the pod or
//! wholly home" from these readings.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;
use sriov::netlink::RouteSocket;
use sriov::netlink::address::dump_addresses;
use sriov::netlink::link::{LinkFacts, dump_links};
use sriov::netlink::route::dump_routes;

use crate::attach::netns::run_in_netns;

/// A VF as one namespace sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its link: name, MTU, up, MAC, index.
    pub link: LinkFacts,
    /// Global addresses (link-local ones come with any IPv6 link).
    pub addresses: BTreeSet<IpNetwork>,
    /// Routes out of it with a gateway: (destination, gateway).
    pub routes: BTreeSet<(IpNetwork, Option<IpAddr>)>,
}

/// The link with `mac` in the namespace the socket lives in.
pub fn look(socket: &mut RouteSocket, mac: &[u8]) -> Result<Option<Seen>, String> {
    let links = dump_links(socket, "test: links").map_err(|e| e.to_string())?;
    let Some(link) = links.into_iter().find(|l| l.mac == mac) else {
        return Ok(None);
    };
    let addresses = dump_addresses(socket, "test: addresses", link.index)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|a| a.index == link.index && !is_link_local(a.address))
        .filter_map(|a| IpNetwork::new(a.address, a.prefix_len).ok())
        .collect();
    let routes = dump_routes(socket, "test: routes")
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|r| r.oif == Some(link.index) && r.gateway.is_some())
        .filter_map(|r| Some((IpNetwork::new(r.destination, r.prefix_len).ok()?, r.gateway)))
        .collect();
    Ok(Some(Seen {
        link,
        addresses,
        routes,
    }))
}

/// The link with `mac` in the network namespace pinned at `netns`.
pub fn look_in(netns: &Path, mac: &[u8]) -> Result<Option<Seen>, String> {
    let mac = mac.to_vec();
    run_in_netns(netns, move || {
        RouteSocket::new()
            .map_err(|e| e.to_string())
            .and_then(|mut s| look(&mut s, &mac))
    })
    .map_err(|e| format!("entering {}: {e}", netns.display()))?
}

/// Whether `ip` is link-local (fe80::/10, 169.254/16).
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

/// `Err` naming each difference when `seen` is not the VF at home exactly
/// as `original` was: same name, MTU and up state, the same addresses.
pub fn home_as_before(seen: &Seen, original: &Seen) -> Result<(), String> {
    let (s, o) = (&seen.link, &original.link);
    if s.name != o.name || s.mtu != o.mtu || s.up != o.up || seen.addresses != original.addresses {
        return Err(format!(
            "home as {} (MTU {}, up {}, addresses {:?}), expected {} (MTU {}, up {}, addresses {:?})",
            s.name, s.mtu, s.up, seen.addresses, o.name, o.mtu, o.up, original.addresses
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_of_both_families_are_recognised() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_link_local("169.254.3.4".parse().unwrap()));
        assert!(!is_link_local("fd00:77::5".parse().unwrap()));
        assert!(!is_link_local("10.77.0.5".parse().unwrap()));
    }
}
