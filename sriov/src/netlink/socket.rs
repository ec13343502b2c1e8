//! The real transport: a blocking NETLINK_ROUTE socket.

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::wire::{decode_messages, encode_request, ext_ack_message};
use super::{NetlinkError, RouteTransport};

/// A connected rtnetlink socket in the caller's network namespace.
///
/// Synchronous on purpose: VF configuration is a handful of requests during
/// a kubelet Prepare call, and a blocking socket keeps the order of
/// operations and their rollback obvious.
pub struct RouteSocket {
    socket: Socket,
    seq: u32,
}

impl RouteSocket {
    /// Opens and connects the socket, asking for extended acks (the kernel's
    /// error text) where the kernel supports them.
    pub fn new() -> Result<Self, NetlinkError> {
        let socket =
            open_kernel_socket(NETLINK_ROUTE).map_err(|(action, source)| NetlinkError::Io {
                op: "opening rtnetlink socket".into(),
                action,
                source,
            })?;
        Ok(RouteSocket { socket, seq: 0 })
    }

    fn recv_datagram(&self, op: &str) -> Result<Vec<u8>, NetlinkError> {
        recv_whole(&self.socket).map_err(|source| NetlinkError::Io {
            op: op.to_string(),
            action: "receiving from",
            source,
        })
    }
}

/// Opens a netlink socket of `protocol`, bound and connected to the kernel,
/// asking for extended acks (the kernel's error text) where the kernel
/// supports them (>= 4.12; failing that is not fatal). On error, says which
/// step failed. Shared by every netlink family the project speaks.
pub fn open_kernel_socket(protocol: isize) -> Result<Socket, (&'static str, std::io::Error)> {
    let mut socket = Socket::new(protocol).map_err(|e| ("creating", e))?;
    socket.bind_auto().map_err(|e| ("binding", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| ("connecting", e))?;
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    Ok(socket)
}

/// Receives one whole datagram. Peeks with `MSG_TRUNC` for its size first:
/// a GETLINK reply of a PF with many VFs is larger than any fixed buffer.
pub fn recv_whole(socket: &Socket) -> std::io::Result<Vec<u8>> {
    let mut probe: Vec<u8> = Vec::with_capacity(64);
    let size = socket.recv(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC)?;
    let mut buf: Vec<u8> = Vec::with_capacity(size.max(64));
    let got = socket.recv(&mut buf, 0)?;
    buf.truncate(got);
    Ok(buf)
}

impl RouteTransport for RouteSocket {
    fn request(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = encode_request(request, extra_flags, seq);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| NetlinkError::Io {
                op: op.to_string(),
                action: "sending on",
                source,
            })?;

        let mut replies = Vec::new();
        loop {
            let datagram = self.recv_datagram(op)?;
            let messages = decode_messages(&datagram).map_err(|detail| NetlinkError::Protocol {
                op: op.to_string(),
                detail,
            })?;
            for message in messages {
                if message.header.sequence_number != seq {
                    continue; // a late answer to an earlier, abandoned request
                }
                let flags = message.header.flags;
                match message.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(code) => Err(NetlinkError::Kernel {
                                op: op.to_string(),
                                errno: code.get().saturating_abs(),
                                message: ext_ack_message(flags, &err),
                            }),
                        };
                    }
                    // A dump (NLM_F_DUMP) ends with DONE, which carries the
                    // dump's own error, if any, instead of an ACK.
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(NetlinkError::Kernel {
                            op: op.to_string(),
                            errno: done.code.saturating_abs(),
                            message: None,
                        });
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Noop => {}
                    NetlinkPayload::Overrun(_) => {
                        return Err(NetlinkError::Protocol {
                            op: op.to_string(),
                            detail: "the kernel reported a buffer overrun".into(),
                        });
                    }
                    other => {
                        return Err(NetlinkError::Protocol {
                            op: op.to_string(),
                            detail: format!("unexpected message {other:?}"),
                        });
                    }
                }
            }
        }
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
