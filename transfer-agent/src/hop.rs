//! One hop of the data plane over TCP: many connections to the next agent, each driven by the
//! protocol's sans-IO state machines.
//!
//! Sending ([`HopSender`]): one driver task owns a [`Sender`] per connection and the frames not
//! yet acknowledged; thin reader and writer tasks move bytes. A new chunk goes to the connection
//! with the fewest chunks in flight; when a connection dies its chunks move to the live ones;
//! when none is left, every chunk still held is reported given up so the gateway can send it
//! another way. Producers block in [`HopSender::send`] while every window is full
//! (backpressure).
//!
//! Receiving ([`HopListener`]): one task per connection decodes frames into a [`Receiver`],
//! hands each new chunk to the agent with a commit handle, and acknowledges it once the agent
//! commits. It stops reading the socket while too many chunks await commit, so a slow next
//! step slows the sender through TCP instead of filling memory.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use skyx_protocol::frame::HEADER_LEN;
use skyx_protocol::{
    ChunkId, DataFrame, Frame, FrameDecoder, JobId, Receiver, ReceiverEvent, Role, Sender,
    SenderConfig, SenderEvent,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use skyx_agent_api::tls::AgentIdentity;

pub use crate::hop_error::HopError;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct HopSenderConfig {
    /// Parallel TCP connections to the next hop.
    pub connections: usize,
    /// Per-connection window, retransmission and attempt limits.
    pub sender: SenderConfig,
    /// Most chunks held (queued or unacknowledged) across all connections: the hop's memory
    /// bound is this times the chunk size, however many connections there are.
    pub max_held: usize,
    /// Fault injection for tests: flip one payload bit in every Nth data frame put on the wire
    /// (the held copy stays intact, so the resend is clean). `None` in production.
    pub corrupt_every: Option<u64>,
}

impl Default for HopSenderConfig {
    fn default() -> Self {
        HopSenderConfig {
            connections: 8,
            sender: SenderConfig {
                window: 16,
                ..Default::default()
            },
            max_held: 32,
            corrupt_every: None,
        }
    }
}

enum DriverInput {
    Frame(Frame),
    Lost,
}

/// Sends chunks to the next hop over several connections.
#[derive(Debug)]
pub struct HopSender {
    frames: mpsc::Sender<DataFrame>,
    driver: JoinHandle<()>,
    wire_bytes: Arc<AtomicU64>,
    resent_bytes: Arc<AtomicU64>,
}

impl HopSender {
    /// Opens `config.connections` connections to `addr`. Events (acks, give-ups) arrive on the
    /// returned receiver.
    ///
    /// With `identity`, every connection is mutual TLS with the job's CA (the production mode);
    /// without, plain TCP (tests and benchmarks that measure the protocol alone).
    pub async fn connect(
        addr: SocketAddr,
        config: HopSenderConfig,
        identity: Option<&AgentIdentity>,
    ) -> Result<(HopSender, mpsc::UnboundedReceiver<SenderEvent>), HopError> {
        let n = config.connections.max(1);
        let tls = match identity {
            Some(id) => Some((TlsConnector::from(id.client_config()?), id.server_name())),
            None => None,
        };
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let s = TcpStream::connect(addr)
                .await
                .map_err(|source| HopError::Connect { addr, source })?;
            // Chunks are large; Nagle only delays acknowledgements.
            let _ = s.set_nodelay(true);
            streams.push(match &tls {
                Some((connector, name)) => {
                    let t = connector
                        .connect(name.clone(), s)
                        .await
                        .map_err(|source| HopError::Handshake { addr, source })?;
                    halves(t)
                }
                None => halves(s),
            });
        }
        Ok(Self::start(streams, config, Box::new(())))
    }

    /// As [`HopSender::connect`], over one QUIC connection with `config.connections` streams.
    /// QUIC's TLS 1.3 uses the same job identity, so the peer checks are those of TCP + TLS.
    pub async fn connect_quic(
        addr: SocketAddr,
        config: HopSenderConfig,
        identity: &AgentIdentity,
    ) -> Result<(HopSender, mpsc::UnboundedReceiver<SenderEvent>), HopError> {
        let (endpoint, conn) = crate::quic::connect(addr, identity).await?;
        let mut streams = Vec::with_capacity(config.connections.max(1));
        for _ in 0..config.connections.max(1) {
            let (send, recv) = conn.open_bi().await.map_err(|e| HopError::Connect {
                addr,
                source: std::io::Error::other(e),
            })?;
            streams.push((Box::new(recv) as BoxRead, Box::new(send) as BoxWrite));
        }
        Ok(Self::start(streams, config, Box::new((endpoint, conn))))
    }

    fn start(
        streams: Vec<(BoxRead, BoxWrite)>,
        config: HopSenderConfig,
        keepalive: Box<dyn std::any::Any + Send>,
    ) -> (HopSender, mpsc::UnboundedReceiver<SenderEvent>) {
        let (frames_tx, frames_rx) = mpsc::channel(streams.len());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let wire_bytes = Arc::new(AtomicU64::new(0));
        let resent_bytes = Arc::new(AtomicU64::new(0));
        let driver = tokio::spawn(drive(
            streams,
            DriveConfig {
                sender: config.sender,
                max_held: config.max_held.max(1),
                corrupt_every: config.corrupt_every,
                wire_bytes: wire_bytes.clone(),
                resent_bytes: resent_bytes.clone(),
                keepalive,
            },
            frames_rx,
            events_tx,
        ));
        (
            HopSender {
                frames: frames_tx,
                driver,
                wire_bytes,
                resent_bytes,
            },
            events_rx,
        )
    }

    /// Bytes put on the wire so far (frame headers and resends included).
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes.load(Ordering::Relaxed)
    }

    /// Of those, the bytes of chunks sent again on this hop (lost, corrupted or timed out on
    /// it, or moved off a dead connection).
    pub fn resent_bytes(&self) -> u64 {
        self.resent_bytes.load(Ordering::Relaxed)
    }

    /// Queues a chunk; waits while every connection's window is full.
    pub async fn send(&self, frame: DataFrame) -> Result<(), HopError> {
        self.frames.send(frame).await.map_err(|_| HopError::Closed)
    }

    /// No more chunks: the driver ends once everything queued is acknowledged or given up.
    pub async fn finish(self) {
        drop(self.frames);
        let _ = self.driver.await;
    }
}

