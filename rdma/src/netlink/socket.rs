//! The real transport: a blocking `NETLINK_RDMA` socket.

use netlink_sys::Socket;
use sriov::netlink::socket::{open_kernel_socket, recv_whole};

use super::wire::{Body, NETLINK_RDMA, NldevReply, NldevRequest, decode_messages, encode_request};
use super::{RdmaNetlinkError, RdmaTransport};

/// A connected RDMA netlink socket in the network namespace of the thread
/// that opened it: in exclusive netns mode the kernel shows it only the
/// RDMA devices of that namespace.
pub struct RdmaSocket {
    socket: Socket,
    seq: u32,
}

impl RdmaSocket {
    /// Opens and connects the socket. Fails with `EPROTONOSUPPORT` when the
    /// kernel has no RDMA core.
    pub fn new() -> Result<Self, RdmaNetlinkError> {
        let socket =
            open_kernel_socket(NETLINK_RDMA).map_err(|(action, source)| RdmaNetlinkError::Io {
                op: "opening the RDMA netlink socket".into(),
                action,
                source,
            })?;
        Ok(RdmaSocket { socket, seq: 0 })
    }

    fn recv_datagram(&self, op: &str) -> Result<Vec<u8>, RdmaNetlinkError> {
        recv_whole(&self.socket).map_err(|source| RdmaNetlinkError::Io {
            op: op.to_string(),
            action: "receiving from",
            source,
        })
    }
}

impl RdmaTransport for RdmaSocket {
    fn request(
        &mut self,
        op: &str,
        request: &NldevRequest,
    ) -> Result<Vec<NldevReply>, RdmaNetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.socket
            .send(&encode_request(request, seq), 0)
            .map_err(|source| RdmaNetlinkError::Io {
                op: op.to_string(),
                action: "sending on",
                source,
            })?;
        let mut replies = Vec::new();
        loop {
            let datagram = self.recv_datagram(op)?;
            let messages =
                decode_messages(&datagram).map_err(|detail| RdmaNetlinkError::Protocol {
                    op: op.to_string(),
                    detail,
                })?;
            for message in messages {
                if message.seq != seq {
                    continue; // a late answer to an earlier, abandoned request
                }
                match message.body {
                    Body::Error { errno: 0, .. } => return Ok(replies),
                    Body::Error { errno, message } => {
                        return Err(RdmaNetlinkError::Kernel {
                            op: op.to_string(),
                            errno: errno.saturating_abs(),
                            message,
                        });
                    }
                    // A dump ends with DONE carrying the dump's own error
                    // instead of an ACK.
                    Body::Done(0) => return Ok(replies),
                    Body::Done(code) => {
                        return Err(RdmaNetlinkError::Kernel {
                            op: op.to_string(),
                            errno: code.saturating_abs(),
                            message: None,
                        });
                    }
                    Body::Reply(reply) => replies.push(reply),
                    Body::Noop => {}
                    Body::Overrun => {
                        return Err(RdmaNetlinkError::Protocol {
                            op: op.to_string(),
                            detail: "the kernel reported a buffer overrun".into(),
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
    use crate::netlink::{find_device, netns_mode};

    /// Real kernel. Needs no privilege and no RDMA hardware: without an
    /// RDMA core the socket must fail cleanly; with one, a lookup of a
    /// device that does not exist must come back as "none" and the netns
    /// mode must read.
    #[test]
    fn the_kernel_answers_or_the_socket_fails_cleanly() {
        let mut socket = match RdmaSocket::new() {
            Ok(socket) => socket,
            Err(e) => {
                assert_eq!(e.errno(), Some(libc::EPROTONOSUPPORT), "{e}");
                assert_eq!(
                    e.to_string(),
                    "opening the RDMA netlink socket: creating the RDMA netlink socket failed: \
                     Protocol not supported (os error 93) (the kernel has no RDMA subsystem: \
                     is ib_core loaded?)"
                );
                eprintln!("no RDMA core in this kernel: checked the clean error only");
                return;
            }
        };
        assert_eq!(find_device(&mut socket, "nosuchrdma9").unwrap(), None);
        let err = crate::netlink::device_index(&mut socket, "nosuchrdma9").unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
        netns_mode(&mut socket).unwrap();
    }
}
