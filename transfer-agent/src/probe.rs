//! Path probes between agents, as iperf3 does them: many TCP connections writing as fast as the
//! path allows, counted at the receiver (bytes the sender's socket buffers still hold are not
//! throughput), over a window that starts after a warm-up (slow start is not the path's
//! capacity) and ends before the senders stop (the drain of queues after the last write is not
//! either); and round trips of a few bytes on an idle path.
//!
//! Each connection starts with one byte saying what it is for:
//! - `C` (control): 8-byte requests. `P…` is a ping, echoed back; `S…` asks for a snapshot:
//!   16 bytes back, the bytes all discard connections of this listener have received so far
//!   and the listener's clock in nanoseconds.
//! - `D` (discard): the listener counts what it reads (into the listener's total) until the
//!   connection ends.
//!
//! Throughput is the difference of two snapshots over the difference of their clocks; both
//! requests wait in the same queue on the way, so the window is measured where the bytes
//! arrive. Probes are plain TCP, not the job's TLS: they measure the path, not the agent's
//! crypto.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use skyx_agent_api::wire::ProbeResult;

const MODE_CONTROL: u8 = b'C';
const MODE_DISCARD: u8 = b'D';
const PING: u8 = b'P';
const SNAPSHOT: u8 = b'S';
const PINGS: usize = 10;
const WRITE_BUF: usize = 256 * 1024;
/// Longest probe an agent accepts (seconds), and most connections.
pub const MAX_PROBE_SECONDS: f64 = 600.0;
pub const MAX_PROBE_CONNECTIONS: u32 = 256;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe to {addr}: {what}: {source}")]
    Io {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("probe to {addr}: no bytes arrived during the measurement window")]
    NothingArrived { addr: SocketAddr },
}

/// Starts a probe listener on `bind` that accepts connections for `accept_for`, then stops
/// accepting (connections already open run to their end). Returns the bound address.
pub async fn listen(bind: SocketAddr, accept_for: Duration) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(accept_for);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => { tokio::spawn(serve(stream, epoch, received.clone())); }
                    Err(e) => tracing::warn!("probe listener: accept failed: {e}"),
                },
            }
        }
    });
    Ok(addr)
}

async fn serve(
    mut stream: TcpStream,
    epoch: Instant,
    received: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    match stream.read_u8().await? {
        MODE_CONTROL => {
            let mut request = [0u8; 8];
            loop {
                match stream.read_exact(&mut request).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
                match request[0] {
                    PING => stream.write_all(&request).await?,
                    SNAPSHOT => {
                        let mut answer = [0u8; 16];
                        answer[..8]
                            .copy_from_slice(&received.load(Ordering::Relaxed).to_be_bytes());
                        answer[8..]
                            .copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
                        stream.write_all(&answer).await?;
                    }
                    _ => return Ok(()),
                }
            }
        }
        MODE_DISCARD => {
            let mut buf = vec![0u8; WRITE_BUF];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        _ => Ok(()),
    }
}

/// Measures the path to a probe listener at `addr`: round trips first (on an idle path), then
/// `connections` parallel streams, counted over `duration` after a warm-up of ten round trips
/// or a fifth of it, whichever is longer (at most 2 s).
pub async fn probe(
    addr: SocketAddr,
    connections: u32,
    duration: Duration,
) -> Result<ProbeResult, ProbeError> {
    let io = move |what| move |source| ProbeError::Io { addr, what, source };
    let mut control = TcpStream::connect(addr).await.map_err(io("connecting"))?;
    let _ = control.set_nodelay(true);
    control
        .write_u8(MODE_CONTROL)
        .await
        .map_err(io("control"))?;
    let mut rtts = Vec::with_capacity(PINGS);
    for i in 0..PINGS as u64 {
        let mut ping = i.to_be_bytes();
        ping[0] = PING;
        let started = Instant::now();
        control.write_all(&ping).await.map_err(io("ping"))?;
        let mut back = [0u8; 8];
        control.read_exact(&mut back).await.map_err(io("ping"))?;
        rtts.push(started.elapsed().as_secs_f64() * 1e3);
    }
    rtts.sort_by(f64::total_cmp);

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut streams = Vec::new();
    for _ in 0..connections {
        let mut stop = stop.clone();
        streams.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.map_err(io("connecting"))?;
            s.write_u8(MODE_DISCARD).await.map_err(io("sending"))?;
            // Pseudo-random bytes: a path that compresses (none here does) cannot flatter it.
            let mut state =
                0x9E37_79B9_7F4A_7C15u64 ^ u64::from(s.local_addr().map_or(0, |a| a.port()));
            let buf: Vec<u8> = (0..WRITE_BUF)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            while !*stop.borrow() {
                tokio::select! {
                    _ = stop.changed() => break,
                    r = s.write_all(&buf) => r.map_err(io("sending"))?,
                }
            }
            // Reset rather than close: what the socket still holds must not drain into the
            // next probe. (A zero linger resets at once; it is a non-zero one that blocks.)
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            Ok::<_, ProbeError>(())
        }));
    }
    // Slow start takes a number of round trips to fill a path: ten of them, or a fifth of the
    // probe if longer, at most 2 s.
    let ten_round_trips = Duration::from_secs_f64(rtts[rtts.len() / 2] * 10.0 / 1e3);
    let warm_up = (duration / 5)
        .max(ten_round_trips)
        .min(Duration::from_secs(2));
    tokio::time::sleep(warm_up).await;
    let (bytes_a, at_a) = snapshot(&mut control).await.map_err(io("snapshot"))?;
    tokio::time::sleep(duration).await;
    let (bytes_b, at_b) = snapshot(&mut control).await.map_err(io("snapshot"))?;
    let _ = stop_tx.send(true);
    for s in streams {
        s.await.expect("probe stream task panicked")?;
    }
    let bytes = bytes_b.saturating_sub(bytes_a);
    let seconds = at_b.saturating_sub(at_a) as f64 / 1e9;
    if bytes == 0 || seconds <= 0.0 {
        return Err(ProbeError::NothingArrived { addr });
    }
    Ok(ProbeResult {
        connections,
        bytes,
        seconds,
        gbps: bytes as f64 * 8.0 / seconds / 1e9,
        rtt_ms_min: rtts[0],
        rtt_ms_median: rtts[rtts.len() / 2],
    })
}

async fn snapshot(control: &mut TcpStream) -> std::io::Result<(u64, u64)> {
    let mut request = [0u8; 8];
    request[0] = SNAPSHOT;
    control.write_all(&request).await?;
    let mut answer = [0u8; 16];
    control.read_exact(&mut answer).await?;
    let word = |i: usize| u64::from_be_bytes(answer[i..i + 8].try_into().expect("8 bytes"));
    Ok((word(0), word(8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_counts_what_the_listener_received_and_times_round_trips() {
        let addr = listen("127.0.0.1:0".parse().unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
        let r = probe(addr, 4, Duration::from_millis(300)).await.unwrap();
        assert_eq!(r.connections, 4);
        assert!(r.bytes > 0, "{r:?}");
        assert!(r.seconds > 0.0, "{r:?}");
        assert!((r.gbps - r.bytes as f64 * 8.0 / r.seconds / 1e9).abs() < 1e-9);
        assert!(
            r.rtt_ms_min > 0.0 && r.rtt_ms_min <= r.rtt_ms_median,
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_listener_stops_accepting_after_its_time() {
        let addr = listen("127.0.0.1:0".parse().unwrap(), Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let err = probe(addr, 1, Duration::from_millis(50)).await.unwrap_err();
        assert!(err.to_string().contains("connecting"), "{err}");
    }
}
