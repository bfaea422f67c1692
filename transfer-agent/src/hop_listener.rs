//! Receiving one hop ([`HopListener`]): one task per connection decodes frames into a
//! [`Receiver`], hands each new chunk to the agent with a commit handle, and acknowledges it
//! once the agent commits. It stops reading the socket while too many chunks await commit, so
//! a slow next step slows the sender through TCP instead of filling memory. Whatever it is
//! doing, it tells the sender about once a second how much it has read and whether it has
//! stopped reading on purpose (the heartbeat the sender judges the connection by).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use skyx_protocol::liveness::HEARTBEAT_EVERY;
use skyx_protocol::{
    BufferPool, ChunkKey, DataFrame, Frame, FrameDecoder, JobId, ReadInto, Receiver, ReceiverEvent,
    Role,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use skyx_agent_api::tls::AgentIdentity;

use crate::hop::{BoxRead, BoxWrite, HopError, halves};
use crate::hop_auth::{HANDSHAKE_TIMEOUT, HopGuard};

/// The least a read between frames asks for: small frames and the next header arrive in one
/// read, not one syscall each.
const READ_AT_LEAST: usize = 256 * 1024;

/// A chunk handed to the agent; acknowledge it by calling [`Delivery::commit`] once it is
/// written (sink) or queued onward (relay), or [`Delivery::fail`].
#[derive(Debug)]
pub struct Delivery {
    pub frame: DataFrame,
    /// The decoded, end-to-end verified bytes (sinks only).
    pub raw: Option<Bytes>,
    done: oneshot::Sender<Outcome>,
    /// One of the listener's `max_pending` slots, freed when the delivery is committed or
    /// failed (or dropped).
    _slot: OwnedSemaphorePermit,
}

impl Delivery {
    pub fn commit(self) {
        let _ = self.done.send(Outcome::Committed);
    }

    /// Not taken over for now (the next hop is busy or gone): the previous hop sends it again.
    pub fn fail(self) {
        let _ = self.done.send(Outcome::Failed);
    }

    /// Not taken over, and the gateway has been told why: the previous hop gives it up instead
    /// of resending it across the link (a store's trouble is not fixed by paying egress again).
    pub fn refuse(self) {
        let _ = self.done.send(Outcome::Refused);
    }
}

/// What became of a delivery (a dropped one counts as failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Failed,
    Refused,
}

/// Accepts connections from the previous hop for one job.
#[derive(Debug)]
pub struct HopListener {
    pub local_addr: SocketAddr,
    accept: JoinHandle<()>,
    corrupt: Arc<AtomicU64>,
}

