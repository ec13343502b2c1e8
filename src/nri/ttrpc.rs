//! ttrpc, the RPC protocol NRI runs over each mux conn: a 10-byte header
//! (u32 BE length, u32 BE stream id, u8 type, u8 flags) then a protobuf
//! `ttrpc.Request` or `ttrpc.Response`. Only unary calls are supported,
//! which is all NRI uses (see shared/protocols/nri.md items 6-10).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message as _;
use tokio::sync::oneshot;

use super::mux::{ConnReader, ConnWriter, MuxConn, MuxError};

/// Bytes of the message header.
pub const HEADER_LEN: usize = 10;
/// Largest message body either side accepts (ttrpc's messageLengthMax).
pub const MAX_MESSAGE_LEN: usize = 4 << 20;

/// Kind of a ttrpc message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Body is a `ttrpc.Request`.
    Request,
    /// Body is a `ttrpc.Response`.
    Response,
    /// Stream data; never sent by unary NRI calls.
    Data,
    /// A type this implementation does not know.
    Other(u8),
}

impl MessageType {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Request => 1,
            Self::Response => 2,
            Self::Data => 3,
            Self::Other(v) => v,
        }
    }

    /// Parses the wire value.
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Data,
            other => Self::Other(other),
        }
    }
}

/// Header of one ttrpc message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Body length, header excluded.
    pub length: u32,
    /// Client streams are odd: 1, 3, 5, ...
    pub stream_id: u32,
    /// What the body is.
    pub message_type: MessageType,
    /// Stream flags; 0 for unary calls.
    pub flags: u8,
}

impl MessageHeader {
    /// Wire form.
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&self.length.to_be_bytes());
        out[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        out[8] = self.message_type.to_u8();
        out[9] = self.flags;
        out
    }

    /// Parses the wire form.
    pub fn decode(raw: [u8; HEADER_LEN]) -> Self {
        let [l0, l1, l2, l3, s0, s1, s2, s3, t, flags] = raw;
        Self {
            length: u32::from_be_bytes([l0, l1, l2, l3]),
            stream_id: u32::from_be_bytes([s0, s1, s2, s3]),
            message_type: MessageType::from_u8(t),
            flags,
        }
    }
}

/// One complete ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtrpcMessage {
    /// Its header (length matches the body).
    pub header: MessageHeader,
    /// Protobuf body.
    pub body: Bytes,
}

/// gRPC status codes, which ttrpc reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Maps a wire code; unknown numbers become [`Code::Unknown`] as in gRPC.
    pub fn from_i32(v: i32) -> Self {
        const ALL: [Code; 17] = [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        usize::try_from(v)
            .ok()
            .and_then(|i| ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }
}

/// A non-OK outcome of a call, sent to or received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// What kind of failure.
    pub code: Code,
    /// Human-readable reason; the runtime logs it.
    pub message: String,
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ({}): {}",
            self.code, self.code as i32, self.message
        )
    }
}

/// Why a ttrpc call or connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TtrpcError {
    /// The peer answered with a non-OK status.
    #[error("ttrpc call failed: {0}")]
    Status(Status),
    /// The underlying mux conn failed or closed.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// The peer broke the protocol (bad header, undecodable body, ...).
    #[error("ttrpc protocol error: {0}")]
    Protocol(String),
    /// Our own request body exceeds [`MAX_MESSAGE_LEN`].
    #[error("ttrpc request of {0} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge(usize),
    /// No answer within the caller's timeout.
    #[error("ttrpc call {service}/{method} timed out after {timeout:?}")]
    Timeout {
        /// Service called.
        service: String,
        /// Method called.
        method: String,
        /// The timeout that passed.
        timeout: Duration,
    },
}

