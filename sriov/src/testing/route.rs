//! A scripted rtnetlink transport: records each request, answers from a
//! queue, and acknowledges everything once the queue is empty.

use std::collections::VecDeque;

use netlink_packet_route::RouteNetlinkMessage;

use crate::netlink::{NetlinkError, RouteTransport, encode_request};

/// One request as the caller sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The caller's description of the operation.
    pub op: String,
    /// The message, before serialisation.
    pub message: RouteNetlinkMessage,
    /// Flags added to `NLM_F_REQUEST | NLM_F_ACK`.
    pub extra_flags: u16,
}

impl RecordedRequest {
    /// The bytes the real socket would send, with sequence number `seq`.
    pub fn bytes(&self, seq: u32) -> Vec<u8> {
        encode_request(self.message.clone(), self.extra_flags, seq)
    }
}

/// A [`RouteTransport`] that records requests and plays back answers, so
/// callers of rtnetlink are tested without root or a kernel.
#[derive(Debug, Default)]
pub struct RecordingTransport {
    /// Every request in the order it was sent.
    pub requests: Vec<RecordedRequest>,
    answers: VecDeque<Result<Vec<RouteNetlinkMessage>, i32>>,
}

impl RecordingTransport {
    /// A transport that acknowledges every request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a successful answer carrying `replies`.
    pub fn answer(&mut self, replies: Vec<RouteNetlinkMessage>) -> &mut Self {
        self.answers.push_back(Ok(replies));
        self
    }

    /// Queues a refusal with the positive `errno`.
    pub fn refuse(&mut self, errno: i32) -> &mut Self {
        self.answers.push_back(Err(errno));
        self
    }
}

impl RouteTransport for RecordingTransport {
    fn request(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.requests.push(RecordedRequest {
            op: op.to_string(),
            message: request,
            extra_flags,
        });
        match self.answers.pop_front() {
            None => Ok(Vec::new()),
            Some(Ok(replies)) => Ok(replies),
            Some(Err(errno)) => Err(NetlinkError::Kernel {
                op: op.to_string(),
                errno,
                message: None,
            }),
        }
    }
}
