//! One hop of the data plane over TCP: many connections to the next agent, each driven by the
//! protocol's sans-IO state machines.
//!
//! Sending ([`HopSender`]): one driver task owns a [`Sender`] per connection and the frames not
//! yet acknowledged; thin reader and writer tasks move bytes. A new chunk goes to the connection
//! with the fewest chunks in flight; when a connection dies (closed, or stalled as its
//! [`Liveness`] judges from the receiver's heartbeats) its chunks move to the live ones; when
//! none is left, every chunk still held is reported given up so the gateway can send it
//! another way. Producers block in [`HopSender::send`] while every window is full
//! (backpressure). The receiving side is [`crate::hop_listener`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skyx_protocol::frame::HEADER_LEN;
use skyx_protocol::liveness::DEFAULT_SILENCE;
use skyx_protocol::{
    ChunkId, DataFrame, Failure, Frame, FrameDecoder, Liveness, Sender, SenderConfig, SenderEvent,
    Stall,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use skyx_agent_api::tls::AgentIdentity;

use crate::hop_auth::HopGuard;
pub use crate::hop_error::HopError;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long one connection to the next hop may take to open (TCP and TLS): a cut link drops
/// the handshake without a word, and the kernel would keep trying for two minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HopSenderConfig {
    /// Parallel TCP connections to the next hop.
    pub connections: usize,
    /// Per-connection window, retransmission and attempt limits.
    pub sender: SenderConfig,
    /// Most chunks held (queued or unacknowledged) across all connections: the hop's memory
    /// bound is this times the chunk size, however many connections there are.
    pub max_held: usize,
    /// How long a connection with chunks in flight may go without news or progress from the
    /// receiver before it is given up (see [`skyx_protocol::liveness`]).
    pub silence: Duration,
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
            silence: DEFAULT_SILENCE,
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
    /// Every connection first proves the job to the listener as `guard` says: the hop
    /// handshake (the production mode with sealed chunks), mutual TLS with the job's CA, or
    /// nothing (tests and benchmarks that measure the protocol alone).
    pub async fn connect(
        addr: SocketAddr,
        config: HopSenderConfig,
        guard: &HopGuard,
    ) -> Result<(HopSender, mpsc::UnboundedReceiver<SenderEvent>), HopError> {
        let n = config.connections.max(1);
        let tls = match guard {
            HopGuard::Tls(id) => Some((TlsConnector::from(id.client_config()?), id.server_name())),
            _ => None,
        };
        // All at once: each costs round trips (TCP, then the handshake), and one after another
        // a far hop of 64 connections took half a minute to open (212 ms round trip, measured).
        let opens = (0..n).map(|_| {
            let tls = &tls;
            let open = async move {
                let mut s = TcpStream::connect(addr)
                    .await
                    .map_err(|source| HopError::Connect { addr, source })?;
                // Chunks are large; Nagle only delays acknowledgements.
                let _ = s.set_nodelay(true);
                Ok::<_, HopError>(match (guard, &tls) {
                    (HopGuard::Handshake(key), _) => {
                        crate::hop_auth::connect(&mut s, key)
                            .await
                            .map_err(|source| HopError::HopHandshake { addr, source })?;
                        halves(s)
                    }
                    (_, Some((connector, name))) => {
                        let t = connector
                            .connect(name.clone(), s)
                            .await
                            .map_err(|source| HopError::Handshake { addr, source })?;
                        halves(t)
                    }
                    _ => halves(s),
                })
            };
            async move {
                tokio::time::timeout(CONNECT_TIMEOUT, open)
                    .await
                    .map_err(|_| no_answer(addr))?
            }
        });
        let streams = futures::future::try_join_all(opens).await?;
        Ok(Self::start(streams, config, Box::new(())))
    }

    /// As [`HopSender::connect`], over one QUIC connection with `config.connections` streams.
    /// QUIC's TLS 1.3 uses the same job identity, so the peer checks are those of TCP + TLS.
    pub async fn connect_quic(
        addr: SocketAddr,
        config: HopSenderConfig,
        identity: &AgentIdentity,
    ) -> Result<(HopSender, mpsc::UnboundedReceiver<SenderEvent>), HopError> {
        let open = async {
            let (endpoint, conn) = crate::quic::connect(addr, identity).await?;
            let mut streams = Vec::with_capacity(config.connections.max(1));
            for _ in 0..config.connections.max(1) {
                let (send, recv) = conn.open_bi().await.map_err(|e| HopError::Connect {
                    addr,
                    source: std::io::Error::other(e),
                })?;
                streams.push((Box::new(recv) as BoxRead, Box::new(send) as BoxWrite));
            }
            Ok::<_, HopError>((streams, endpoint, conn))
        };
        let (streams, endpoint, conn) = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| no_answer(addr))??;
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
                silence: config.silence,
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

/// A hop that did not open within [`CONNECT_TIMEOUT`].
fn no_answer(addr: SocketAddr) -> HopError {
    HopError::Connect {
        addr,
        source: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
        ),
    }
}

