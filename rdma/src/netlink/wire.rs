//! The RDMA netlink wire format, encoded and decoded by hand: pure byte
//! work shared by the real socket and the tests.
//!
//! An RDMA netlink message is a `struct nlmsghdr` whose type packs the
//! client and the command (`RDMA_NL_GET_TYPE(client, op)`), followed
//! directly by attributes (no family header). Integers are in host byte
//! order, as everywhere in netlink.
//!
//! Constants, checked against `include/uapi/rdma/rdma_netlink.h` and
//! `include/uapi/linux/netlink.h` (compiled against linux-libc-dev 6.1's
//! `/usr/include/rdma/rdma_netlink.h`, and the attribute types against
//! the `nldev_policy` table of `drivers/infiniband/core/nldev.c`):
//! `NETLINK_RDMA` = 20, `RDMA_NL_NLDEV` = 5, `RDMA_NL_GET_TYPE(client, op)`
//! = `(client << 10) + op`, `RDMA_NLDEV_CMD_GET` = 1, `RDMA_NLDEV_CMD_SET`
//! = 2, `RDMA_NLDEV_CMD_SYS_GET` = 6, `RDMA_NLDEV_ATTR_DEV_INDEX` = 1
//! (u32), `RDMA_NLDEV_ATTR_DEV_NAME` = 2 (NUL-terminated string),
//! `RDMA_NLDEV_SYS_ATTR_NETNS_MODE` = 66 (u8), `RDMA_NLDEV_NET_NS_FD` = 68
//! (u32).

use sriov::netlink::NetlinkFamily;
use sriov::netlink::channel::{self, NLMSG_HDRLEN, ext_ack_message, split_datagram};

/// `NETLINK_RDMA` (include/uapi/linux/netlink.h): 20.
pub const NETLINK_RDMA: isize = 20;
/// `NETLINK_RDMA` as the shared netlink socket layer opens it and names it
/// in errors. Without an RDMA core (`ib_core`) the kernel refuses the
/// socket with `EPROTONOSUPPORT`, the usual case on a node without RDMA.
pub const FAMILY: NetlinkFamily = NetlinkFamily {
    protocol: NETLINK_RDMA,
    name: "RDMA netlink",
    unsupported_hint: Some("the kernel has no RDMA subsystem: is ib_core loaded?"),
};
/// `RDMA_NL_NLDEV`, the "RDMA device interface" netlink client: 5.
pub const RDMA_NL_NLDEV: u16 = 5;
/// `RDMA_NLDEV_CMD_GET`: one device by index, or all of them as a dump: 1.
pub const RDMA_NLDEV_CMD_GET: u16 = 1;
/// `RDMA_NLDEV_CMD_SET`: rename, move to a netns, …: 2.
pub const RDMA_NLDEV_CMD_SET: u16 = 2;
/// `RDMA_NLDEV_CMD_SYS_GET`: subsystem-wide settings: 6.
pub const RDMA_NLDEV_CMD_SYS_GET: u16 = 6;
/// `RDMA_NLDEV_ATTR_DEV_INDEX` (u32): 1.
pub const RDMA_NLDEV_ATTR_DEV_INDEX: u16 = 1;
/// `RDMA_NLDEV_ATTR_DEV_NAME` (NUL-terminated string): 2.
pub const RDMA_NLDEV_ATTR_DEV_NAME: u16 = 2;
/// `RDMA_NLDEV_SYS_ATTR_NETNS_MODE` (u8; 1 = shared, 0 = exclusive): 66.
pub const RDMA_NLDEV_SYS_ATTR_NETNS_MODE: u16 = 66;
/// `RDMA_NLDEV_NET_NS_FD` (u32, a netns file descriptor): 68.
pub const RDMA_NLDEV_NET_NS_FD: u16 = 68;

/// `NLM_F_REQUEST` (include/uapi/linux/netlink.h).
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` = `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// `NLMSG_NOOP`, `NLMSG_ERROR`, `NLMSG_DONE`, `NLMSG_OVERRUN`.
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// `sizeof(struct nlattr)`.
const NLA_HDRLEN: usize = 4;
/// `NLA_TYPE_MASK`: the type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, command)`: the `nlmsg_type` of an
/// nldev request and of its replies.
pub const fn nldev_type(command: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + command
}