/// Frames a message: header then body.
pub fn encode_message(
    stream_id: u32,
    message_type: MessageType,
    flags: u8,
    body: &[u8],
) -> Result<Vec<u8>, TtrpcError> {
    if body.len() > MAX_MESSAGE_LEN {
        return Err(TtrpcError::TooLarge(body.len()));
    }
    let header = MessageHeader {
        // Bounded by MAX_MESSAGE_LEN above.
        length: body.len() as u32,
        stream_id,
        message_type,
        flags,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    Ok(out)
}

/// A unary request message.
pub fn encode_request(
    stream_id: u32,
    service: &str,
    method: &str,
    payload: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<u8>, TtrpcError> {
    let request = proto::ttrpc::Request {
        service: service.to_owned(),
        method: method.to_owned(),
        payload: payload.to_vec(),
        timeout_nano: timeout.map_or(0, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)),
        metadata: Vec::new(),
    };
    encode_message(stream_id, MessageType::Request, 0, &request.encode_to_vec())
}

/// A response message. Like the Go server, an OK response still carries an
/// (empty) status, and an answer too large to send becomes a
/// RESOURCE_EXHAUSTED status.
pub fn encode_response(stream_id: u32, result: Result<&[u8], &Status>) -> Vec<u8> {
    fn build(result: Result<&[u8], &Status>) -> proto::ttrpc::Response {
        match result {
            Ok(payload) => proto::ttrpc::Response {
                status: Some(proto::ttrpc::Status::default()),
                payload: payload.to_vec(),
            },
            Err(status) => proto::ttrpc::Response {
                status: Some(proto::ttrpc::Status {
                    code: status.code as i32,
                    message: status.message.clone(),
                    details: Vec::new(),
                }),
                payload: Vec::new(),
            },
        }
    }
    let body = build(result).encode_to_vec();
    encode_message(stream_id, MessageType::Response, 0, &body).unwrap_or_else(|err| {
        let status = Status::new(Code::ResourceExhausted, err.to_string());
        let body = build(Err(&status)).encode_to_vec();
        let mut out = MessageHeader {
            length: body.len() as u32,
            stream_id,
            message_type: MessageType::Response,
            flags: 0,
        }
        .encode()
        .to_vec();
        out.extend_from_slice(&body);
        out
    })
}

/// Decodes a response body into the call's outcome: the payload on OK, the
/// status otherwise.
pub fn decode_response(body: &[u8]) -> Result<Bytes, TtrpcError> {
    let response = proto::ttrpc::Response::decode(body)
        .map_err(|err| TtrpcError::Protocol(format!("undecodable ttrpc.Response: {err}")))?;
    match response.status {
        Some(status) if status.code != 0 => Err(TtrpcError::Status(Status {
            code: Code::from_i32(status.code),
            message: status.message,
        })),
        _ => Ok(Bytes::from(response.payload)),
    }
}

/// Reassembles ttrpc messages from mux frames, whose boundaries need not
/// match message boundaries.
#[derive(Debug, Default)]
pub struct MessageDecoder {
    buf: BytesMut,
}

impl MessageDecoder {
    /// Appends bytes received on the conn.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if one has fully arrived.
    pub fn next_message(&mut self) -> Result<Option<TtrpcMessage>, TtrpcError> {
        let Some(raw) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut header_bytes = [0u8; HEADER_LEN];
        header_bytes.copy_from_slice(raw);
        let header = MessageHeader::decode(header_bytes);
        let length = header.length as usize;
        if length > MAX_MESSAGE_LEN {
            return Err(TtrpcError::Protocol(format!(
                "message on stream {} announces {length} bytes, more than {MAX_MESSAGE_LEN}",
                header.stream_id
            )));
        }
        if self.buf.len() < HEADER_LEN + length {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let body = self.buf.split_to(length).freeze();
        Ok(Some(TtrpcMessage { header, body }))
    }
}

/// Reads whole messages from a conn.
struct MessageReader {
    conn: ConnReader,
    decoder: MessageDecoder,
}

impl MessageReader {
    async fn next(&mut self) -> Result<TtrpcMessage, TtrpcError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(message);
            }
            let frame = self.conn.read_frame().await?;
            self.decoder.push(&frame);
        }
    }
}

/// Serves one ttrpc service on a conn: every request is handed to the
/// handler in its own task, so a slow call does not hold up the others.
pub struct TtrpcServer<H> {
    service: String,
    handler: Arc<H>,
}