impl HopListener {
    /// Listens on `addr`; every new chunk of `job` is delivered on the returned channel.
    /// `max_pending` bounds the chunks awaiting commit across all connections: past it, no
    /// connection reads its socket, and TCP pushes back on the sender.
    ///
    /// Connections must first prove the job as `guard` says (the hop handshake, or mutual
    /// TLS with a certificate of the job's CA); others are dropped before a frame is read. A
    /// sink given the job's chunk key (`opens_with`) opens sealed chunks and takes no other.
    pub async fn bind(
        addr: SocketAddr,
        job: JobId,
        role: Role,
        opens_with: Option<Arc<ChunkKey>>,
        max_pending: usize,
        guard: &HopGuard,
    ) -> Result<(HopListener, mpsc::Receiver<Delivery>), HopError> {
        let acceptor = match guard {
            HopGuard::Tls(id) => Some(TlsAcceptor::from(id.server_config()?)),
            _ => None,
        };
        let hop_key = match guard {
            HopGuard::Handshake(key) => Some(key.clone()),
            _ => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HopError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HopError::Bind { addr, source })?;
        let (shared, rx) = Served::new(job, role, opens_with, max_pending);
        let corrupt = shared.corrupt.clone();
        let accept = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(crate::accept::MAX_HANDSHAKING));
            loop {
                let (mut stream, peer, slot) =
                    crate::accept::accept_with_slot(&listener, &slots, "data").await;
                let _ = stream.set_nodelay(true);
                let (acceptor, hop_key, shared) =
                    (acceptor.clone(), hop_key.clone(), shared.clone());
                tokio::spawn(async move {
                    let refused = |e: &dyn std::fmt::Display| {
                        tracing::warn!(%peer, error = %e, "refused a connection that is not a peer of this job");
                    };
                    let io = match (acceptor, hop_key) {
                        (Some(a), _) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(stream)).await {
                                Ok(Ok(t)) => halves(t),
                                Ok(Err(e)) => return refused(&e),
                                Err(_) => return refused(&"no TLS handshake in time"),
                            }
                        }
                        (None, Some(key)) => {
                            let shake = crate::hop_auth::accept(&mut stream, &key);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, shake).await {
                                Ok(Ok(())) => halves(stream),
                                Ok(Err(e)) => return refused(&e),
                                Err(_) => return refused(&"no hop handshake in time"),
                            }
                        }
                        (None, None) => halves(stream),
                    };
                    drop(slot);
                    serve_connection(io, peer, shared).await;
                });
            }
        });
        Ok((
            HopListener {
                local_addr,
                accept,
                corrupt,
            },
            rx,
        ))
    }

    /// As [`HopListener::bind`], for QUIC: every bidirectional stream of every connection that
    /// completes the job's mutual TLS is served like one TCP connection.
    pub async fn bind_quic(
        addr: SocketAddr,
        job: JobId,
        role: Role,
        opens_with: Option<Arc<ChunkKey>>,
        max_pending: usize,
        identity: &AgentIdentity,
    ) -> Result<(HopListener, mpsc::Receiver<Delivery>), HopError> {
        let endpoint = crate::quic::listen(addr, identity)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| HopError::Bind { addr, source })?;
        let (shared, rx) = Served::new(job, role, opens_with, max_pending);
        let corrupt = shared.corrupt.clone();
        let accept = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let peer = incoming.remote_address();
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "refused a QUIC connection that is not a peer of this job");
                            return;
                        }
                    };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let io = (Box::new(recv) as BoxRead, Box::new(send) as BoxWrite);
                            serve_connection(io, peer, shared).await;
                        });
                    }
                });
            }
        });
        Ok((
            HopListener {
                local_addr,
                accept,
                corrupt,
            },
            rx,
        ))
    }

    /// Chunks refused so far because their payload failed its checksum (each was resent).
    pub fn corrupt_chunks(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Stops accepting; open connections end when their peers close them.
    pub fn close(&self) {
        self.accept.abort();
    }
}

impl Drop for HopListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct Served {
    job: JobId,
    role: Role,
    /// A sink's key to open sealed chunks with.
    opens_with: Option<Arc<ChunkKey>>,
    /// The listener's `max_pending` slots.
    slots: Arc<Semaphore>,
    deliveries: mpsc::Sender<Delivery>,
    corrupt: Arc<AtomicU64>,
    /// Buffers the payloads are read into, used again once written or sent on.
    buffers: Arc<BufferPool>,
}

/// Connections a pool expects to be reading a payload at once (past it, a few buffers are
/// taken afresh now and then).
const CONNECTIONS_READING: usize = 8;

impl Served {
    /// The shared state of a new listener, and the receiving end of its deliveries.
    fn new(
        job: JobId,
        role: Role,
        opens_with: Option<Arc<ChunkKey>>,
        max_pending: usize,
    ) -> (Served, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(max_pending.max(1));
        let served = Served {
            job,
            role,
            opens_with,
            slots: Arc::new(Semaphore::new(max_pending.max(1))),
            deliveries: tx,
            corrupt: Arc::new(AtomicU64::new(0)),
            // As many as can be in use at once, so a steady stream takes no new memory (a
            // buffer freshly faulted in costs its pages' zeroing): the chunks awaiting commit,
            // as many again held after it (a relay's next hop holds that many until they are
            // acknowledged), and one being read per connection (a few). More would only idle.
            buffers: BufferPool::new(2 * max_pending.max(1) + CONNECTIONS_READING),
        };
        (served, rx)
    }
}

