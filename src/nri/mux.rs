//! The NRI connection multiplexer: several byte streams ("conns") over one
//! unix socket, each frame an 8-byte header (u32 BE conn id, u32 BE payload
//! length) and the payload. NRI puts two ttrpc connections on it: conn 1,
//! where the plugin serves `Plugin`, and conn 2, where the runtime serves
//! `Runtime` (see shared/protocols/nri.md items 2-5).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

/// Identifies one multiplexed connection.
pub type ConnId = u32;

/// Conn on which the plugin is the ttrpc server for `Plugin`.
pub const PLUGIN_SERVICE_CONN: ConnId = 1;
/// Conn on which the runtime is the ttrpc server for `Runtime`.
pub const RUNTIME_SERVICE_CONN: ConnId = 2;
/// Conn id 0 is reserved and never opened.
pub const RESERVED_CONN: ConnId = 0;

/// Bytes of the frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest frame (header included) we write. The Go mux hands each frame to
/// a ttrpc reader whose buffer is 4096 bytes and fails with ENOMEM on a
/// larger frame, so we never exceed that.
pub const MAX_WRITE_FRAME_LEN: usize = 4096;
/// Largest payload we accept in one frame: the Go mux's own limit, one
/// ttrpc header (10 bytes) plus ttrpc's 4 MiB message maximum.
pub const MAX_READ_PAYLOAD_LEN: usize = 10 + 4 * 1024 * 1024;

/// Header of one mux frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Conn the payload belongs to.
    pub conn: ConnId,
    /// Payload bytes that follow the header.
    pub len: u32,
}

impl FrameHeader {
    /// Wire form: conn id then length, both big-endian.
    pub fn encode(self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[..4].copy_from_slice(&self.conn.to_be_bytes());
        out[4..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Parses the wire form.
    pub fn decode(raw: [u8; FRAME_HEADER_LEN]) -> Self {
        let [c0, c1, c2, c3, l0, l1, l2, l3] = raw;
        Self {
            conn: u32::from_be_bytes([c0, c1, c2, c3]),
            len: u32::from_be_bytes([l0, l1, l2, l3]),
        }
    }
}

/// Frames `data` for `conn`, split so no frame exceeds
/// [`MAX_WRITE_FRAME_LEN`]. Empty data still yields one empty frame.
pub fn encode_frames(conn: ConnId, data: &[u8]) -> Vec<u8> {
    const MAX_PAYLOAD: usize = MAX_WRITE_FRAME_LEN - FRAME_HEADER_LEN;
    let frames = data.len().div_ceil(MAX_PAYLOAD).max(1);
    let mut out = Vec::with_capacity(data.len() + frames * FRAME_HEADER_LEN);
    let mut chunks = data.chunks(MAX_PAYLOAD);
    let first = chunks.next().unwrap_or(&[]);
    for chunk in std::iter::once(first).chain(chunks) {
        // A chunk is at most MAX_PAYLOAD (< 4096) bytes, so it fits in u32.
        let len = chunk.len() as u32;
        out.extend_from_slice(&FrameHeader { conn, len }.encode());
        out.extend_from_slice(chunk);
    }
    out
}

/// Why the mux or one of its conns failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MuxError {
    /// Conn id 0 is reserved by the protocol.
    #[error("mux conn id 0 is reserved")]
    ReservedConn,
    /// The conn is already open on this mux.
    #[error("mux conn {0} is already open")]
    AlreadyOpen(ConnId),
    /// The peer sent a frame longer than the protocol allows.
    #[error(
        "mux frame for conn {conn} has {len} bytes, more than the {MAX_READ_PAYLOAD_LEN} allowed"
    )]
    FrameTooLong {
        /// Conn the frame was for.
        conn: ConnId,
        /// Its announced length.
        len: u32,
    },
    /// Reading or writing the socket failed (the message is the OS error).
    #[error("mux socket {action}: {message}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The OS error, as text so the error can be shared by all conns.
        message: String,
    },
    /// The trunk is closed (peer hung up or [`Mux::close`] was called).
    #[error("mux connection closed")]
    Closed,
}

impl MuxError {
    fn io(action: &'static str, err: &io::Error) -> Self {
        Self::Io {
            action,
            message: err.to_string(),
        }
    }
}

type ConnTable = Arc<Mutex<HashMap<ConnId, mpsc::UnboundedSender<Bytes>>>>;

