//! Message builders for whole links: create a veth pair or a macvlan, delete a link, read one, and change what the pod-attach path
//! changes: network namespace, name, MTU, MAC and up/down.
//!
//! Tests stand in veth pairs for VFs (no hardware in CI); building them
//! through the same client the driver uses means no `ip` binary is needed.

use std::os::fd::RawFd;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    MacVlanMode,
};

use super::{NetlinkError, RouteTransport};

/// Flags for a `RTM_NEWLINK` that must create a new link, not modify one
/// (`NLM_F_CREATE | NLM_F_EXCL`).
pub const CREATE_EXCLUSIVE: u16 =
    netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL;

/// `RTM_NEWLINK` creating veth `name` with peer `peer`; send it with
/// [`CREATE_EXCLUSIVE`].
pub fn new_veth_message(name: &str, peer: &str) -> RouteNetlinkMessage {
    let mut peer_msg = LinkMessage::default();
    peer_msg.attributes = vec![LinkAttribute::IfName(peer.to_string())];
    let mut link = LinkMessage::default();
    link.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]),
    ];
    RouteNetlinkMessage::NewLink(link)
}

/// `RTM_NEWLINK` creating bridge-mode macvlan `name` on the link with index
/// `parent`; send it with [`CREATE_EXCLUSIVE`].
pub fn new_macvlan_message(name: &str, parent: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Link(parent),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]),
    ];
    RouteNetlinkMessage::NewLink(link)
}

/// `RTM_DELLINK` of the link called `name` (a veth takes its peer along).
pub fn del_link_message(name: &str) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.attributes = vec![LinkAttribute::IfName(name.to_string())];
    RouteNetlinkMessage::DelLink(link)
}

/// `RTM_GETLINK` of the link with index `index`.
pub fn get_link_by_index_message(index: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    RouteNetlinkMessage::GetLink(link)
}

/// `RTM_GETLINK` of the link called `name`.
pub fn get_link_by_name_message(name: &str) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.attributes = vec![LinkAttribute::IfName(name.to_string())];
    RouteNetlinkMessage::GetLink(link)
}

/// `RTM_NEWLINK` moving link `index` into the network namespace open as
/// `netns_fd`, renaming it to `name` there when given.
///
/// One message does both: the kernel moves the link first (keeping its
/// current name, or taking `name` if the current one is taken in the
/// target) and then renames it inside the target. If the rename fails the
/// move has still happened, so a caller must look for the link in both
/// namespaces before rolling back.
pub fn set_netns_message(index: u32, netns_fd: RawFd, name: Option<&str>) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::NetNsFd(netns_fd));
    if let Some(name) = name {
        link.attributes
            .push(LinkAttribute::IfName(name.to_string()));
    }
    RouteNetlinkMessage::NewLink(link)
}

/// `RTM_NEWLINK` renaming link `index` to `name` (the link must be down).
pub fn rename_message(index: u32, name: &str) -> RouteNetlinkMessage {
    set_attribute(index, LinkAttribute::IfName(name.to_string()))
}

/// `RTM_NEWLINK` setting the MTU of link `index`.
pub fn set_mtu_message(index: u32, mtu: u32) -> RouteNetlinkMessage {
    set_attribute(index, LinkAttribute::Mtu(mtu))
}

/// `RTM_NEWLINK` setting the MAC address (`IFLA_ADDRESS`) of link `index`.
pub fn set_mac_message(index: u32, mac: [u8; 6]) -> RouteNetlinkMessage {
    set_attribute(index, LinkAttribute::Address(mac.to_vec()))
}

/// `RTM_NEWLINK` bringing link `index` up or down (`IFF_UP` with a change
/// mask of only `IFF_UP`, so no other flag is touched).
pub fn set_up_message(index: u32, up: bool) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    link.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::NewLink(link)
}

fn set_attribute(index: u32, attribute: LinkAttribute) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes = vec![attribute];
    RouteNetlinkMessage::NewLink(link)
}