async fn serve_connection(
    (mut read, mut write): (BoxRead, BoxWrite),
    peer: SocketAddr,
    shared: Served,
) {
    let Served {
        job,
        role,
        opens_with,
        slots,
        deliveries,
        corrupt,
        buffers,
    } = shared;
    let mut receiver = match opens_with {
        Some(key) => Receiver::new(job, role).opening_with(key),
        None => Receiver::new(job, role),
    };
    let mut decoder = FrameDecoder::pooled(buffers);
    let mut pending = tokio::task::JoinSet::new();
    let mut eof = false;
    let mut corrupt_seen = 0;
    // Bytes read off the connection, for the heartbeat.
    let mut received = 0u64;
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = |received: u64, paused: bool| Frame::Progress {
        job,
        received,
        paused,
    };
    loop {
        if receiver.stats.corrupt > corrupt_seen {
            corrupt.fetch_add(receiver.stats.corrupt - corrupt_seen, Ordering::Relaxed);
            corrupt_seen = receiver.stats.corrupt;
        }
        while let Some(ReceiverEvent::Deliver { frame, raw }) = receiver.poll_event() {
            let chunk = frame.chunk.chunk;
            // Waiting for a slot (or for the agent to take the chunk) stops this connection's
            // reads: backpressure. The heartbeat goes on, saying so.
            let handed = async {
                let slot = slots.clone().acquire_owned().await.ok()?;
                let (done_tx, done_rx) = oneshot::channel();
                let delivery = Delivery {
                    frame,
                    raw,
                    done: done_tx,
                    _slot: slot,
                };
                deliveries.send(delivery).await.ok()?;
                Some(done_rx)
            };
            tokio::pin!(handed);
            let handed = loop {
                tokio::select! {
                    h = &mut handed => break h,
                    _ = beat.tick() => {
                        if send_frames(&mut write, [heartbeat(received, true)]).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let Some(done_rx) = handed else {
                return;
            };
            pending.spawn(async move { (chunk, done_rx.await.unwrap_or(Outcome::Failed)) });
        }
        // Flushed at once: an acknowledgement left in a TLS buffer stalls the sender's window.
        let replies = std::iter::from_fn(|| receiver.poll_transmit());
        if send_frames(&mut write, replies).await.is_err() {
            return;
        }
        if eof && pending.is_empty() {
            return;
        }
        let can_read = !eof;
        tokio::select! {
            r = read_some(&mut read, &mut decoder), if can_read => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    received += n as u64;
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(f)) => receiver.handle_frame(Ok(f)),
                            Ok(None) => break,
                            Err(e) if e.is_fatal() => {
                                tracing::warn!(%peer, error = %e, "corrupt stream; closing the connection");
                                return;
                            }
                            Err(e) => receiver.handle_frame(Err(e)),
                        }
                    }
                }
            },
            Some(Ok((chunk, outcome))) = pending.join_next(), if !pending.is_empty() => match outcome {
                Outcome::Committed => receiver.handle_committed(chunk),
                Outcome::Failed => receiver.handle_failed(chunk),
                Outcome::Refused => receiver.handle_refused(chunk),
            },
            _ = beat.tick() => {
                if send_frames(&mut write, [heartbeat(received, false)]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads what the connection has into where the decoder wants it.
async fn read_some(read: &mut BoxRead, decoder: &mut FrameDecoder) -> std::io::Result<usize> {
    match decoder.read_buffer(READ_AT_LEAST) {
        ReadInto::Stream(buf) => read.read_buf(buf).await,
        ReadInto::Payload(mut buf) => read.read_buf(&mut buf).await,
    }
}

/// Writes `frames` (if any) and flushes them.
async fn send_frames(
    write: &mut BoxWrite,
    frames: impl IntoIterator<Item = Frame>,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out);
    }
    if out.is_empty() {
        return Ok(());
    }
    write.write_all(&out).await?;
    write.flush().await
}