struct Conn {
    sender: Sender,
    /// Frames to write: the header, and the payload shared with `held` (never copied).
    writer: mpsc::Sender<([u8; HEADER_LEN], Bytes)>,
    alive: bool,
    tasks: [JoinHandle<()>; 2],
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

fn halves<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (BoxRead, BoxWrite) {
    let (r, w) = tokio::io::split(stream);
    (Box::new(r), Box::new(w))
}

async fn read_frames(
    mut read: BoxRead,
    idx: usize,
    to_driver: mpsc::UnboundedSender<(usize, DriverInput)>,
) {
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => dec.push(&buf[..n]),
        }
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    if to_driver.send((idx, DriverInput::Frame(f))).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_fatal() => {
                    tracing::warn!(conn = idx, error = %e, "corrupt stream from next hop; dropping the connection");
                    let _ = to_driver.send((idx, DriverInput::Lost));
                    return;
                }
                Err(_) => {}
            }
        }
    }
    let _ = to_driver.send((idx, DriverInput::Lost));
}

/// What the writer tasks of one hop share.
#[derive(Clone)]
struct WireCounters {
    bytes: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    corrupt_every: Option<u64>,
}

async fn write_frames(
    mut write: BoxWrite,
    mut rx: mpsc::Receiver<([u8; HEADER_LEN], Bytes)>,
    counters: WireCounters,
) {
    while let Some((header, payload)) = rx.recv().await {
        let n = counters.frames.fetch_add(1, Ordering::Relaxed) + 1;
        let payload = match counters.corrupt_every {
            Some(every) if every > 0 && n.is_multiple_of(every) && !payload.is_empty() => {
                let mut bad = payload.to_vec();
                bad[0] ^= 0x01;
                Bytes::from(bad)
            }
            _ => payload,
        };
        if write.write_all(&header).await.is_err() || write.write_all(&payload).await.is_err() {
            return;
        }
        // TLS (and QUIC) streams may keep written bytes in their own buffers when the socket
        // is busy; without a flush the last frame of a burst can sit there until something
        // else is written (here: a resend 30 s later). Flush whenever nothing more is queued.
        if rx.is_empty() && write.flush().await.is_err() {
            return;
        }
        counters
            .bytes
            .fetch_add((HEADER_LEN + payload.len()) as u64, Ordering::Relaxed);
    }
    let _ = write.shutdown().await;
}

