//! The nldev operations a pod attach needs, over any [`RdmaTransport`].
//!
//! Kernel behaviour they rely on (drivers/infiniband/core/nldev.c,
//! device.c): `RDMA_NLDEV_CMD_GET` as a doit needs an index, so a name is
//! looked up with a dump; in exclusive netns mode a socket sees only the
//! devices of its own namespace, so a device in a pod is found and moved
//! with a socket opened inside that pod; moving needs `CAP_NET_ADMIN` and
//! exclusive mode (`EOPNOTSUPP` otherwise).

use std::fmt;
use std::os::fd::RawFd;

use sriov::netlink::NetlinkError;

use super::wire::{
    NldevReply, NldevRequest, RDMA_NLDEV_ATTR_DEV_INDEX, RDMA_NLDEV_ATTR_DEV_NAME,
    RDMA_NLDEV_CMD_GET, RDMA_NLDEV_CMD_SET, RDMA_NLDEV_CMD_SYS_GET, RDMA_NLDEV_NET_NS_FD,
    RDMA_NLDEV_SYS_ATTR_NETNS_MODE, RequestAttribute, nldev_type,
};
use super::{RdmaNetlinkError, RdmaTransport};

/// Whether RDMA devices are shared by every network namespace or each
/// belongs to exactly one (`rdma system show netns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsMode {
    /// Every namespace sees every device (the kernel's default); devices
    /// cannot be moved.
    Shared,
    /// Each device lives in one namespace and can be moved.
    Exclusive,
}

impl fmt::Display for NetnsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetnsMode::Shared => "shared",
            NetnsMode::Exclusive => "exclusive",
        })
    }
}

/// Dump of every device visible in the socket's namespace.
pub fn list_devices_request() -> NldevRequest {
    NldevRequest {
        command: RDMA_NLDEV_CMD_GET,
        dump: true,
        attributes: Vec::new(),
    }
}

/// The subsystem settings, netns mode among them.
pub fn system_request() -> NldevRequest {
    NldevRequest {
        command: RDMA_NLDEV_CMD_SYS_GET,
        dump: false,
        attributes: Vec::new(),
    }
}

/// Move device `index` into the network namespace open as `netns_fd` in
/// the sending process.
pub fn set_netns_request(index: u32, netns_fd: RawFd) -> NldevRequest {
    NldevRequest {
        command: RDMA_NLDEV_CMD_SET,
        dump: false,
        attributes: vec![
            RequestAttribute::U32(RDMA_NLDEV_ATTR_DEV_INDEX, index),
            // A descriptor is never negative once opened.
            RequestAttribute::U32(RDMA_NLDEV_NET_NS_FD, netns_fd as u32),
        ],
    }
}

impl NldevReply {
    /// A device as a `RDMA_NLDEV_CMD_GET` dump reports it (index and name
    /// only), for scripting `rdma::testing::RecordingRdma`.
    pub fn device(index: u32, name: &str) -> Self {
        let mut name = name.as_bytes().to_vec();
        name.push(0);
        NldevReply {
            message_type: nldev_type(RDMA_NLDEV_CMD_GET),
            attributes: vec![
                (RDMA_NLDEV_ATTR_DEV_INDEX, index.to_ne_bytes().to_vec()),
                (RDMA_NLDEV_ATTR_DEV_NAME, name),
            ],
        }
    }

    /// A `RDMA_NLDEV_CMD_SYS_GET` reply in `mode`.
    pub fn system(mode: NetnsMode) -> Self {
        NldevReply {
            message_type: nldev_type(RDMA_NLDEV_CMD_SYS_GET),
            attributes: vec![(
                RDMA_NLDEV_SYS_ATTR_NETNS_MODE,
                vec![u8::from(mode == NetnsMode::Shared)],
            )],
        }
    }
}