impl<H, F> TtrpcServer<H>
where
    H: Fn(String, Bytes) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Bytes, Status>> + Send + 'static,
{
    /// A server for `service` (e.g. `nri.pkg.api.v1alpha1.Plugin`); calls to
    /// other services are answered UNIMPLEMENTED without reaching the
    /// handler. The handler gets the bare method name and the request
    /// payload; it answers UNIMPLEMENTED for methods it does not know (the
    /// NRI runtime relies on exactly that code to fall back to StateChange).
    pub fn new(service: impl Into<String>, handler: H) -> Self {
        Self {
            service: service.into(),
            handler: Arc::new(handler),
        }
    }

    /// Answers requests until the conn closes; returns the reason it ended.
    pub async fn serve(self, conn: MuxConn) -> TtrpcError {
        let (reader, writer) = conn.split();
        let mut reader = MessageReader {
            conn: reader,
            decoder: MessageDecoder::default(),
        };
        let mut last_stream_id = 0u32;
        loop {
            let message = match reader.next().await {
                Ok(message) => message,
                Err(err) => return err,
            };
            let stream_id = message.header.stream_id;
            if message.header.message_type != MessageType::Request {
                tracing::debug!(stream_id, kind = ?message.header.message_type, "ttrpc server ignores a non-request message");
                continue;
            }
            let rejected = if stream_id % 2 != 1 {
                Some(format!(
                    "stream id {stream_id} is not a client stream id (odd)"
                ))
            } else if stream_id <= last_stream_id {
                Some(format!(
                    "stream id {stream_id} does not increase past {last_stream_id}"
                ))
            } else {
                None
            };
            if let Some(reason) = rejected {
                let status = Status::new(Code::InvalidArgument, reason);
                if let Err(err) = writer
                    .write(&encode_response(stream_id, Err(&status)))
                    .await
                {
                    return err.into();
                }
                continue;
            }
            last_stream_id = stream_id;
            let request = match proto::ttrpc::Request::decode(message.body) {
                Ok(request) => request,
                Err(err) => {
                    let status = Status::new(
                        Code::InvalidArgument,
                        format!("undecodable ttrpc.Request: {err}"),
                    );
                    if let Err(err) = writer
                        .write(&encode_response(stream_id, Err(&status)))
                        .await
                    {
                        return err.into();
                    }
                    continue;
                }
            };
            tokio::spawn(answer(
                self.service.clone(),
                self.handler.clone(),
                writer.clone(),
                stream_id,
                request,
            ));
        }
    }
}

/// Runs one request through the handler and writes its response.
async fn answer<H, F>(
    service: String,
    handler: Arc<H>,
    writer: ConnWriter,
    stream_id: u32,
    request: proto::ttrpc::Request,
) where
    H: Fn(String, Bytes) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Bytes, Status>> + Send + 'static,
{
    let result = if request.service == service {
        // Run the handler in its own task so a panic becomes an INTERNAL
        // answer instead of a call the runtime waits on until its deadline.
        let call = handler(request.method.clone(), Bytes::from(request.payload));
        tokio::spawn(call).await.unwrap_or_else(|err| {
            Err(Status::new(
                Code::Internal,
                format!("handler for {} failed: {err}", request.method),
            ))
        })
    } else {
        Err(Status::new(
            Code::Unimplemented,
            format!("service {} is not served here", request.service),
        ))
    };
    if let Err(status) = &result {
        tracing::debug!(service = %request.service, method = %request.method, %status, "ttrpc call answered with an error");
    }
    let response = encode_response(stream_id, result.as_deref());
    if let Err(err) = writer.write(&response).await {
        tracing::warn!(service = %request.service, method = %request.method, %err, "could not send ttrpc response");
    }
}

type Pending = Arc<Mutex<PendingCalls>>;

/// Calls waiting for their response, by stream id.
#[derive(Default)]
struct PendingCalls {
    calls: HashMap<u32, oneshot::Sender<Result<Bytes, TtrpcError>>>,
    /// Set once the conn is gone: new calls fail with it at once.
    closed: Option<TtrpcError>,
}

fn lock_pending(pending: &Pending) -> std::sync::MutexGuard<'_, PendingCalls> {
    // Only channel senders live here; a poisoned lock is still consistent.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Calls methods of the service the peer serves on a conn. Calls may run
/// concurrently; each gets the next odd stream id.
pub struct TtrpcClient {
    writer: ConnWriter,
    /// Next stream id; locked across the write so ids reach the peer in
    /// increasing order, as the server requires.
    next_stream_id: tokio::sync::Mutex<u32>,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
}

impl TtrpcClient {
    /// Starts reading responses on `conn` in a background task. Must run
    /// inside tokio.
    pub fn new(conn: MuxConn) -> Self {
        let (reader, writer) = conn.split();
        let pending = Pending::default();
        let reader = tokio::spawn(read_responses(
            MessageReader {
                conn: reader,
                decoder: MessageDecoder::default(),
            },
            pending.clone(),
        ));
        Self {
            writer,
            next_stream_id: tokio::sync::Mutex::new(1),
            pending,
            reader,
        }
    }

