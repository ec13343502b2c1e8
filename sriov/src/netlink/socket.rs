//! The real transport: a blocking NETLINK_ROUTE socket.

use netlink_packet_route::RouteNetlinkMessage;

use super::channel::{Channel, NetlinkFamily};
use super::wire::{decode_replies, encode_request};
use super::{NetlinkError, RouteTransport};

/// A connected rtnetlink socket in the caller's network namespace.
///
/// Synchronous on purpose: VF configuration is a handful of requests during
/// a kubelet Prepare call, and a blocking socket keeps the order of
/// operations and their rollback obvious.
pub struct RouteSocket {
    channel: Channel,
}

impl RouteSocket {
    /// Opens and connects the socket, asking for extended acks (the kernel's
    /// error text) where the kernel supports them.
    pub fn new() -> Result<Self, NetlinkError> {
        let channel = Channel::open(NetlinkFamily::ROUTE, "opening rtnetlink socket")?;
        Ok(RouteSocket { channel })
    }
}

impl RouteTransport for RouteSocket {
    fn request(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.channel.request(
            op,
            |seq| encode_request(request, extra_flags, seq),
            decode_replies,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_DUMP;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    #[test]
    fn a_link_dump_collects_every_part_and_finds_loopback() {
        // Listing links needs no privilege, so this runs everywhere.
        let mut socket = RouteSocket::new().unwrap();
        let replies = socket
            .request(
                "listing links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .unwrap();
        let names: Vec<&str> = replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => {
                    link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.as_str()),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect();
        assert!(names.contains(&"lo"), "{names:?}");
    }

    #[test]
    fn two_requests_on_one_socket_keep_their_answers_apart() {
        let mut socket = RouteSocket::new().unwrap();
        let get = |name: &str| {
            let mut link = LinkMessage::default();
            link.attributes = vec![LinkAttribute::IfName(name.into())];
            RouteNetlinkMessage::GetLink(link)
        };
        let err = socket
            .request("reading link nosuchlink0", get("nosuchlink0"), 0)
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
        let lo = socket.request("reading link lo", get("lo"), 0).unwrap();
        assert_eq!(lo.len(), 1);
    }
}