/// The index of RDMA device `name` in the socket's namespace, or `None`
/// when no device of that name is visible there.
pub fn find_device(
    transport: &mut (impl RdmaTransport + ?Sized),
    name: &str,
) -> Result<Option<u32>, RdmaNetlinkError> {
    let op = format!("looking up RDMA device {name}");
    let replies = transport.request(&op, &list_devices_request())?;
    for reply in &replies {
        if reply.string(RDMA_NLDEV_ATTR_DEV_NAME) != Some(name) {
            continue;
        }
        return match reply.u32(RDMA_NLDEV_ATTR_DEV_INDEX) {
            Some(index) => Ok(Some(index)),
            None => Err(NetlinkError::Protocol {
                op,
                detail: format!("device {name} came without RDMA_NLDEV_ATTR_DEV_INDEX"),
            }
            .into()),
        };
    }
    Ok(None)
}

/// The index of RDMA device `name`; its absence is an error naming it.
pub fn device_index(
    transport: &mut (impl RdmaTransport + ?Sized),
    name: &str,
) -> Result<u32, RdmaNetlinkError> {
    find_device(transport, name)?.ok_or_else(|| RdmaNetlinkError::NoSuchDevice {
        op: format!("looking up RDMA device {name}"),
        device: name.to_string(),
    })
}

/// The subsystem's netns mode (`RDMA_NLDEV_SYS_ATTR_NETNS_MODE`: 1 shared,
/// 0 exclusive).
pub fn netns_mode(
    transport: &mut (impl RdmaTransport + ?Sized),
) -> Result<NetnsMode, RdmaNetlinkError> {
    let op = "reading the RDMA subsystem's netns mode";
    let replies = transport.request(op, &system_request())?;
    match replies
        .iter()
        .find_map(|r| r.u8(RDMA_NLDEV_SYS_ATTR_NETNS_MODE))
    {
        Some(0) => Ok(NetnsMode::Exclusive),
        Some(_) => Ok(NetnsMode::Shared),
        None => Err(NetlinkError::Protocol {
            op: op.to_string(),
            detail: "no RDMA_NLDEV_SYS_ATTR_NETNS_MODE in the reply".into(),
        }
        .into()),
    }
}