struct DriveConfig {
    sender: SenderConfig,
    max_held: usize,
    corrupt_every: Option<u64>,
    wire_bytes: Arc<AtomicU64>,
    resent_bytes: Arc<AtomicU64>,
    /// Whatever must live as long as the streams (a QUIC endpoint and connection).
    keepalive: Box<dyn std::any::Any + Send>,
}

async fn drive(
    streams: Vec<(BoxRead, BoxWrite)>,
    drive_config: DriveConfig,
    mut frames_rx: mpsc::Receiver<DataFrame>,
    events: mpsc::UnboundedSender<SenderEvent>,
) {
    let DriveConfig {
        sender: config,
        max_held,
        corrupt_every,
        wire_bytes,
        resent_bytes,
        keepalive,
    } = drive_config;
    let counters = WireCounters {
        bytes: wire_bytes,
        frames: Arc::new(AtomicU64::new(0)),
        corrupt_every,
    };
    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (read, write) = s;
            // Two frames queued per connection keep the socket busy; more would only hold memory.
            let (wtx, wrx) = mpsc::channel(2);
            Conn {
                sender: Sender::new(config.clone()),
                writer: wtx,
                alive: true,
                tasks: [
                    tokio::spawn(read_frames(read, i, input_tx.clone())),
                    tokio::spawn(write_frames(write, wrx, counters.clone())),
                ],
            }
        })
        .collect();
    drop(input_tx);
    let mut held: HashMap<ChunkId, DataFrame> = HashMap::new();
    // Held chunks put on the wire at least once: any later send of one is a resend.
    let mut sent: HashSet<ChunkId> = HashSet::new();
    let mut producer_done = false;
    loop {
        // Put every chunk a window allows on its wire.
        let now = Instant::now();
        for c in conns.iter_mut().filter(|c| c.alive) {
            while let Some(chunk) = c.sender.poll_transmit(now) {
                if !sent.insert(chunk)
                    && let Some(f) = held.get(&chunk)
                {
                    resent_bytes.fetch_add(wire_size(f), Ordering::Relaxed);
                }
                if let Some(f) = held.get(&chunk)
                    && c.writer
                        .send((Frame::Data(f.clone()).encode_header(), f.payload.clone()))
                        .await
                        .is_err()
                {
                    c.alive = false;
                    break;
                }
            }
        }
        move_chunks_off_dead_connections(&mut conns, &held);
        for c in conns.iter_mut() {
            while let Some(e) = c.sender.poll_event() {
                match &e {
                    SenderEvent::Acked(chunk) | SenderEvent::GaveUp { chunk, .. } => {
                        held.remove(chunk);
                        sent.remove(chunk);
                    }
                }
                let _ = events.send(e);
            }
        }
        if !conns.iter().any(|c| c.alive) {
            // Nothing left to send on: everything held is given up, and so is everything the
            // producer still sends.
            for (chunk, _) in held.drain() {
                let _ = events.send(SenderEvent::GaveUp {
                    chunk,
                    attempts: 0,
                    last: skyx_protocol::Failure::ConnectionLost,
                });
            }
            while let Some(f) = frames_rx.recv().await {
                let _ = events.send(SenderEvent::GaveUp {
                    chunk: f.chunk.chunk,
                    attempts: 0,
                    last: skyx_protocol::Failure::ConnectionLost,
                });
            }
            break;
        }
        if producer_done && held.is_empty() {
            break;
        }
        let room = held.len() < max_held && conns.iter().any(|c| c.alive && c.sender.has_room());
        let deadline = conns.iter().filter_map(|c| c.sender.poll_timeout()).min();
        tokio::select! {
            f = frames_rx.recv(), if room && !producer_done => match f {
                Some(f) => {
                    let chunk = f.chunk.chunk;
                    held.insert(chunk, f);
                    let target = conns
                        .iter_mut()
                        .filter(|c| c.alive && c.sender.has_room())
                        .min_by_key(|c| c.sender.in_flight())
                        .expect("room on a live connection");
                    target.sender.enqueue_sized(chunk, wire_size(&held[&chunk]));
                }
                None => producer_done = true,
            },
            Some((idx, input)) = input_rx.recv() => match input {
                DriverInput::Frame(Frame::Ack { chunk, .. }) => conns[idx].sender.handle_ack(chunk),
                DriverInput::Frame(Frame::Received { chunk, .. }) => conns[idx].sender.handle_received(chunk, Instant::now()),
                DriverInput::Frame(Frame::Nack { chunk, reason, .. }) => conns[idx].sender.handle_nack(chunk, reason),
                DriverInput::Frame(Frame::Data(_)) => {}
                DriverInput::Lost => conns[idx].alive = false,
            },
            _ = sleep_until(deadline) => {}
        }
    }
    for c in conns {
        drop(c.writer);
        let [reader, writer] = c.tasks;
        let _ = writer.await;
        reader.abort();
    }
    drop(keepalive);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn move_chunks_off_dead_connections(conns: &mut [Conn], held: &HashMap<ChunkId, DataFrame>) {
    let orphans: Vec<ChunkId> = conns
        .iter_mut()
        .filter(|c| !c.alive)
        .flat_map(|c| {
            c.sender.handle_connection_lost();
            c.sender.take_all()
        })
        .filter(|chunk| held.contains_key(chunk))
        .collect();
    if orphans.is_empty() {
        return;
    }
    let live: Vec<usize> = (0..conns.len()).filter(|&i| conns[i].alive).collect();
    if live.is_empty() {
        // The caller reports everything still held as given up.
        return;
    }
    tracing::debug!(
        chunks = orphans.len(),
        "moving chunks off a dead connection"
    );
    for (k, chunk) in orphans.into_iter().enumerate() {
        conns[live[k % live.len()]]
            .sender
            .enqueue_sized(chunk, wire_size(&held[&chunk]));
    }
}