    /// Calls `service`/`method` with an encoded request message and returns
    /// the encoded response message.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
    ) -> Result<Bytes, TtrpcError> {
        self.call_inner(service, method, payload, None).await
    }

    /// Like [`TtrpcClient::call`], but gives up after `timeout`, which is
    /// also sent to the server as the call's deadline.
    pub async fn call_with_timeout(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TtrpcError> {
        match tokio::time::timeout(
            timeout,
            self.call_inner(service, method, payload, Some(timeout)),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(TtrpcError::Timeout {
                service: service.to_owned(),
                method: method.to_owned(),
                timeout,
            }),
        }
    }

    async fn call_inner(
        &self,
        service: &str,
        method: &str,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, TtrpcError> {
        let (tx, rx) = oneshot::channel();
        let stream_id = {
            let mut next = self.next_stream_id.lock().await;
            let stream_id = *next;
            let message = encode_request(stream_id, service, method, &payload, timeout)?;
            {
                let mut pending = lock_pending(&self.pending);
                if let Some(err) = &pending.closed {
                    return Err(err.clone());
                }
                pending.calls.insert(stream_id, tx);
            }
            if let Err(err) = self.writer.write(&message).await {
                lock_pending(&self.pending).calls.remove(&stream_id);
                return Err(err.into());
            }
            *next = next.wrapping_add(2);
            stream_id
        };
        let guard = ForgetOnDrop {
            pending: &self.pending,
            stream_id,
        };
        let result = rx.await.unwrap_or(Err(TtrpcError::Mux(MuxError::Closed)));
        drop(guard);
        result
    }
}

impl Drop for TtrpcClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Removes a call's pending entry if the caller stops waiting (timeout or
/// cancellation), so late responses are dropped.
struct ForgetOnDrop<'a> {
    pending: &'a Pending,
    stream_id: u32,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        lock_pending(self.pending).calls.remove(&self.stream_id);
    }
}

