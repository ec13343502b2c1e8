//! Message builders for routes in the main table: add one, list them.

use std::net::IpAddr;

use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{NetlinkError, RouteTransport};

/// Flags for an `RTM_NEWROUTE` that must add, not replace
/// (`NLM_F_CREATE | NLM_F_EXCL`).
pub const ADD_EXCLUSIVE: u16 = netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL;

/// One route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFacts {
    /// Destination network address (`0.0.0.0` / `::` for a default route).
    pub destination: IpAddr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop, if the route goes via one.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Scope.
    pub scope: RouteScope,
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `RTM_NEWROUTE` adding `destination/prefix_len` out of link `oif`, via
/// `gateway` when given, with `scope` (universe for routes via a gateway,
/// link for on-link ones), as a static route in the main table. Send with
/// [`ADD_EXCLUSIVE`]. The gateway must be reachable already (an address of
/// its subnet on a link that is up), or the kernel answers `ENETUNREACH`.
pub fn new_route_message(
    destination: IpAddr,
    prefix_len: u8,
    gateway: Option<IpAddr>,
    oif: u32,
    scope: RouteScope,
) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(destination);
    msg.header.destination_prefix_length = prefix_len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = scope;
    msg.header.kind = RouteType::Unicast;
    if prefix_len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(destination)));
    }
    if let Some(gateway) = gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
    }
    msg.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(msg)
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Reads one route message of the main table; `None` for anything else.
pub fn route_from_reply(reply: &RouteNetlinkMessage) -> Option<RouteFacts> {
    let RouteNetlinkMessage::NewRoute(msg) = reply else {
        return None;
    };
    let mut table = u32::from(msg.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    for attribute in &msg.attributes {
        match attribute {
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let destination = destination.or(match msg.header.address_family {
        AddressFamily::Inet => Some(IpAddr::from([0u8; 4])),
        AddressFamily::Inet6 => Some(IpAddr::from([0u8; 16])),
        _ => None,
    })?;
    Some(RouteFacts {
        destination,
        prefix_len: msg.header.destination_prefix_length,
        gateway,
        oif,
        scope: msg.header.scope,
    })
}

/// Every main-table route of both families in the transport's namespace.
pub fn dump_routes(
    transport: &mut impl RouteTransport,
    op: &str,
) -> Result<Vec<RouteFacts>, NetlinkError> {
    let replies = transport.request(
        op,
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        netlink_packet_core::NLM_F_DUMP,
    )?;
    Ok(replies.iter().filter_map(route_from_reply).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_via_gateway_is_static_unicast_in_main() {
        let msg = new_route_message(
            "198.51.100.0".parse().unwrap(),
            24,
            Some("192.0.2.1".parse().unwrap()),
            5,
            RouteScope::Universe,
        );
        let facts = route_from_reply(&msg).unwrap();
        assert_eq!(
            facts,
            RouteFacts {
                destination: "198.51.100.0".parse().unwrap(),
                prefix_len: 24,
                gateway: Some("192.0.2.1".parse().unwrap()),
                oif: Some(5),
                scope: RouteScope::Universe,
            }
        );
        let RouteNetlinkMessage::NewRoute(raw) = msg else {
            panic!("not a route message");
        };
        assert_eq!(raw.header.protocol, RouteProtocol::Static);
        assert_eq!(raw.header.kind, RouteType::Unicast);
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let msg = new_route_message(
            "::".parse().unwrap(),
            0,
            Some("2001:db8::1".parse().unwrap()),
            2,
            RouteScope::Universe,
        );
        let RouteNetlinkMessage::NewRoute(raw) = &msg else {
            panic!("not a route message");
        };
        assert!(
            !raw.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        assert_eq!(
            route_from_reply(&msg).unwrap().destination,
            "::".parse::<IpAddr>().unwrap()
        );
    }
}