/// Bytes a data frame takes on the wire (what its timeout must allow to drain).
fn wire_size(frame: &DataFrame) -> u64 {
    (HEADER_LEN + frame.payload.len()) as u64
}

/// The relay role: every chunk delivered from the previous hop is queued to the next hop and
/// acknowledged upstream once queued. Runs until the listener's deliveries end, then finishes
/// the onward hop. What the onward hop gives up goes to `on_event` (an agent reports it to its
/// gateway); a chunk that cannot be queued because the onward hop is gone is refused upstream
/// (not resent into a dead end) and reported there too, as given up without a connection.
pub async fn relay(
    mut deliveries: mpsc::Receiver<Delivery>,
    onward: Arc<HopSender>,
    mut onward_events: mpsc::UnboundedReceiver<SenderEvent>,
    on_event: impl Fn(SenderEvent) + Send + Sync + 'static,
) {
    let on_event = Arc::new(on_event);
    let forward = on_event.clone();
    let drain = tokio::spawn(async move {
        while let Some(e) = onward_events.recv().await {
            forward(e);
        }
    });
    while let Some(d) = deliveries.recv().await {
        let chunk = d.frame.chunk.chunk;
        match onward.send(d.frame.clone()).await {
            Ok(()) => d.commit(),
            Err(_) => {
                on_event(SenderEvent::GaveUp {
                    chunk,
                    attempts: 0,
                    last: skyx_protocol::Failure::ConnectionLost,
                });
                d.refuse();
            }
        }
    }
    drop(deliveries);
    // The agent may share the hop (to read its counters); then it ends with the agent.
    if let Ok(onward) = Arc::try_unwrap(onward) {
        onward.finish().await;
        let _ = drain.await;
    }
}

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
    /// With `identity`, connections must complete mutual TLS with a certificate of the same
    /// job's CA; others are dropped before a byte of data is read.
    pub async fn bind(
        addr: SocketAddr,
        job: JobId,
        role: Role,
        max_pending: usize,
        identity: Option<&AgentIdentity>,
    ) -> Result<(HopListener, mpsc::Receiver<Delivery>), HopError> {
        let acceptor = identity
            .map(|id| id.server_config())
            .transpose()?
            .map(TlsAcceptor::from);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HopError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HopError::Bind { addr, source })?;
        let (shared, rx) = Served::new(job, role, max_pending);
        let corrupt = shared.corrupt.clone();
        let accept = tokio::spawn(async move {
            loop {
                let (stream, peer) = crate::accept::accept_next(&listener, "data").await;
                let _ = stream.set_nodelay(true);
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let io = match acceptor {
                        Some(a) => match a.accept(stream).await {
                            Ok(t) => halves(t),
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "refused a connection that is not a peer of this job");
                                return;
                            }
                        },
                        None => halves(stream),
                    };
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
        max_pending: usize,
        identity: &AgentIdentity,
    ) -> Result<(HopListener, mpsc::Receiver<Delivery>), HopError> {
        let endpoint = crate::quic::listen(addr, identity)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| HopError::Bind { addr, source })?;
        let (shared, rx) = Served::new(job, role, max_pending);
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
    /// The listener's `max_pending` slots.
    slots: Arc<Semaphore>,
    deliveries: mpsc::Sender<Delivery>,
    corrupt: Arc<AtomicU64>,
}