/// An attribute of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAttribute {
    /// A u32 attribute, e.g. the device index or the netns fd.
    U32(u16, u32),
    /// A string, sent NUL-terminated as `NLA_NUL_STRING` wants.
    String(u16, String),
}

/// One nldev request: a command, whether it is a dump, and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NldevRequest {
    /// `RDMA_NLDEV_CMD_*`.
    pub command: u16,
    /// Ask for every object (`NLM_F_DUMP`) rather than one.
    pub dump: bool,
    /// The attributes, in order.
    pub attributes: Vec<RequestAttribute>,
}

/// One reply message: its type and its top-level attributes, undecoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NldevReply {
    /// The `nlmsg_type` (`nldev_type(command)`).
    pub message_type: u16,
    /// `(type without flags, payload)` in the order the kernel sent them.
    pub attributes: Vec<(u16, Vec<u8>)>,
}

impl NldevReply {
    fn payload(&self, kind: u16) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.as_slice())
    }

    /// A u32 attribute, if present and four bytes long.
    pub fn u32(&self, kind: u16) -> Option<u32> {
        let p = self.payload(kind)?;
        Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
    }

    /// A u8 attribute, if present.
    pub fn u8(&self, kind: u16) -> Option<u8> {
        self.payload(kind)?.first().copied()
    }

    /// A string attribute without its trailing NUL, if present and UTF-8.
    pub fn string(&self, kind: u16) -> Option<&str> {
        let p = self.payload(kind)?;
        let text = p.split(|b| *b == 0).next().unwrap_or_default();
        std::str::from_utf8(text).ok()
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn put_attribute(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = NLA_HDRLEN + payload.len();
    // Attribute payloads here are at most a device name (< 64 bytes).
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// Serialises `request` with `NLM_F_REQUEST | NLM_F_ACK` (and
/// `NLM_F_DUMP` for a dump) and sequence number `seq`; port id 0 lets the
/// kernel fill in ours.
pub fn encode_request(request: &NldevRequest, seq: u32) -> Vec<u8> {
    let mut flags = NLM_F_REQUEST | NLM_F_ACK;
    if request.dump {
        flags |= NLM_F_DUMP;
    }
    let mut buf = vec![0; NLMSG_HDRLEN];
    for a in &request.attributes {
        match a {
            RequestAttribute::U32(kind, value) => {
                put_attribute(&mut buf, *kind, &value.to_ne_bytes())
            }
            RequestAttribute::String(kind, text) => {
                let mut bytes = text.as_bytes().to_vec();
                bytes.push(0);
                put_attribute(&mut buf, *kind, &bytes);
            }
        }
    }
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..6].copy_from_slice(&nldev_type(request.command).to_ne_bytes());
    buf[6..8].copy_from_slice(&flags.to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf
}

/// What one message of a reply datagram says: the shared socket layer's
/// [`channel::Body`] with nldev replies.
pub type Body = channel::Body<NldevReply>;

/// One decoded message and the sequence number it answers.
pub type Message = channel::Message<NldevReply>;

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse_attributes(mut rest: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while rest.len() >= NLA_HDRLEN {
        let len = read_u16(rest, 0).unwrap_or_default() as usize;
        let kind = read_u16(rest, 2).unwrap_or_default() & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return Err(format!(
                "attribute {kind} of length {len} does not fit the {} bytes left",
                rest.len()
            ));
        }
        out.push((kind, rest[NLA_HDRLEN..len].to_vec()));
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// Splits a datagram into its netlink messages and decodes each.
pub fn decode_messages(buf: &[u8]) -> Result<Vec<Message>, String> {
    let mut out = Vec::new();
    for message in split_datagram(buf)? {
        let kind = read_u16(message, 4).unwrap_or_default();
        let flags = read_u16(message, 6).unwrap_or_default();
        let seq = read_u32(message, 8).unwrap_or_default();
        let payload = message.get(NLMSG_HDRLEN..).unwrap_or_default();
        let body = match kind {
            NLMSG_ERROR => {
                let errno =
                    read_u32(payload, 0).ok_or("an error message without its errno")? as i32;
                Body::Error {
                    errno,
                    message: ext_ack_message(flags, payload.get(4..).unwrap_or_default()),
                }
            }
            // The kernel always sends the dump's errno; be lenient if not.
            NLMSG_DONE => Body::Done(read_u32(payload, 0).unwrap_or_default() as i32),
            NLMSG_NOOP => Body::Noop,
            NLMSG_OVERRUN => Body::Overrun,
            _ => Body::Reply(NldevReply {
                message_type: kind,
                attributes: parse_attributes(payload)?,
            }),
        };
        out.push(Message { seq, body });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_kernel_headers() {
        // RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op) = (5 << 10) + op.
        assert_eq!(nldev_type(RDMA_NLDEV_CMD_GET), 5121);
        assert_eq!(nldev_type(RDMA_NLDEV_CMD_SET), 5122);
        assert_eq!(nldev_type(RDMA_NLDEV_CMD_SYS_GET), 5126);
        assert_eq!(NETLINK_RDMA, netlink_sys::protocols::NETLINK_RDMA);
    }

    /// A reply as the kernel would build it: header, then attributes.
    pub(crate) fn reply_bytes(kind: u16, flags: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut buf = vec![0; NLMSG_HDRLEN];
        for (k, p) in attrs {
            put_attribute(&mut buf, *k, p);
        }
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        buf
    }

    #[test]
    fn decodes_a_dump_part_and_its_done() {
        let mut buf = reply_bytes(
            nldev_type(RDMA_NLDEV_CMD_GET),
            0x2, // NLM_F_MULTI
            9,
            &[
                (RDMA_NLDEV_ATTR_DEV_INDEX, &3u32.to_ne_bytes()),
                (RDMA_NLDEV_ATTR_DEV_NAME, b"mlx5_3\0"),
            ],
        );
        buf.extend(reply_bytes(NLMSG_DONE, 0x2, 9, &[]));
        buf.extend_from_slice(&0i32.to_ne_bytes());
        let len = (NLMSG_HDRLEN + 4) as u32;
        let done_at = buf.len() - 20;
        buf[done_at..done_at + 4].copy_from_slice(&len.to_ne_bytes());

        let msgs = decode_messages(&buf).unwrap();
        assert_eq!(msgs.len(), 2);
        let Body::Reply(reply) = &msgs[0].body else {
            panic!("expected an nldev reply, got {:?}", msgs[0].body);
        };
        assert_eq!(reply.u32(RDMA_NLDEV_ATTR_DEV_INDEX), Some(3));
        assert_eq!(reply.string(RDMA_NLDEV_ATTR_DEV_NAME), Some("mlx5_3"));
        assert_eq!(
            msgs[1],
            Message {
                seq: 9,
                body: Body::Done(0)
            }
        );
    }

    /// `NLMSGERR_ATTR_MSG`: the kernel's error text in an extended ack.
    const NLMSGERR_ATTR_MSG: u16 = 1;

    #[test]
    fn decodes_an_error_with_extended_ack_text() {
        // NLMSG_ERROR with NLM_F_CAPPED | NLM_F_ACK_TLVS: errno -17, the
        // echoed 16-byte request header, then NLMSGERR_ATTR_MSG.
        let mut payload = (-17i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[32, 0, 0, 0, 2, 0x14, 5, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        put_attribute(&mut payload, NLMSGERR_ATTR_MSG, b"name exists\0");
        let mut buf = reply_bytes(NLMSG_ERROR, 0x300, 4, &[]);
        buf.extend_from_slice(&payload);
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());

        assert_eq!(
            decode_messages(&buf).unwrap(),
            [Message {
                seq: 4,
                body: Body::Error {
                    errno: -17,
                    message: Some("name exists".into())
                }
            }]
        );
    }

    #[test]
    fn truncated_datagrams_and_attributes_are_errors() {
        let buf = [64u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_messages(&buf).unwrap_err().contains("does not fit"));
        let mut bad = reply_bytes(nldev_type(RDMA_NLDEV_CMD_GET), 0, 1, &[]);
        bad.extend_from_slice(&[40, 0, 1, 0]);
        let len = bad.len() as u32;
        bad[0..4].copy_from_slice(&len.to_ne_bytes());
        assert!(
            decode_messages(&bad)
                .unwrap_err()
                .contains("attribute 1 of length 40")
        );
    }
}