/// What the attach path needs to know of a link, read from an
/// `RTM_NEWLINK` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// Interface index in the namespace the reply came from.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU, 0 when the kernel did not say.
    pub mtu: u32,
    /// Hardware address; empty for links without one.
    pub mac: Vec<u8>,
    /// Whether `IFF_UP` is set.
    pub up: bool,
    /// `IFLA_PARENT_DEV_NAME` (kernel >= 5.16): the bus device behind the
    /// link, e.g. `0000:3b:02.1` for a VF. Virtual links have none.
    pub parent_device: Option<String>,
    /// `IFLA_PARENT_DEV_BUS_NAME`, e.g. `pci`.
    pub parent_bus: Option<String>,
}

impl LinkFacts {
    /// Reads the facts of one link message; `None` for other messages.
    pub fn from_reply(reply: &RouteNetlinkMessage) -> Option<LinkFacts> {
        let RouteNetlinkMessage::NewLink(link) = reply else {
            return None;
        };
        let mut facts = LinkFacts {
            index: link.header.index,
            name: String::new(),
            mtu: 0,
            mac: Vec::new(),
            up: link.header.flags.contains(LinkFlags::Up),
            parent_device: None,
            parent_bus: None,
        };
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(name) => facts.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => facts.mtu = *mtu,
                LinkAttribute::Address(mac) => facts.mac.clone_from(mac),
                LinkAttribute::ParentDevName(dev) => facts.parent_device = Some(dev.clone()),
                LinkAttribute::ParentDevBusName(bus) => facts.parent_bus = Some(bus.clone()),
                _ => {}
            }
        }
        Some(facts)
    }
}

