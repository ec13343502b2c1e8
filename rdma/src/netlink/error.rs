//! Errors of the RDMA netlink client, each naming the operation (and so
//! the device) it was working on.

use sriov::netlink::NetlinkError;

/// Why an RDMA netlink request failed.
///
/// The socket, the kernel's verdict and bad replies are the failures every
/// netlink family shares ([`NetlinkError`], which names the RDMA socket and
/// says when the kernel has no RDMA core); only a missing device is ours.
#[derive(Debug, thiserror::Error)]
pub enum RdmaNetlinkError {
    /// The socket failed, the kernel refused, or a reply was bad.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// No RDMA device of that name is visible in the socket's namespace.
    #[error("{op}: no RDMA device {device} in this network namespace")]
    NoSuchDevice {
        /// What the caller was doing.
        op: String,
        /// The device name looked for.
        device: String,
    },
}

impl RdmaNetlinkError {
    /// The errno behind the failure, if there is one (`ENODEV` for a
    /// device that is not there).
    pub fn errno(&self) -> Option<i32> {
        match self {
            RdmaNetlinkError::Netlink(e) => e.errno(),
            RdmaNetlinkError::NoSuchDevice { .. } => Some(libc::ENODEV),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::wire::FAMILY;
    use std::io;

    #[test]
    fn kernel_error_names_operation_errno_and_ext_ack() {
        let err = RdmaNetlinkError::from(NetlinkError::Kernel {
            op: "moving RDMA device mlx5_3 (index 4) to netns fd 7".into(),
            errno: libc::EEXIST,
            message: Some("Device name already exists in the target net namespace".into()),
        });
        let text = err.to_string();
        assert!(
            text.starts_with(
                "moving RDMA device mlx5_3 (index 4) to netns fd 7: the kernel answered EEXIST ("
            ),
            "{text}"
        );
        assert!(text.ends_with("): Device name already exists in the target net namespace"));
        assert_eq!(err.errno(), Some(libc::EEXIST));
    }

    #[test]
    fn a_kernel_without_rdma_is_named_as_such() {
        let err = RdmaNetlinkError::from(NetlinkError::Io {
            op: "opening the RDMA netlink socket".into(),
            family: FAMILY,
            action: "creating",
            source: io::Error::from_raw_os_error(libc::EPROTONOSUPPORT),
        });
        assert!(
            err.to_string()
                .ends_with("(the kernel has no RDMA subsystem: is ib_core loaded?)"),
            "{err}"
        );
        assert_eq!(err.errno(), Some(libc::EPROTONOSUPPORT));
    }

    #[test]
    fn a_missing_device_names_it_and_reads_as_enodev() {
        let err = RdmaNetlinkError::NoSuchDevice {
            op: "looking up RDMA device mlx5_9".into(),
            device: "mlx5_9".into(),
        };
        assert_eq!(
            err.to_string(),
            "looking up RDMA device mlx5_9: no RDMA device mlx5_9 in this network namespace"
        );
        assert_eq!(err.errno(), Some(libc::ENODEV));
    }
}
