//! Path probes between agents, as iperf3 does them: many TCP connections writing as fast as the
//! path allows for a fixed time, counted at the receiver (bytes the sender's socket buffers
//! still hold are not throughput), and round trips of a few bytes on a connection of their own.
//!
//! Each connection starts with one byte saying what it is for:
//! - `E` (echo): the listener writes back every 8-byte ping it reads.
//! - `D` (discard): the listener counts what it reads until the sender closes its half, then
//!   answers with 24 bytes: bytes read, and the first and last byte's arrival in nanoseconds
//!   since the listener started (one clock for every connection, so spans can be merged).
//!
//! Probes are plain TCP, not the job's TLS: they measure the path, not the agent's crypto.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::api::ProbeResult;

const MODE_ECHO: u8 = b'E';
const MODE_DISCARD: u8 = b'D';
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
    #[error("probe to {addr}: the listener answered {got:?} instead of a byte count")]
    Malformed { addr: SocketAddr, got: Vec<u8> },
}

/// Starts a probe listener on `bind` that accepts connections for `accept_for`, then stops
/// accepting (connections already open run to their end). Returns the bound address.
pub async fn listen(bind: SocketAddr, accept_for: Duration) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let epoch = Instant::now();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(accept_for);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => { tokio::spawn(serve(stream, epoch)); }
                    Err(e) => tracing::warn!("probe listener: accept failed: {e}"),
                },
            }
        }
    });
    Ok(addr)
}

async fn serve(mut stream: TcpStream, epoch: Instant) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    match stream.read_u8().await? {
        MODE_ECHO => {
            let mut ping = [0u8; 8];
            loop {
                match stream.read_exact(&mut ping).await {
                    Ok(_) => stream.write_all(&ping).await?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        MODE_DISCARD => {
            let mut buf = vec![0u8; WRITE_BUF];
            let (mut total, mut first, mut last) = (0u64, None, 0u64);
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                let at = epoch.elapsed().as_nanos() as u64;
                first.get_or_insert(at);
                last = at;
                total += n as u64;
            }
            let mut answer = [0u8; 24];
            answer[..8].copy_from_slice(&total.to_be_bytes());
            answer[8..16].copy_from_slice(&first.unwrap_or(last).to_be_bytes());
            answer[16..].copy_from_slice(&last.to_be_bytes());
            stream.write_all(&answer).await?;
            stream.shutdown().await
        }
        _ => Ok(()),
    }
}

/// Measures the path to a probe listener at `addr`: round trips first (on an idle path), then
/// `connections` parallel streams for `duration`.
pub async fn probe(
    addr: SocketAddr,
    connections: u32,
    duration: Duration,
) -> Result<ProbeResult, ProbeError> {
    let io = move |what| move |source| ProbeError::Io { addr, what, source };
    let mut echo = TcpStream::connect(addr).await.map_err(io("connecting"))?;
    let _ = echo.set_nodelay(true);
    echo.write_u8(MODE_ECHO).await.map_err(io("echo"))?;
    let mut rtts = Vec::with_capacity(PINGS);
    for i in 0..PINGS as u64 {
        let started = Instant::now();
        echo.write_all(&i.to_be_bytes()).await.map_err(io("echo"))?;
        let mut back = [0u8; 8];
        echo.read_exact(&mut back).await.map_err(io("echo"))?;
        rtts.push(started.elapsed().as_secs_f64() * 1e3);
    }
    drop(echo);
    rtts.sort_by(f64::total_cmp);

    let deadline = Instant::now() + duration;
    let mut streams = Vec::new();
    for _ in 0..connections {
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
            while Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, s.write_all(&buf)).await {
                    Ok(r) => r.map_err(io("sending"))?,
                    Err(_) => break,
                }
            }
            s.shutdown().await.map_err(io("closing"))?;
            let mut answer = Vec::with_capacity(24);
            s.read_to_end(&mut answer)
                .await
                .map_err(io("reading the count"))?;
            let got: [u8; 24] = answer
                .clone()
                .try_into()
                .map_err(|_| ProbeError::Malformed { addr, got: answer })?;
            let word = |i: usize| u64::from_be_bytes(got[i..i + 8].try_into().expect("8 bytes"));
            Ok::<_, ProbeError>((word(0), word(8), word(16)))
        }));
    }
    let (mut bytes, mut first, mut last) = (0u64, u64::MAX, 0u64);
    for s in streams {
        let (b, f, l) = s.await.expect("probe stream task panicked")?;
        if b > 0 {
            bytes += b;
            first = first.min(f);
            last = last.max(l);
        }
    }
    let seconds = if bytes == 0 {
        0.0
    } else {
        (last.saturating_sub(first)) as f64 / 1e9
    };
    let gbps = if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds / 1e9
    } else {
        0.0
    };
    Ok(ProbeResult {
        connections,
        bytes,
        seconds,
        gbps,
        rtt_ms_min: rtts[0],
        rtt_ms_median: rtts[rtts.len() / 2],
    })
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
