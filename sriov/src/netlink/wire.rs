//! Encoding requests and decoding reply datagrams: pure byte work, shared by
//! the real socket and the tests.

use netlink_packet_core::{
    ErrorMessage, NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;

/// `NLM_F_CAPPED` (include/uapi/linux/netlink.h): the error echoes only the
/// request's header, not its payload.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ack attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's human-readable error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;

/// Serialises one request with `NLM_F_REQUEST | NLM_F_ACK | extra_flags`.
pub fn encode_request(request: RouteNetlinkMessage, extra_flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// Splits a datagram into its netlink messages and decodes each.
pub fn decode_messages(buf: &[u8]) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, String> {
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
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
            .map_err(|e| e.to_string())?;
        out.push(msg);
        let aligned = (len + 3) & !3;
        rest = rest.get(aligned..).unwrap_or_default();
    }
    Ok(out)
}

/// The kernel's extended-ack text of an `NLMSG_ERROR`, if it carries one.
pub(crate) fn ext_ack_message(outer_flags: u16, err: &ErrorMessage) -> Option<String> {
    if outer_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = &err.header;
    let skip = if outer_flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = echoed.get(0..4)?;
        u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize
    };
    let mut tlvs = echoed.get(skip..)?;
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
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkMessage;

    #[test]
    fn request_header_carries_request_ack_and_sequence() {
        let bytes = encode_request(RouteNetlinkMessage::GetLink(LinkMessage::default()), 0, 42);
        // nlmsghdr: len 32 (16 header + 16 ifinfomsg), type RTM_GETLINK = 18,
        // flags NLM_F_REQUEST(1) | NLM_F_ACK(4) = 5, seq 42, port 0.
        assert_eq!(
            &bytes[..16],
            &[32, 0, 0, 0, 18, 0, 5, 0, 42, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn decodes_an_error_with_extended_ack_text() {
        // NLMSG_ERROR (type 2) with flags NLM_F_CAPPED | NLM_F_ACK_TLVS, errno
        // -95, the echoed 16-byte request header, then NLMSGERR_ATTR_MSG.
        let text = b"no VFs\0";
        let tlv_len = 4 + text.len();
        let total = 16 + 4 + 16 + ((tlv_len + 3) & !3);
        let mut buf = Vec::new();
        buf.extend_from_slice(&(total as u32).to_ne_bytes());
        buf.extend_from_slice(&2u16.to_ne_bytes());
        buf.extend_from_slice(&0x300u16.to_ne_bytes());
        buf.extend_from_slice(&7u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&(-95i32).to_ne_bytes());
        buf.extend_from_slice(&[36, 0, 0, 0, 19, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(&(tlv_len as u16).to_ne_bytes());
        buf.extend_from_slice(&1u16.to_ne_bytes());
        buf.extend_from_slice(text);
        buf.resize(total, 0);

        let msgs = decode_messages(&buf).unwrap();
        assert_eq!(msgs.len(), 1);
        let NetlinkPayload::Error(err) = &msgs[0].payload else {
            panic!("expected an error message, got {:?}", msgs[0].payload);
        };
        assert_eq!(err.raw_code(), -95);
        assert_eq!(
            ext_ack_message(msgs[0].header.flags, err).as_deref(),
            Some("no VFs")
        );
    }

    #[test]
    fn truncated_datagram_is_an_error() {
        let buf = [64u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_messages(&buf).unwrap_err().contains("does not fit"));
    }
}