fn lock_table(
    table: &ConnTable,
) -> std::sync::MutexGuard<'_, HashMap<ConnId, mpsc::UnboundedSender<Bytes>>> {
    // The table holds only channel senders; a panic elsewhere cannot leave
    // it inconsistent, so a poisoned lock is still usable.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One socket carrying several conns. Frames for conns that are not open
/// are dropped, as the Go implementation does; so, like Go's mux with a
/// blocked read, ours starts blocked: open the conns, then [`Mux::unblock`],
/// and no frame the peer sent early is lost.
pub struct Mux {
    conns: ConnTable,
    writer: Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>,
    closed: watch::Receiver<Option<MuxError>>,
    closed_tx: Arc<watch::Sender<Option<MuxError>>>,
    reader: tokio::task::JoinHandle<()>,
    unblock: watch::Sender<bool>,
}

impl Mux {
    /// Takes over `stream`; nothing is read from it until
    /// [`Mux::unblock`]. Must run inside tokio.
    pub fn new(stream: UnixStream) -> Self {
        let (read, write) = stream.into_split();
        let conns = ConnTable::default();
        let (closed_tx, closed) = watch::channel(None);
        let closed_tx = Arc::new(closed_tx);
        let (unblock, mut unblocked) = watch::channel(false);
        let (table, reason) = (conns.clone(), closed_tx.clone());
        let reader = tokio::spawn(async move {
            // A mux dropped before it was unblocked ends its reader here.
            if unblocked.wait_for(|go| *go).await.is_ok() {
                read_frames(read, table, reason).await;
            }
        });
        Self {
            conns,
            writer: Arc::new(tokio::sync::Mutex::new(Some(write))),
            closed,
            closed_tx,
            reader,
            unblock,
        }
    }

    /// Starts reading the socket: call once the conns the peer will send on
    /// are open. Idempotent.
    pub fn unblock(&self) {
        self.unblock.send_replace(true);
    }

    /// Opens conn `id`: frames for it are queued from now on.
    pub fn open(&self, id: ConnId) -> Result<MuxConn, MuxError> {
        if id == RESERVED_CONN {
            return Err(MuxError::ReservedConn);
        }
        if let Some(err) = self.closed.borrow().clone() {
            return Err(err);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut table = lock_table(&self.conns);
            if table.contains_key(&id) {
                return Err(MuxError::AlreadyOpen(id));
            }
            table.insert(id, tx);
        }
        Ok(MuxConn {
            reader: ConnReader {
                id,
                rx,
                table: self.conns.clone(),
                closed: self.closed.clone(),
            },
            writer: ConnWriter {
                id,
                writer: self.writer.clone(),
            },
        })
    }

    /// Resolves when the trunk is gone, with the reason ([`MuxError::Closed`]
    /// when the peer hung up cleanly).
    pub async fn closed(&self) -> MuxError {
        let mut rx = self.closed.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(MuxError::Closed),
            Err(_) => MuxError::Closed,
        }
    }

    /// Stops the reader task, records the trunk as closed (so later opens
    /// fail) and ends every conn's reader.
    fn shut_reading(&self) {
        self.reader.abort();
        mark_closed(&self.closed_tx, MuxError::Closed);
        lock_table(&self.conns).clear();
    }

    /// Closes the trunk: stops reading, shuts the socket down for writing,
    /// and ends every conn.
    pub async fn close(&self) {
        self.shut_reading();
        if let Some(mut write) = self.writer.lock().await.take() {
            let _ = write.shutdown().await;
        }
    }
}

impl Drop for Mux {
    /// Dropping the mux closes the trunk like [`Mux::close`]: its conns end
    /// rather than wait forever on a socket nobody reads.
    fn drop(&mut self) {
        self.shut_reading();
        // Dropping the write half shuts the socket down for writing; if a
        // write is in flight, the half goes when its last writer does.
        if let Ok(mut write) = self.writer.try_lock() {
            write.take();
        }
    }
}

/// Records why the trunk closed; the first reason wins.
fn mark_closed(closed: &watch::Sender<Option<MuxError>>, reason: MuxError) {
    closed.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            *current = Some(reason);
        }
        first
    });
}

