//! The project's one synchronous rtnetlink (NETLINK_ROUTE) client.
//!
//! Every kernel request goes through [`RouteTransport`]: the real
//! [`RouteSocket`] talks to the kernel over the socket layer every netlink
//! family shares ([`channel`]), and `crate::testing::RecordingTransport`
//! (with the `test-support` feature) records the requests and answers from
//! a script so that callers are tested without root.
//! Requests always carry `NLM_F_ACK`, so each one ends with the kernel's
//! verdict, and a refusal becomes a [`NetlinkError::Kernel`] naming the
//! operation and the errno. Dumps (`NLM_F_DUMP` in `extra_flags`) return
//! every part up to `NLMSG_DONE`. New operations (link moves, renames,
//! addresses, routes) are a message builder plus a call to
//! [`RouteTransport::request`]; nothing here needs to change for them.

pub mod address;
pub mod channel;
mod error;
pub mod events;
pub mod link;
pub mod route;
mod socket;
mod wire;

pub use channel::NetlinkFamily;
pub use error::{NetlinkError, errno_name};
pub use socket::RouteSocket;
pub use wire::{decode_messages, encode_request};

use netlink_packet_route::RouteNetlinkMessage;

/// Something that can send one rtnetlink request and collect its replies.
///
/// `op` is a human description of the request ("set trust on VF 3 of
/// ens1f0"): it ends up in errors, so it should say what was attempted.
pub trait RouteTransport {
    /// Sends `request` with `NLM_F_REQUEST | NLM_F_ACK | extra_flags` and
    /// returns the reply messages that came before the kernel's ACK.
    fn request(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError>;
}

impl<T: RouteTransport + ?Sized> RouteTransport for &mut T {
    fn request(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        (**self).request(op, request, extra_flags)
    }
}
