//! Message builders for whole links: create a veth pair, delete a link.
//!
//! Tests stand in veth pairs for VFs (no hardware in CI); building them
//! through the same client the driver uses means no `ip` binary is needed.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};

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

/// `RTM_DELLINK` of the link called `name` (a veth takes its peer along).
pub fn del_link_message(name: &str) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.attributes = vec![LinkAttribute::IfName(name.to_string())];
    RouteNetlinkMessage::DelLink(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{RouteSocket, RouteTransport};

    #[test]
    fn veth_create_and_delete_round_trip() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("\n!!!!! veth_create_and_delete_round_trip: NOT RUN, needs root !!!!!\n");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "must run as root in CI"
            );
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