impl Served {
    /// The shared state of a new listener, and the receiving end of its deliveries.
    fn new(job: JobId, role: Role, max_pending: usize) -> (Served, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(max_pending.max(1));
        let served = Served {
            job,
            role,
            slots: Arc::new(Semaphore::new(max_pending.max(1))),
            deliveries: tx,
            corrupt: Arc::new(AtomicU64::new(0)),
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
        slots,
        deliveries,
        corrupt,
    } = shared;
    let mut receiver = Receiver::new(job, role);
    let mut decoder = FrameDecoder::new();
    let mut pending = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut eof = false;
    let mut corrupt_seen = 0;
    loop {
        if receiver.stats.corrupt > corrupt_seen {
            corrupt.fetch_add(receiver.stats.corrupt - corrupt_seen, Ordering::Relaxed);
            corrupt_seen = receiver.stats.corrupt;
        }
        while let Some(ReceiverEvent::Deliver { frame, raw }) = receiver.poll_event() {
            let chunk = frame.chunk.chunk;
            // Waiting for a slot here stops this connection's reads: backpressure.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (done_tx, done_rx) = oneshot::channel();
            if deliveries
                .send(Delivery {
                    frame,
                    raw,
                    done: done_tx,
                    _slot: slot,
                })
                .await
                .is_err()
            {
                return;
            }
            pending.spawn(async move { (chunk, done_rx.await.unwrap_or(Outcome::Failed)) });
        }
        let mut out = BytesMut::new();
        while let Some(f) = receiver.poll_transmit() {
            f.encode(&mut out);
        }
        // Flushed at once: an acknowledgement left in a TLS buffer stalls the sender's window.
        if !out.is_empty() && (write.write_all(&out).await.is_err() || write.flush().await.is_err())
        {
            return;
        }
        if eof && pending.is_empty() {
            return;
        }
        let can_read = !eof;
        tokio::select! {
            r = read.read(&mut buf), if can_read => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    decoder.push(&buf[..n]);
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
            }
        }
    }
}