/// Reads one link with `request` (from [`get_link_by_index_message`] or
/// [`get_link_by_name_message`]); `Ok(None)` when the kernel says there is
/// no such link (`ENODEV`).
pub fn get_link(
    transport: &mut impl RouteTransport,
    op: &str,
    request: RouteNetlinkMessage,
) -> Result<Option<LinkFacts>, NetlinkError> {
    match transport.request(op, request, 0) {
        Ok(replies) => match replies.iter().find_map(LinkFacts::from_reply) {
            Some(facts) => Ok(Some(facts)),
            None => Err(NetlinkError::Protocol {
                op: op.to_string(),
                detail: "the reply carried no link".into(),
            }),
        },
        Err(err) if err.errno() == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Every link of the namespace the transport's socket lives in.
pub fn dump_links(
    transport: &mut impl RouteTransport,
    op: &str,
) -> Result<Vec<LinkFacts>, NetlinkError> {
    let replies = transport.request(
        op,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        netlink_packet_core::NLM_F_DUMP,
    )?;
    Ok(replies.iter().filter_map(LinkFacts::from_reply).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{RouteSocket, RouteTransport};
    use crate::testing::have_root;

    #[test]
    fn veth_create_and_delete_round_trip() {
        if !have_root("veth_create_and_delete_round_trip") {
            return;
        }
        let name = format!("svl{}", std::process::id() % 100_000);
        let peer = format!("{name}p");
        let mut socket = RouteSocket::new().unwrap();
        socket
            .request(
                "creating a veth",
                new_veth_message(&name, &peer),
                CREATE_EXCLUSIVE,
            )
            .unwrap();
        let again = socket
            .request(
                "creating it twice",
                new_veth_message(&name, &peer),
                CREATE_EXCLUSIVE,
            )
            .unwrap_err();
        assert_eq!(again.errno(), Some(libc::EEXIST), "{again}");
        socket
            .request("deleting the veth", del_link_message(&name), 0)
            .unwrap();
        let gone = socket
            .request("deleting the peer", del_link_message(&peer), 0)
            .unwrap_err();
        assert_eq!(
            gone.errno(),
            Some(libc::ENODEV),
            "the peer went with it: {gone}"
        );
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;
    use crate::netlink::address::{ADD_EXCLUSIVE, dump_addresses, new_address_message};
    use crate::netlink::route::{self, dump_routes, new_route_message};
    use crate::netlink::{RouteSocket, address};
    use crate::testing::have_root;
    use netlink_packet_route::route::RouteScope;

    #[test]
    fn macvlan_takes_mtu_mac_name_addresses_and_a_route() {
        if !have_root("macvlan_takes_mtu_mac_name_addresses_and_a_route") {
            return;
        }
        let tag = std::process::id() % 100_000;
        let (parent, mv, renamed) = (
            format!("sld{tag}"),
            format!("slm{tag}"),
            format!("slr{tag}"),
        );
        let mut s = RouteSocket::new().unwrap();
        // No dummy module on every kernel; a veth end works as the parent.
        s.request(
            "veth parent",
            new_veth_message(&parent, &format!("{parent}p")),
            CREATE_EXCLUSIVE,
        )
        .unwrap();
        let p = get_link(&mut s, "read parent", get_link_by_name_message(&parent))
            .unwrap()
            .unwrap();
        s.request("up parent", set_up_message(p.index, true), 0)
            .unwrap();
        s.request(
            "macvlan",
            new_macvlan_message(&mv, p.index),
            CREATE_EXCLUSIVE,
        )
        .unwrap();
        let m = get_link(&mut s, "read macvlan", get_link_by_name_message(&mv))
            .unwrap()
            .unwrap();
        let mac = [0x02, 0, 0, 0x12, 0x34, 0x56];
        s.request("mtu", set_mtu_message(m.index, 1400), 0).unwrap();
        s.request("mac", set_mac_message(m.index, mac), 0).unwrap();
        s.request("rename", rename_message(m.index, &renamed), 0)
            .unwrap();
        s.request("up", set_up_message(m.index, true), 0).unwrap();
        let after = get_link(&mut s, "read back", get_link_by_index_message(m.index))
            .unwrap()
            .unwrap();
        assert_eq!(
            (after.name.as_str(), after.mtu, after.up),
            (renamed.as_str(), 1400, true)
        );
        assert_eq!(after.mac, mac);
        assert_eq!(
            after.parent_device, None,
            "virtual links have no bus device"
        );

        let v4 = "192.0.2.77".parse().unwrap();
        let v6 = "2001:db8:77::7".parse().unwrap();
        s.request("v4", new_address_message(m.index, v4, 24), ADD_EXCLUSIVE)
            .unwrap();
        s.request("v6", new_address_message(m.index, v6, 64), ADD_EXCLUSIVE)
            .unwrap();
        let addrs = dump_addresses(&mut s, "addrs", m.index).unwrap();
        let v6_facts = addrs.iter().find(|a| a.address == v6).unwrap();
        assert!(!v6_facts.tentative, "NODAD makes it usable at once");
        assert!(addrs.iter().any(|a| a.address == v4 && a.prefix_len == 24));
        s.request(
            "route",
            new_route_message(
                "198.51.100.0".parse().unwrap(),
                24,
                Some("192.0.2.1".parse().unwrap()),
                m.index,
                RouteScope::Universe,
            ),
            route::ADD_EXCLUSIVE,
        )
        .unwrap();
        let routes = dump_routes(&mut s, "routes").unwrap();
        assert!(
            routes
                .iter()
                .any(|r| r.oif == Some(m.index) && r.gateway == Some("192.0.2.1".parse().unwrap()))
        );
        s.request("del v4", address::del_address_message(m.index, v4, 24), 0)
            .unwrap();
        assert!(
            dump_addresses(&mut s, "addrs", m.index)
                .unwrap()
                .iter()
                .all(|a| a.address != v4)
        );
        s.request("delete", del_link_message(&parent), 0).unwrap();
        assert_eq!(
            get_link(&mut s, "gone", get_link_by_index_message(m.index)).unwrap(),
            None,
            "the macvlan went with its parent"
        );
    }
}