struct Conn {
    sender: Sender,
    /// Frames to write: the header, and the payload shared with `held` (never copied). At
    /// most the sender's window is queued; the driver never waits on it, so a connection whose
    /// socket stopped draining cannot stop the driver from judging it.
    writer: mpsc::UnboundedSender<([u8; HEADER_LEN], Bytes)>,
    /// What its writer has put on the connection.
    written: Arc<WriteProgress>,
    liveness: Liveness,
    alive: bool,
    tasks: [JoinHandle<()>; 2],
}

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) fn halves<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> (BoxRead, BoxWrite) {
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

/// What one connection's writer has put on it, for its liveness.
#[derive(Default)]
struct WriteProgress {
    /// Bytes of whole frames written (and flushed when nothing more was queued).
    bytes: AtomicU64,
    /// A frame is being written.
    writing: AtomicBool,
}

async fn write_frames(
    mut write: BoxWrite,
    mut rx: mpsc::UnboundedReceiver<([u8; HEADER_LEN], Bytes)>,
    counters: WireCounters,
    written: Arc<WriteProgress>,
) {
    while let Some((header, payload)) = rx.recv().await {
        written.writing.store(true, Ordering::Relaxed);
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
        let n = (HEADER_LEN + payload.len()) as u64;
        counters.bytes.fetch_add(n, Ordering::Relaxed);
        written.bytes.fetch_add(n, Ordering::Relaxed);
        written.writing.store(false, Ordering::Relaxed);
    }
    let _ = write.shutdown().await;
}

struct DriveConfig {
    sender: SenderConfig,
    max_held: usize,
    silence: Duration,
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
        silence,
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
    let start = Instant::now();
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (read, write) = s;
            let (wtx, wrx) = mpsc::unbounded_channel();
            let written = Arc::new(WriteProgress::default());
            Conn {
                sender: Sender::new(config.clone()),
                writer: wtx,
                written: written.clone(),
                liveness: Liveness::new(silence, start),
                alive: true,
                tasks: [
                    tokio::spawn(read_frames(read, i, input_tx.clone())),
                    tokio::spawn(write_frames(write, wrx, counters.clone(), written)),
                ],
            }
        })
        .collect();
    drop(input_tx);
    let mut held: HashMap<ChunkId, DataFrame> = HashMap::new();
    // Held chunks put on the wire at least once: any later send of one is a resend.
    let mut sent: HashSet<ChunkId> = HashSet::new();
    let mut producer_done = false;
    // Why the last connection judged stalled was given up.
    let mut stalled: Option<Stall> = None;
    loop {
        let now = Instant::now();
        for (i, c) in conns.iter_mut().enumerate().filter(|(_, c)| c.alive) {
            c.liveness.handle_written(
                c.written.bytes.load(Ordering::Relaxed),
                c.written.writing.load(Ordering::Relaxed),
                now,
            );
            if let Some(stall) = c.liveness.stalled(c.sender.in_flight() > 0, now) {
                tracing::warn!(conn = i, "giving up a connection to the next hop: {stall}");
                c.alive = false;
                // Its writer may be blocked on a socket that will never drain.
                c.tasks.iter().for_each(JoinHandle::abort);
                stalled = Some(stall);
            }
        }
        // Put every chunk a window allows on its wire.
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
            let last = stalled.map_or(Failure::ConnectionLost, Failure::Stalled);
            for (chunk, _) in held.drain() {
                let _ = events.send(SenderEvent::GaveUp {
                    chunk,
                    attempts: 0,
                    last,
                });
            }
            while let Some(f) = frames_rx.recv().await {
                let _ = events.send(SenderEvent::GaveUp {
                    chunk: f.chunk.chunk,
                    attempts: 0,
                    last,
                });
            }
            break;
        }
        if producer_done && held.is_empty() {
            break;
        }
        let room = held.len() < max_held && conns.iter().any(|c| c.alive && c.sender.has_room());
        // Chunks just moved off dead connections wait in a live one's queue: put them on the
        // wire now, rather than sleep until something else happens (perhaps nothing: every
        // other connection may be idle).
        let transmit_now = conns.iter().any(|c| c.alive && c.sender.wants_transmit());
        let deadline = if transmit_now {
            Some(Instant::now())
        } else {
            conns
                .iter()
                .filter(|c| c.alive)
                .flat_map(|c| {
                    let busy = c.sender.in_flight() > 0;
                    [
                        c.sender.poll_timeout(),
                        busy.then(|| c.liveness.next_check()),
                    ]
                })
                .flatten()
                .min()
        };
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
            Some((idx, input)) = input_rx.recv() => {
                let (c, now) = (&mut conns[idx], Instant::now());
                match input {
                    DriverInput::Frame(Frame::Progress { received, paused, .. }) => {
                        c.liveness.handle_progress(received, paused, now);
                        if paused {
                            // What waits behind a busy receiver is not lost: no resend.
                            c.sender.handle_receiver_paused(now);
                        }
                    }
                    DriverInput::Frame(f) => {
                        c.liveness.handle_frame(now);
                        match f {
                            Frame::Ack { chunk, .. } => c.sender.handle_ack(chunk),
                            Frame::Received { chunk, .. } => c.sender.handle_received(chunk, now),
                            Frame::Nack { chunk, reason, .. } => c.sender.handle_nack(chunk, reason),
                            Frame::Data(_) | Frame::Progress { .. } => {}
                        }
                    }
                    DriverInput::Lost => {
                        c.alive = false;
                        // The last connection to die says why the hop is down.
                        stalled = None;
                    }
                }
            }
            _ = sleep_until(deadline) => {}
        }
    }
    for c in conns {
        drop(c.writer);
        let [reader, writer] = c.tasks;
        if c.alive {
            let _ = writer.await;
        } else {
            // A dead connection's writer may wait forever on a socket that never drains.
            writer.abort();
        }
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
