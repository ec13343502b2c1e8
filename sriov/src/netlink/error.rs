//! Errors of every netlink family's requests, each naming the operation it
//! was doing.

use std::io;

use super::channel::NetlinkFamily;

/// Why a netlink request failed, in any family (rtnetlink, RDMA netlink).
///
/// Every variant carries the caller's description of the operation, so a log
/// line says what was attempted ("set vlan on VF 3 of ens1f0"), not just
/// "Invalid argument". One type for every family, because the socket, the
/// kernel's verdict and a bad reply are the same things in each.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket itself failed (open, bind, send, receive).
    #[error(
        "{op}: {action} the {} socket failed: {source}{}",
        family.name,
        family.hint_for(source)
    )]
    Io {
        /// What the caller was doing.
        op: String,
        /// Whose socket: its name (and hint) goes into the message.
        family: NetlinkFamily,
        /// Which socket step failed, e.g. "sending on".
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
    /// A reply could not be decoded or did not fit the request.
    #[error("{op}: bad reply from the kernel: {detail}")]
    Protocol {
        /// What the caller was doing.
        op: String,
        /// What was wrong with the reply.
        detail: String,
    },
}

impl NetlinkError {
    /// The kernel's errno when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Io { source, .. } => source.raw_os_error(),
            NetlinkError::Protocol { .. } => None,
        }
    }
}

/// The symbolic name of an errno (`EOPNOTSUPP` for 95), for messages that
/// operators grep for; unknown numbers come back as `errno N`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_names_operation_errno_and_ext_ack() {
        let err = NetlinkError::Kernel {
            op: "set trust on VF 0 of ens1f0".into(),
            errno: libc::EOPNOTSUPP,
            message: Some("VF trust not supported".into()),
        };
        let text = err.to_string();
        assert!(text.starts_with("set trust on VF 0 of ens1f0: the kernel answered EOPNOTSUPP ("));
        assert!(text.ends_with("): VF trust not supported"));
        assert_eq!(err.errno(), Some(95));
    }

    #[test]
    fn socket_error_names_the_family_and_the_step() {
        let err = NetlinkError::Io {
            op: "opening rtnetlink socket".into(),
            family: NetlinkFamily::ROUTE,
            action: "creating",
            source: io::Error::from_raw_os_error(libc::EPROTONOSUPPORT),
        };
        assert_eq!(
            err.to_string(),
            "opening rtnetlink socket: creating the rtnetlink socket failed: \
             Protocol not supported (os error 93)"
        );
        assert_eq!(err.errno(), Some(libc::EPROTONOSUPPORT));
    }

    #[test]
    fn unknown_errno_is_numbered() {
        assert_eq!(errno_name(4000), "errno 4000");
        assert_eq!(errno_name(22), "EINVAL");
    }
}
