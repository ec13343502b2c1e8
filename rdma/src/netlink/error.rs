//! Errors of the RDMA netlink client, each naming the operation (and so
//! the device) it was working on.

use std::io;

use sriov::netlink::errno_name;

/// Why an RDMA netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum RdmaNetlinkError {
    /// The socket itself failed (open, bind, send, receive).
    #[error(
        "{op}: {action} the RDMA netlink socket failed: {source}{}",
        no_rdma_hint(source)
    )]
    Io {
        /// What the caller was doing.
        op: String,
        /// Which socket step failed, e.g. "creating".
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered the request with an errno.
    #[error("{op}: the kernel answered {} ({}){}", errno_name(*.errno), io::Error::from_raw_os_error(*.errno), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kernel {
        /// What the caller was doing.
        op: String,
        /// Positive errno, e.g. 95 for EOPNOTSUPP.
        errno: i32,
        /// The kernel's extended-ack text, when it sent one.
        message: Option<String>,
    },
    /// A reply could not be decoded or lacked what the request asks for.
    #[error("{op}: bad reply from the kernel: {detail}")]
    Protocol {
        /// What the caller was doing.
        op: String,
        /// What was wrong with the reply.
        detail: String,
    },
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
            RdmaNetlinkError::Kernel { errno, .. } => Some(*errno),
            RdmaNetlinkError::Io { source, .. } => source.raw_os_error(),
            RdmaNetlinkError::Protocol { .. } => None,
            RdmaNetlinkError::NoSuchDevice { .. } => Some(libc::ENODEV),
        }
    }
}

/// `socket(AF_NETLINK, .., NETLINK_RDMA)` gives `EPROTONOSUPPORT` when no
/// RDMA core (`ib_core`) is in the kernel: say so, it is the usual case.
fn no_rdma_hint(source: &io::Error) -> &'static str {
    if source.raw_os_error() == Some(libc::EPROTONOSUPPORT) {
        " (the kernel has no RDMA subsystem: is ib_core loaded?)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_names_operation_errno_and_ext_ack() {
        let err = RdmaNetlinkError::Kernel {
            op: "moving RDMA device mlx5_3 (index 4) to netns fd 7".into(),
            errno: libc::EEXIST,
            message: Some("Device name already exists in the target net namespace".into()),
        };
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
        let err = RdmaNetlinkError::Io {
            op: "opening the RDMA netlink socket".into(),
            action: "creating",
            source: io::Error::from_raw_os_error(libc::EPROTONOSUPPORT),
        };
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
