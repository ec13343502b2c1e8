//! Test doubles for this crate's kernel interface: a scripted RDMA netlink
//! transport that records each request, answers from a queue, and
//! acknowledges everything once the queue is empty.
//!
//! Built only for tests and with the `test-support` feature, so a release
//! build carries none of it.

use std::collections::VecDeque;

use sriov::netlink::NetlinkError;

use crate::netlink::wire::{NldevReply, NldevRequest, encode_request};
use crate::netlink::{RdmaNetlinkError, RdmaTransport};

/// One request as the caller sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRdmaRequest {
    /// The caller's description of the operation.
    pub op: String,
    /// The request, before serialisation.
    pub request: NldevRequest,
}

impl RecordedRdmaRequest {
    /// The bytes the real socket would send, with sequence number `seq`.
    pub fn bytes(&self, seq: u32) -> Vec<u8> {
        encode_request(&self.request, seq)
    }
}

/// An [`RdmaTransport`] that records requests and plays back answers, so
/// callers are tested without RDMA hardware.
#[derive(Debug, Default)]
pub struct RecordingRdma {
    /// Every request in the order it was sent.
    pub requests: Vec<RecordedRdmaRequest>,
    answers: VecDeque<Result<Vec<NldevReply>, i32>>,
}

impl RecordingRdma {
    /// A transport that acknowledges every request with no replies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a successful answer carrying `replies`.
    pub fn answer(&mut self, replies: Vec<NldevReply>) -> &mut Self {
        self.answers.push_back(Ok(replies));
        self
    }

    /// Queues a refusal with the positive `errno`.
    pub fn refuse(&mut self, errno: i32) -> &mut Self {
        self.answers.push_back(Err(errno));
        self
    }

    /// The recorded operations, in order.
    pub fn ops(&self) -> Vec<&str> {
        self.requests.iter().map(|r| r.op.as_str()).collect()
    }
}

impl RdmaTransport for RecordingRdma {
    fn request(
        &mut self,
        op: &str,
        request: &NldevRequest,
    ) -> Result<Vec<NldevReply>, RdmaNetlinkError> {
        self.requests.push(RecordedRdmaRequest {
            op: op.to_string(),
            request: request.clone(),
        });
        match self.answers.pop_front() {
            None => Ok(Vec::new()),
            Some(Ok(replies)) => Ok(replies),
            Some(Err(errno)) => Err(NetlinkError::Kernel {
                op: op.to_string(),
                errno,
                message: None,
            }
            .into()),
        }
    }
}
