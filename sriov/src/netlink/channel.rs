//! The one netlink socket layer under every family the project speaks
//! (rtnetlink here, RDMA netlink in the `rdma` crate): a blocking socket
//! connected to the kernel, its sequence numbers, and the request loop that
//! collects replies up to the kernel's ACK or `NLMSG_DONE`.
//!
//! A family brings only its bytes: an encoder for the request and a decoder
//! that sorts each reply message into a [`Body`]. Splitting a datagram into
//! messages and reading the kernel's extended-ack text are the same for
//! every family and live here too.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::NetlinkError;

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLM_F_CAPPED` (include/uapi/linux/netlink.h): the error echoes only the
/// request's header, not its payload.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ack attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's human-readable error string.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A netlink protocol as the socket layer opens it and errors name it.
///
/// Every family shares one error type ([`NetlinkError`]); the family is
/// what tells a log reader which socket failed ("the RDMA netlink socket")
/// and what to do when the kernel lacks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetlinkFamily {
    /// `NETLINK_*`, the socket's protocol number.
    pub protocol: isize,
    /// The name in errors: "rtnetlink", "RDMA netlink".
    pub name: &'static str,
    /// Told to the operator when the kernel does not know the protocol
    /// (`EPROTONOSUPPORT`), e.g. which module is missing.
    pub unsupported_hint: Option<&'static str>,
}

impl NetlinkFamily {
    /// `NETLINK_ROUTE`: links, addresses, routes, VF settings.
    pub const ROUTE: NetlinkFamily = NetlinkFamily {
        protocol: NETLINK_ROUTE,
        name: "rtnetlink",
        unsupported_hint: None,
    };

    /// The hint to append to an OS error of this family's socket, with its
    /// leading space and parentheses, or nothing.
    pub(crate) fn hint_for(&self, source: &io::Error) -> String {
        match self.unsupported_hint {
            Some(hint) if source.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
                format!(" ({hint})")
            }
            _ => String::new(),
        }
    }
}

/// What one reply message means to the request loop, whatever the family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<T> {
    /// `NLMSG_ERROR`: `errno` 0 is the ACK, else the kernel's negative errno.
    Error {
        /// As the kernel sent it: 0 or a negative errno.
        errno: i32,
        /// The extended-ack text, if any.
        message: Option<String>,
    },
    /// `NLMSG_DONE`, ending a dump, with the dump's own error (0: none).
    Done(i32),
    /// `NLMSG_NOOP`: nothing.
    Noop,
    /// `NLMSG_OVERRUN`: data was lost.
    Overrun,
    /// A message of the family itself (a link, an RDMA device, ...).
    Reply(T),
    /// Something the family does not expect in a reply; the text shows it.
    Unexpected(String),
}

/// One decoded reply message and the sequence number it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<T> {
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Its content.
    pub body: Body<T>,
}

/// A connected netlink socket of one family in the network namespace of the
/// thread that opened it, and the sequence number of its last request.
///
/// Synchronous on purpose: callers send a handful of requests per kubelet or
/// runtime call, and a blocking socket keeps the order of operations and
/// their rollback obvious.
pub struct Channel {
    socket: Socket,
    family: NetlinkFamily,
    seq: u32,
}

impl Channel {
    /// Opens a socket of `family`, bound and connected to the kernel, asking
    /// for extended acks (the kernel's error text) where the kernel supports
    /// them (>= 4.12; failing that is not fatal). `op` names the attempt in
    /// errors.
    pub fn open(family: NetlinkFamily, op: &str) -> Result<Self, NetlinkError> {
        let io_error = |action, source| NetlinkError::Io {
            op: op.to_string(),
            family,
            action,
            source,
        };
        let mut socket = Socket::new(family.protocol).map_err(|e| io_error("creating", e))?;
        socket.bind_auto().map_err(|e| io_error("binding", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_error("connecting", e))?;
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Channel {
            socket,
            family,
            seq: 0,
        })
    }

    /// Sends the request `encode` builds for the next sequence number and
    /// returns the replies before the kernel's ACK or `NLMSG_DONE`.
    ///
    /// `decode` splits each received datagram into [`Message`]s; messages
    /// answering another sequence number (late answers to an earlier,
    /// abandoned request) are skipped. A refusal becomes
    /// [`NetlinkError::Kernel`] with the positive errno.
    pub fn request<T>(
        &mut self,
        op: &str,
        encode: impl FnOnce(u32) -> Vec<u8>,
        decode: impl Fn(&[u8]) -> Result<Vec<Message<T>>, String>,
    ) -> Result<Vec<T>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let family = self.family;
        let io_error = |action, source| NetlinkError::Io {
            op: op.to_string(),
            family,
            action,
            source,
        };
        let protocol_error = |detail| NetlinkError::Protocol {
            op: op.to_string(),
            detail,
        };
        self.socket
            .send(&encode(seq), 0)
            .map_err(|e| io_error("sending on", e))?;

        let mut replies = Vec::new();
        loop {
            let datagram = recv_whole(&self.socket).map_err(|e| io_error("receiving from", e))?;
            for message in decode(&datagram).map_err(protocol_error)? {
                if message.seq != seq {
                    continue; // a late answer to an earlier, abandoned request
                }
                match message.body {
                    Body::Error { errno: 0, .. } => return Ok(replies),
                    Body::Error { errno, message } => {
                        return Err(NetlinkError::Kernel {
                            op: op.to_string(),
                            errno: errno.saturating_abs(),
                            message,
                        });
                    }
                    // A dump (NLM_F_DUMP) ends with DONE, which carries the
                    // dump's own error, if any, instead of an ACK.
                    Body::Done(0) => return Ok(replies),
                    Body::Done(code) => {
                        return Err(NetlinkError::Kernel {
                            op: op.to_string(),
                            errno: code.saturating_abs(),
                            message: None,
                        });
                    }
                    Body::Reply(reply) => replies.push(reply),
                    Body::Noop => {}
                    Body::Overrun => {
                        return Err(protocol_error(
                            "the kernel reported a buffer overrun".into(),
                        ));
                    }
                    Body::Unexpected(what) => {
                        return Err(protocol_error(format!("unexpected message {what}")));
                    }
                }
            }
        }
    }
}

/// Receives one whole datagram. Peeks with `MSG_TRUNC` for its size first:
/// a GETLINK reply of a PF with many VFs is larger than any fixed buffer.
pub(crate) fn recv_whole(socket: &Socket) -> io::Result<Vec<u8>> {
    let mut probe: Vec<u8> = Vec::with_capacity(64);
    let size = socket.recv(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC)?;
    let mut buf: Vec<u8> = Vec::with_capacity(size.max(64));
    let got = socket.recv(&mut buf, 0)?;
    buf.truncate(got);
    Ok(buf)
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Splits a datagram into its netlink messages, each with its header,
/// checking that every length fits.
pub fn split_datagram(buf: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(format!(
                "message length {len} does not fit the {} bytes left",
                rest.len()
            ));
        }
        out.push(&rest[..len]);
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// The kernel's extended-ack text of an `NLMSG_ERROR` whose header carries
/// `flags`, from the bytes after its errno (the echoed request, then the
/// extended-ack attributes), if it carries one.
pub fn ext_ack_message(flags: u16, after_errno: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = after_errno.get(0..4)?;
        align4(u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize)
    };
    let mut tlvs = after_errno.get(skip..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get(align4(len)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` payload after the errno: the echoed request header
    /// (uncapped: the whole request of `request_len` bytes), then one
    /// `NLMSGERR_ATTR_MSG`.
    fn after_errno(request_len: usize, text: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; request_len];
        buf[0..4].copy_from_slice(&(request_len as u32).to_ne_bytes());
        buf.resize(align4(request_len), 0);
        buf.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        buf.extend_from_slice(text);
        buf.resize(align4(buf.len()), 0);
        buf
    }

    #[test]
    fn ext_ack_text_follows_a_capped_or_a_whole_echoed_request() {
        let capped = after_errno(NLMSG_HDRLEN, b"no VFs\0");
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &capped).as_deref(),
            Some("no VFs")
        );
        let whole = after_errno(28, b"bad attribute\0");
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS, &whole).as_deref(),
            Some("bad attribute")
        );
        assert_eq!(ext_ack_message(0, &whole), None, "no NLM_F_ACK_TLVS");
    }

    #[test]
    fn a_datagram_splits_at_aligned_message_lengths() {
        let mut buf = vec![0u8; 20];
        buf[0..4].copy_from_slice(&18u32.to_ne_bytes()); // 2 bytes of padding
        let mut second = vec![0u8; 16];
        second[0..4].copy_from_slice(&16u32.to_ne_bytes());
        buf.extend_from_slice(&second);
        let parts = split_datagram(&buf).unwrap();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [18, 16]);
        let short = [64u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            split_datagram(&short).unwrap_err(),
            "message length 64 does not fit the 16 bytes left"
        );
    }

    #[test]
    fn a_family_hint_shows_only_for_a_missing_protocol() {
        let family = NetlinkFamily {
            protocol: 20,
            name: "RDMA netlink",
            unsupported_hint: Some("load it"),
        };
        let missing = io::Error::from_raw_os_error(libc::EPROTONOSUPPORT);
        assert_eq!(family.hint_for(&missing), " (load it)");
        assert_eq!(
            family.hint_for(&io::Error::from_raw_os_error(libc::EPERM)),
            ""
        );
        assert_eq!(NetlinkFamily::ROUTE.hint_for(&missing), "");
    }
}
