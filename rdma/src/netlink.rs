//! A small synchronous RDMA netlink (`NETLINK_RDMA`) client: just what a
//! pod attach needs — find a device's index by name, read whether the RDMA
//! subsystem shares devices among network namespaces, and move a device
//! into the namespace of an open file.
//!
//! Messages are encoded by hand ([`wire`]): the RDMA family has no header
//! of its own, only `nlmsghdr` and attributes, and `netlink-packet-route`
//! does not know it. Every request goes through [`RdmaTransport`]: the real
//! [`RdmaSocket`] talks to the kernel over the netlink socket layer shared
//! with rtnetlink (`sriov::netlink::channel`), and
//! `rdma::testing::RecordingRdma` (with the `test-support` feature) records
//! requests and answers from a script, so callers are tested without RDMA
//! hardware.

mod error;
pub mod nldev;
mod socket;
pub mod wire;

pub use error::RdmaNetlinkError;
pub use nldev::{NetnsMode, device_index, find_device, move_to_netns, netns_mode};
pub use socket::RdmaSocket;
pub use wire::{NldevReply, NldevRequest, RequestAttribute};

/// Something that can send one RDMA netlink request and collect its
/// replies.
///
/// `op` says what was attempted ("moving RDMA device mlx5_3 into the pod's
/// netns"); it ends up in errors.
pub trait RdmaTransport {
    /// Sends `request` with `NLM_F_REQUEST | NLM_F_ACK` (plus `NLM_F_DUMP`
    /// for dumps) and returns the replies before the ACK or `NLMSG_DONE`.
    fn request(
        &mut self,
        op: &str,
        request: &NldevRequest,
    ) -> Result<Vec<NldevReply>, RdmaNetlinkError>;
}

impl<T: RdmaTransport + ?Sized> RdmaTransport for &mut T {
    fn request(
        &mut self,
        op: &str,
        request: &NldevRequest,
    ) -> Result<Vec<NldevReply>, RdmaNetlinkError> {
        (**self).request(op, request)
    }
}