/// Hands each response to the call waiting for its stream id; on the end
/// of the conn, fails every waiting and future call.
async fn read_responses(mut reader: MessageReader, pending: Pending) {
    let reason = loop {
        let message = match reader.next().await {
            Ok(message) => message,
            Err(err) => break err,
        };
        if message.header.message_type != MessageType::Response {
            tracing::debug!(stream_id = message.header.stream_id, kind = ?message.header.message_type, "ttrpc client ignores a non-response message");
            continue;
        }
        let waiter = lock_pending(&pending)
            .calls
            .remove(&message.header.stream_id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(decode_response(&message.body));
            }
            None => tracing::debug!(
                stream_id = message.header.stream_id,
                "ttrpc response for no waiting call"
            ),
        }
    };
    let mut pending = lock_pending(&pending);
    for (_, tx) in pending.calls.drain() {
        let _ = tx.send(Err(reason.clone()));
    }
    pending.closed = Some(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nri::mux::Mux;
    use tokio::net::UnixStream;

    /// A server on conn 1 of a socketpair whose handler echoes the payload
    /// (method "Echo") or never answers (method "Hang").
    fn echo_server() -> (Mux, Mux) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (server_mux, client_mux) = (Mux::new(a), Mux::new(b));
        let conn = server_mux.open(1).expect("open server conn");
        server_mux.unblock();
        client_mux.unblock();
        let server = TtrpcServer::new("test.Echo", |method: String, payload: Bytes| async move {
            match method.as_str() {
                "Echo" => Ok(payload),
                "Hang" => std::future::pending().await,
                "Panic" => panic!("handler bug"),
                _ => Err(Status::new(Code::Unimplemented, method)),
            }
        });
        tokio::spawn(server.serve(conn));
        (server_mux, client_mux)
    }

    #[tokio::test]
    async fn server_refuses_even_and_reused_stream_ids() {
        let (_server_mux, client_mux) = echo_server();
        let (reader, writer) = client_mux.open(1).expect("open client conn").split();
        let mut reader = MessageReader {
            conn: reader,
            decoder: MessageDecoder::default(),
        };
        let invalid = |r: &Result<Bytes, TtrpcError>| matches!(r, Err(TtrpcError::Status(s)) if s.code == Code::InvalidArgument);
        for (stream_id, want_ok) in [(3, true), (2, false), (3, false), (1, false), (5, true)] {
            let request =
                encode_request(stream_id, "test.Echo", "Echo", b"hi", None).expect("small");
            writer.write(&request).await.expect("write");
            let reply = reader.next().await.expect("a response");
            assert_eq!(reply.header.stream_id, stream_id);
            assert_eq!(reply.header.message_type, MessageType::Response);
            let result = decode_response(&reply.body);
            if want_ok {
                assert_eq!(result.expect("echo"), &b"hi"[..], "stream {stream_id}");
            } else {
                assert!(invalid(&result), "stream {stream_id}: {result:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        let (_server_mux, client_mux) = echo_server();
        let client = TtrpcClient::new(client_mux.open(1).expect("open client conn"));
        match client.call("test.Echo", "Panic", Bytes::new()).await {
            Err(TtrpcError::Status(status)) => assert_eq!(status.code, Code::Internal),
            other => panic!("expected INTERNAL, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn client_times_out_and_later_calls_still_work() {
        let (_server_mux, client_mux) = echo_server();
        let client = TtrpcClient::new(client_mux.open(1).expect("open client conn"));
        let hung = client
            .call_with_timeout("test.Echo", "Hang", Bytes::new(), Duration::from_millis(50))
            .await;
        assert!(matches!(hung, Err(TtrpcError::Timeout { .. })), "{hung:?}");
        let echoed = client
            .call("test.Echo", "Echo", Bytes::from_static(b"after"))
            .await
            .expect("echo");
        assert_eq!(echoed, &b"after"[..]);
    }

    #[test]
    fn header_layout_is_length_stream_type_flags() {
        let header = MessageHeader {
            length: 0x0A0B,
            stream_id: 3,
            message_type: MessageType::Response,
            flags: 0,
        };
        assert_eq!(header.encode(), [0, 0, 0x0A, 0x0B, 0, 0, 0, 3, 2, 0]);
        assert_eq!(MessageHeader::decode(header.encode()), header);
    }

    #[test]
    fn request_encodes_byte_for_byte() {
        let wire = encode_request(1, "s.S", "M", &[0xAA], Some(Duration::from_nanos(5)))
            .expect("small request");
        // Request{service=1 "s.S", method=2 "M", payload=3 [AA], timeout_nano=4 5}
        let body = [
            0x0A, 3, b's', b'.', b'S', 0x12, 1, b'M', 0x1A, 1, 0xAA, 0x20, 5,
        ];
        let mut want = vec![0, 0, 0, body.len() as u8, 0, 0, 0, 1, 1, 0];
        want.extend_from_slice(&body);
        assert_eq!(wire, want);
    }

    #[test]
    fn ok_response_carries_an_empty_status_then_the_payload() {
        let wire = encode_response(5, Ok(&[0x10, 0x07]));
        // Response{status=1 {}, payload=2 [10 07]}
        assert_eq!(
            wire,
            [0, 0, 0, 6, 0, 0, 0, 5, 2, 0, 0x0A, 0, 0x12, 2, 0x10, 0x07]
        );
        assert_eq!(
            decode_response(&wire[HEADER_LEN..]).expect("ok"),
            &[0x10, 0x07][..]
        );
    }

    #[test]
    fn error_response_carries_code_and_message() {
        let status = Status::new(Code::Unimplemented, "no");
        let wire = encode_response(7, Err(&status));
        // Response{status=1 {code=1 12, message=2 "no"}}
        assert_eq!(
            wire,
            [
                0, 0, 0, 8, 0, 0, 0, 7, 2, 0, 0x0A, 6, 0x08, 12, 0x12, 2, b'n', b'o'
            ]
        );
        match decode_response(&wire[HEADER_LEN..]) {
            Err(TtrpcError::Status(got)) => assert_eq!(got, status),
            other => panic!("expected a status error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_wire_codes_map_to_unknown() {
        assert_eq!(Code::from_i32(12), Code::Unimplemented);
        assert_eq!(Code::from_i32(99), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    #[test]
    fn oversized_request_is_refused_before_sending() {
        let big = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            encode_request(1, "s", "m", &big, None),
            Err(TtrpcError::TooLarge(_))
        ));
    }

    #[test]
    fn decoder_reassembles_messages_across_arbitrary_frame_cuts() {
        let mut wire = encode_message(1, MessageType::Request, 0, b"first").expect("small");
        wire.extend(encode_message(3, MessageType::Request, 0, b"second").expect("small"));
        for cut in 0..wire.len() {
            let mut decoder = MessageDecoder::default();
            let mut got = Vec::new();
            for piece in [&wire[..cut], &wire[cut..]] {
                decoder.push(piece);
                while let Some(message) = decoder.next_message().expect("valid") {
                    got.push((message.header.stream_id, message.body));
                }
            }
            assert_eq!(
                got,
                [
                    (1, Bytes::from_static(b"first")),
                    (3, Bytes::from_static(b"second"))
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn decoder_rejects_a_length_over_the_limit() {
        let mut decoder = MessageDecoder::default();
        let header = MessageHeader {
            length: (MAX_MESSAGE_LEN + 1) as u32,
            stream_id: 1,
            message_type: MessageType::Request,
            flags: 0,
        };
        decoder.push(&header.encode());
        assert!(matches!(
            decoder.next_message(),
            Err(TtrpcError::Protocol(_))
        ));
    }
}
