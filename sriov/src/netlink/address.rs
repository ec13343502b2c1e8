//! Message builders for interface addresses: add one, delete one, list them.
//!
//! IPv6 addresses are added with `IFA_F_NODAD`: a pod's address comes from
//! our IPAM, which already guarantees it is unique, and an address still in
//! duplicate-address detection is "tentative" and cannot be bound for about
//! a second, which a workload starting right after attach would see as a
//! failure.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{NetlinkError, RouteTransport};

/// Flags for an `RTM_NEWADDR` that must add, not replace
/// (`NLM_F_CREATE | NLM_F_EXCL`).
pub const ADD_EXCLUSIVE: u16 = netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL;

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFacts {
    /// Interface index.
    pub index: u32,
    /// The address (`IFA_LOCAL` for IPv4, `IFA_ADDRESS` for IPv6).
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Whether the kernel still holds it tentative (IPv6 DAD running).
    pub tentative: bool,
}

fn message(index: u32, address: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    match address {
        IpAddr::V4(v4) => {
            msg.header.family = AddressFamily::Inet;
            msg.attributes.push(AddressAttribute::Local(address));
            msg.attributes.push(AddressAttribute::Address(address));
            if let Some(broadcast) = broadcast(v4, prefix_len) {
                msg.attributes.push(AddressAttribute::Broadcast(broadcast));
            }
        }
        IpAddr::V6(_) => {
            msg.header.family = AddressFamily::Inet6;
            msg.attributes.push(AddressAttribute::Address(address));
        }
    }
    msg
}

/// The broadcast address `ip addr add ... brd +` would set; none for /31
/// and /32, which have no broadcast (RFC 3021).
fn broadcast(address: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len >= 31 {
        return None;
    }
    let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    Some(Ipv4Addr::from(u32::from(address) | host_bits))
}

/// `RTM_NEWADDR` adding `address/prefix_len` to link `index`; IPv6 ones
/// skip duplicate-address detection. Send with [`ADD_EXCLUSIVE`].
pub fn new_address_message(index: u32, address: IpAddr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut msg = message(index, address, prefix_len);
    if address.is_ipv6() {
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    RouteNetlinkMessage::NewAddress(msg)
}

/// `RTM_DELADDR` removing `address/prefix_len` from link `index`.
pub fn del_address_message(index: u32, address: IpAddr, prefix_len: u8) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelAddress(message(index, address, prefix_len))
}

/// Reads one address message; `None` for other messages.
pub fn address_from_reply(reply: &RouteNetlinkMessage) -> Option<AddressFacts> {
    let RouteNetlinkMessage::NewAddress(msg) = reply else {
        return None;
    };
    let find = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if want_local => Some(*ip),
            AddressAttribute::Address(ip) if !want_local => Some(*ip),
            _ => None,
        })
    };
    // IPv4 point-to-point links put the peer in IFA_ADDRESS; IFA_LOCAL is
    // always our own address when present.
    let address = find(true).or_else(|| find(false))?;
    let flags = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Flags(f) => Some(*f),
        _ => None,
    });
    let tentative = flags.map_or(
        msg.header.flags.contains(AddressHeaderFlags::Tentative),
        |f| f.contains(AddressFlags::Tentative),
    );
    Some(AddressFacts {
        index: msg.header.index,
        address,
        prefix_len: msg.header.prefix_len,
        tentative,
    })
}

/// Every address of link `index` in the transport's namespace, both
/// families, link-local IPv6 included.
pub fn dump_addresses(
    transport: &mut impl RouteTransport,
    op: &str,
    index: u32,
) -> Result<Vec<AddressFacts>, NetlinkError> {
    // The kernel filters a dump by ifa_index only in strict-check mode,
    // which this socket does not enable; filter here.
    let replies = transport.request(
        op,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        netlink_packet_core::NLM_F_DUMP,
    )?;
    Ok(replies
        .iter()
        .filter_map(address_from_reply)
        .filter(|a| a.index == index)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RecordingTransport;
    use std::net::Ipv6Addr;

    #[test]
    fn ipv4_address_carries_local_address_and_broadcast() {
        let msg = new_address_message(7, "192.0.2.10".parse().unwrap(), 24);
        let RouteNetlinkMessage::NewAddress(msg) = msg else {
            panic!("not an address message");
        };
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.index, 7);
        assert_eq!(msg.header.prefix_len, 24);
        assert!(
            msg.attributes
                .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(192, 0, 2, 255)))
        );
        assert!(
            msg.attributes
                .contains(&AddressAttribute::Local("192.0.2.10".parse().unwrap()))
        );
    }

    #[test]
    fn point_to_point_prefixes_have_no_broadcast() {
        assert_eq!(broadcast(Ipv4Addr::new(10, 0, 0, 1), 31), None);
        assert_eq!(broadcast(Ipv4Addr::new(10, 0, 0, 1), 32), None);
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 1, 2, 3), 0),
            Some(Ipv4Addr::BROADCAST)
        );
    }

    #[test]
    fn ipv6_address_skips_dad_in_header_and_attribute() {
        let msg = new_address_message(3, "2001:db8::5".parse().unwrap(), 64);
        let RouteNetlinkMessage::NewAddress(msg) = msg else {
            panic!("not an address message");
        };
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert!(msg.header.flags.contains(AddressHeaderFlags::Nodad));
        assert!(
            msg.attributes
                .contains(&AddressAttribute::Flags(AddressFlags::Nodad))
        );
    }

    #[test]
    fn dump_keeps_only_the_asked_link() {
        let mut transport = RecordingTransport::new();
        let ours = new_address_message(4, IpAddr::V6(Ipv6Addr::LOCALHOST), 128);
        let theirs = new_address_message(9, "10.0.0.1".parse().unwrap(), 8);
        transport.answer(vec![ours, theirs]);
        let found = dump_addresses(&mut transport, "listing addresses", 4).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(
            transport.requests[0].extra_flags,
            netlink_packet_core::NLM_F_DUMP
        );
    }
}
