//! Encoding requests and decoding reply datagrams: pure byte work, shared by
//! the real socket and the tests.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::channel::{Body, Message, ext_ack_message, split_datagram};

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
    split_datagram(buf)?
        .into_iter()
        .map(|bytes| {
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|e| e.to_string())
        })
        .collect()
}

/// Decodes a datagram for the request loop: each message as a
/// [`Message`] of the shared socket layer.
pub(crate) fn decode_replies(buf: &[u8]) -> Result<Vec<Message<RouteNetlinkMessage>>, String> {
    Ok(decode_messages(buf)?.into_iter().map(classify).collect())
}

fn classify(message: NetlinkMessage<RouteNetlinkMessage>) -> Message<RouteNetlinkMessage> {
    let flags = message.header.flags;
    let body = match message.payload {
        NetlinkPayload::Error(err) => Body::Error {
            errno: err.code.map_or(0, |code| code.get()),
            message: ext_ack_message(flags, &err.header),
        },
        NetlinkPayload::Done(done) => Body::Done(done.code),
        NetlinkPayload::InnerMessage(inner) => Body::Reply(inner),
        NetlinkPayload::Noop => Body::Noop,
        NetlinkPayload::Overrun(_) => Body::Overrun,
        other => Body::Unexpected(format!("{other:?}")),
    };
    Message {
        seq: message.header.sequence_number,
        body,
    }
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
            ext_ack_message(msgs[0].header.flags, &err.header).as_deref(),
            Some("no VFs")
        );
        assert_eq!(
            decode_replies(&buf).unwrap(),
            [Message {
                seq: 7,
                body: Body::Error {
                    errno: -95,
                    message: Some("no VFs".into())
                }
            }]
        );
    }

    #[test]
    fn truncated_datagram_is_an_error() {
        let buf = [64u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_messages(&buf).unwrap_err().contains("does not fit"));
    }
}