/// Reads frames until the socket ends, handing each payload to its conn.
async fn read_frames(
    mut read: OwnedReadHalf,
    conns: ConnTable,
    closed: Arc<watch::Sender<Option<MuxError>>>,
) {
    let reason = loop {
        let mut raw = [0u8; FRAME_HEADER_LEN];
        match read.read_exact(&mut raw).await {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break MuxError::Closed,
            Err(err) => break MuxError::io("read", &err),
        }
        let header = FrameHeader::decode(raw);
        if header.len as usize > MAX_READ_PAYLOAD_LEN {
            break MuxError::FrameTooLong {
                conn: header.conn,
                len: header.len,
            };
        }
        let mut payload = vec![0u8; header.len as usize];
        if let Err(err) = read.read_exact(&mut payload).await {
            break MuxError::io("read", &err);
        }
        let table = lock_table(&conns);
        if let Some(tx) = table.get(&header.conn) {
            // A conn whose reader is gone just loses the frame.
            let _ = tx.send(Bytes::from(payload));
        } else {
            tracing::trace!(
                conn = header.conn,
                "dropping mux frame for a conn that is not open"
            );
        }
    };
    tracing::debug!(%reason, "NRI mux trunk closed");
    mark_closed(&closed, reason);
    // Dropping the senders ends every conn's reader.
    lock_table(&conns).clear();
}

/// One open conn; split it to read and write from different tasks.
pub struct MuxConn {
    /// Receives this conn's payloads.
    pub reader: ConnReader,
    /// Sends on this conn; cloneable.
    pub writer: ConnWriter,
}

impl MuxConn {
    /// The conn's id.
    pub fn id(&self) -> ConnId {
        self.reader.id
    }

    /// Separates reading from writing.
    pub fn split(self) -> (ConnReader, ConnWriter) {
        (self.reader, self.writer)
    }
}

/// Receiving half of a conn. Frame boundaries carry no meaning: a reader
/// reassembles its own messages. Dropping it closes the conn.
pub struct ConnReader {
    id: ConnId,
    rx: mpsc::UnboundedReceiver<Bytes>,
    table: ConnTable,
    closed: watch::Receiver<Option<MuxError>>,
}

impl ConnReader {
    /// Next payload, or the reason the conn ended.
    pub async fn read_frame(&mut self) -> Result<Bytes, MuxError> {
        match self.rx.recv().await {
            Some(frame) => Ok(frame),
            None => Err(self.closed.borrow().clone().unwrap_or(MuxError::Closed)),
        }
    }
}

impl Drop for ConnReader {
    fn drop(&mut self) {
        lock_table(&self.table).remove(&self.id);
    }
}

/// Sending half of a conn; clones share the socket.
#[derive(Clone)]
pub struct ConnWriter {
    id: ConnId,
    writer: Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>,
}