/// Moves RDMA device `name` (index `index`, as the sending socket's
/// namespace sees it) into the namespace open as `netns_fd`; `target`
/// names that namespace in errors ("the pod's netns").
pub fn move_to_netns(
    transport: &mut (impl RdmaTransport + ?Sized),
    name: &str,
    index: u32,
    netns_fd: RawFd,
    target: &str,
) -> Result<(), RdmaNetlinkError> {
    let op = format!("moving RDMA device {name} (index {index}) into {target}");
    transport
        .request(&op, &set_netns_request(index, netns_fd))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::wire::{Body, Message, decode_messages};
    use crate::testing::RecordingRdma;

    // Byte-for-byte, derived by hand from the kernel headers:
    // nlmsghdr = len u32, type u16, flags u16, seq u32, pid u32 (host
    // order, little-endian here); type = (RDMA_NL_NLDEV 5 << 10) + command;
    // flags NLM_F_REQUEST 0x1 | NLM_F_ACK 0x4 (| NLM_F_DUMP 0x300).

    #[test]
    fn device_dump_request_bytes() {
        // len 16, type 5121 = 0x1401, flags 0x305, seq 7, pid 0; no attributes.
        assert_eq!(
            crate::netlink::wire::encode_request(&list_devices_request(), 7),
            [16, 0, 0, 0, 0x01, 0x14, 0x05, 0x03, 7, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn system_get_request_bytes() {
        // len 16, type 5126 = 0x1406, flags 0x5, seq 1.
        assert_eq!(
            crate::netlink::wire::encode_request(&system_request(), 1),
            [16, 0, 0, 0, 0x06, 0x14, 0x05, 0x00, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn set_netns_request_bytes() {
        // len 32, type 5122 = 0x1402, flags 0x5, seq 3; then
        // nlattr{len 8, type 1 DEV_INDEX} u32 4,
        // nlattr{len 8, type 68 NET_NS_FD} u32 9.
        assert_eq!(
            crate::netlink::wire::encode_request(&set_netns_request(4, 9), 3),
            [
                32, 0, 0, 0, 0x02, 0x14, 0x05, 0x00, 3, 0, 0, 0, 0, 0, 0, 0, //
                8, 0, 1, 0, 4, 0, 0, 0, //
                8, 0, 68, 0, 9, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn string_attributes_are_nul_terminated_and_padded() {
        let request = NldevRequest {
            command: RDMA_NLDEV_CMD_GET,
            dump: false,
            attributes: vec![RequestAttribute::String(
                RDMA_NLDEV_ATTR_DEV_NAME,
                "rxe0".into(),
            )],
        };
        // nlattr{len 9, type 2} "rxe0\0" + 3 bytes of padding; len 16 + 12.
        assert_eq!(
            crate::netlink::wire::encode_request(&request, 2),
            [
                28, 0, 0, 0, 0x01, 0x14, 0x05, 0x00, 2, 0, 0, 0, 0, 0, 0, 0, //
                9, 0, 2, 0, b'r', b'x', b'e', b'0', 0, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn scripted_replies_decode_like_kernel_bytes() {
        // What the recording transport hands out is what the socket decodes.
        let mut bytes = vec![0u8; 16];
        bytes.extend_from_slice(&[8, 0, 1, 0, 3, 0, 0, 0]);
        bytes.extend_from_slice(&[11, 0, 2, 0, b'm', b'l', b'x', b'5', b'_', b'3', 0, 0]);
        let len = bytes.len() as u32;
        bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        bytes[4..6].copy_from_slice(&5121u16.to_ne_bytes());
        assert_eq!(
            decode_messages(&bytes).unwrap(),
            [Message {
                seq: 0,
                body: Body::Reply(NldevReply::device(3, "mlx5_3"))
            }]
        );
    }

    #[test]
    fn find_device_picks_the_named_one_from_the_dump() {
        let mut t = RecordingRdma::new();
        t.answer(vec![
            NldevReply::device(1, "mlx5_0"),
            NldevReply::device(4, "mlx5_3"),
        ]);
        assert_eq!(find_device(&mut t, "mlx5_3").unwrap(), Some(4));
        assert_eq!(t.requests[0].request, list_devices_request());
        assert_eq!(t.ops(), ["looking up RDMA device mlx5_3"]);
    }

    #[test]
    fn a_missing_device_is_none_or_a_named_error() {
        let mut t = RecordingRdma::new();
        t.answer(vec![NldevReply::device(1, "mlx5_0")]);
        assert_eq!(find_device(&mut t, "mlx5_3").unwrap(), None);
        t.answer(vec![]);
        assert_eq!(
            device_index(&mut t, "mlx5_3").unwrap_err().to_string(),
            "looking up RDMA device mlx5_3: no RDMA device mlx5_3 in this network namespace"
        );
    }

    #[test]
    fn netns_mode_reads_one_as_shared_and_zero_as_exclusive() {
        let mut t = RecordingRdma::new();
        t.answer(vec![NldevReply::system(NetnsMode::Shared)]);
        t.answer(vec![NldevReply::system(NetnsMode::Exclusive)]);
        t.answer(vec![]);
        assert_eq!(netns_mode(&mut t).unwrap(), NetnsMode::Shared);
        assert_eq!(netns_mode(&mut t).unwrap(), NetnsMode::Exclusive);
        assert!(
            netns_mode(&mut t)
                .unwrap_err()
                .to_string()
                .ends_with("no RDMA_NLDEV_SYS_ATTR_NETNS_MODE in the reply")
        );
        assert_eq!(NldevReply::system(NetnsMode::Shared).u8(66), Some(1));
        assert_eq!(t.requests[0].request, system_request());
    }

    #[test]
    fn a_refused_move_names_device_index_and_target() {
        let mut t = RecordingRdma::new();
        t.refuse(libc::EOPNOTSUPP);
        let err = move_to_netns(&mut t, "mlx5_3", 4, 9, "the pod's netns").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "moving RDMA device mlx5_3 (index 4) into the pod's netns: the kernel answered EOPNOTSUPP"
            ),
            "{err}"
        );
        assert_eq!(t.requests[0].request, set_netns_request(4, 9));
        assert_eq!(t.requests[0].bytes(1).len(), 32);
    }
}
