//! The real transport: a blocking `NETLINK_RDMA` socket.

use sriov::netlink::channel::Channel;

use super::wire::{FAMILY, NldevReply, NldevRequest, decode_messages, encode_request};
use super::{RdmaNetlinkError, RdmaTransport};

/// A connected RDMA netlink socket in the network namespace of the thread
/// that opened it: in exclusive netns mode the kernel shows it only the
/// RDMA devices of that namespace.
pub struct RdmaSocket {
    channel: Channel,
}

impl RdmaSocket {
    /// Opens and connects the socket. Fails with `EPROTONOSUPPORT` when the
    /// kernel has no RDMA core.
    pub fn new() -> Result<Self, RdmaNetlinkError> {
        let channel = Channel::open(FAMILY, "opening the RDMA netlink socket")?;
        Ok(RdmaSocket { channel })
    }
}

impl RdmaTransport for RdmaSocket {
    fn request(
        &mut self,
        op: &str,
        request: &NldevRequest,
    ) -> Result<Vec<NldevReply>, RdmaNetlinkError> {
        let replies =
            self.channel
                .request(op, |seq| encode_request(request, seq), decode_messages)?;
        Ok(replies)
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