impl ConnWriter {
    /// Sends `data` as one or more frames; concurrent writes on any conn of
    /// the mux never interleave inside a call.
    ///
    /// The Go mux queues at most 256 frames per conn and closes the whole
    /// trunk when its reader falls that far behind, so messages beyond about
    /// 1 MiB (256 frames of 4 KiB) are risky; NRI plugin answers are far
    /// smaller.
    pub async fn write(&self, data: &[u8]) -> Result<(), MuxError> {
        let frames = encode_frames(self.id, data);
        let mut guard = self.writer.lock().await;
        let write = guard.as_mut().ok_or(MuxError::Closed)?;
        write
            .write_all(&frames)
            .await
            .map_err(|err| MuxError::io("write", &err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_conn_then_length_big_endian() {
        let header = FrameHeader {
            conn: 2,
            len: 0x0102_0304,
        };
        assert_eq!(header.encode(), [0, 0, 0, 2, 1, 2, 3, 4]);
        assert_eq!(FrameHeader::decode(header.encode()), header);
    }

    #[test]
    fn small_message_is_one_frame() {
        assert_eq!(
            encode_frames(1, b"abc"),
            [0, 0, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c']
        );
    }

    #[test]
    fn empty_message_is_one_empty_frame() {
        assert_eq!(encode_frames(2, b""), [0, 0, 0, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn large_message_is_split_into_frames_of_at_most_4096_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let wire = encode_frames(1, &data);

        let mut rest = &wire[..];
        let mut frames = Vec::new();
        let mut joined = Vec::new();
        while !rest.is_empty() {
            let mut raw = [0u8; FRAME_HEADER_LEN];
            raw.copy_from_slice(&rest[..FRAME_HEADER_LEN]);
            let header = FrameHeader::decode(raw);
            assert_eq!(header.conn, 1);
            let end = FRAME_HEADER_LEN + header.len as usize;
            assert!(end <= MAX_WRITE_FRAME_LEN, "frame of {end} bytes");
            joined.extend_from_slice(&rest[FRAME_HEADER_LEN..end]);
            frames.push(header.len);
            rest = &rest[end..];
        }
        assert_eq!(frames, [4088, 4088, 1824]);
        assert_eq!(joined, data);
    }

    #[tokio::test]
    async fn conns_are_separated_and_unopened_conns_are_dropped() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (left, right) = (Mux::new(a), Mux::new(b));
        let (_l1r, l1w) = left.open(1).expect("open 1").split();
        let (_l2r, l2w) = left.open(2).expect("open 2").split();
        let mut r2 = right.open(2).expect("open 2").reader;
        left.unblock();
        right.unblock();

        // Conn 1 is not open on the right: that frame is dropped.
        l1w.write(b"lost").await.expect("write 1");
        l2w.write(b"kept").await.expect("write 2");
        assert_eq!(r2.read_frame().await.expect("frame"), &b"kept"[..]);

        // A big message arrives in pieces that join back to the original.
        let big = vec![7u8; 9000];
        l2w.write(&big).await.expect("write big");
        let mut got = Vec::new();
        while got.len() < big.len() {
            got.extend_from_slice(&r2.read_frame().await.expect("frame"));
        }
        assert_eq!(got, big);
    }

    /// The peer may send before we have opened our conns (the runtime
    /// calls Configure as soon as it has seen RegisterPlugin): a blocked
    /// mux keeps those frames in the socket until it is unblocked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_sent_before_the_conns_are_open_are_not_lost() {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let mux = Mux::new(a);
        b.write_all(&encode_frames(1, b"early"))
            .await
            .expect("write");
        // Give a reader that had started every chance to drop the frame.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut conn = mux.open(1).expect("open").reader;
        mux.unblock();
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_frame())
            .await
            .expect("the early frame arrives")
            .expect("frame");
        assert_eq!(frame, &b"early"[..]);
    }

    #[tokio::test]
    async fn opening_twice_or_conn_zero_fails() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let mux = Mux::new(a);
        let _conn = mux.open(1).expect("open");
        assert!(matches!(mux.open(1), Err(MuxError::AlreadyOpen(1))));
        assert!(matches!(mux.open(0), Err(MuxError::ReservedConn)));
    }

    #[tokio::test]
    async fn peer_hangup_ends_every_conn() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let mux = Mux::new(a);
        let mut conn = mux.open(1).expect("open").reader;
        mux.unblock();
        drop(b);
        assert!(matches!(conn.read_frame().await, Err(MuxError::Closed)));
        assert!(matches!(mux.closed().await, MuxError::Closed));
    }

    #[tokio::test]
    async fn dropping_the_mux_ends_its_conns_and_the_peer_sees_it() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (mux, peer) = (Mux::new(a), Mux::new(b));
        let (mut reader, writer) = mux.open(1).expect("open").split();
        let mut peer_conn = peer.open(1).expect("open peer").reader;
        mux.unblock();
        peer.unblock();
        drop(mux);
        assert!(matches!(reader.read_frame().await, Err(MuxError::Closed)));
        assert!(matches!(writer.write(b"x").await, Err(MuxError::Closed)));
        assert!(matches!(
            peer_conn.read_frame().await,
            Err(MuxError::Closed)
        ));
    }

    #[tokio::test]
    async fn after_close_opening_fails_and_closed_resolves() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let mux = Mux::new(a);
        mux.close().await;
        assert!(matches!(mux.open(1), Err(MuxError::Closed)));
        assert!(matches!(mux.closed().await, MuxError::Closed));
    }

    #[tokio::test]
    async fn oversized_frame_closes_the_trunk() {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let mux = Mux::new(a);
        let mut conn = mux.open(1).expect("open").reader;
        mux.unblock();
        let header = FrameHeader {
            conn: 1,
            len: u32::MAX,
        };
        b.write_all(&header.encode()).await.expect("write header");
        assert!(matches!(
            conn.read_frame().await,
            Err(MuxError::FrameTooLong { conn: 1, .. })
        ));
    }
}
