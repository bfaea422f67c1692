//! Loopback throughput of the data plane: source → (relay →) sink over TCP with the real
//! protocol state machines, zstd per chunk at the source (when on) and decode + end-to-end
//! check at the sink. All three roles share this machine's cores, so figures are what one box
//! does playing every part; compare rows of one run, not runs.
//!
//! Usage: dataplane [--gib N] [--only ROW] [--out FILE]

use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use skyx_agent::{HopGuard, HopListener, HopSender, HopSenderConfig};
use skyx_protocol::{ChunkId, ChunkRef, Compression, JobId, Role, SenderEvent, encode_chunk};

const JOB: JobId = JobId(1);
const CHUNK: usize = 8 * 1024 * 1024;

fn make_chunks(text: bool) -> Vec<Bytes> {
    (0..8u64)
        .map(|i| {
            if text {
                let mut s = String::with_capacity(CHUNK + 64);
                let mut n = i;
                while s.len() < CHUNK {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    s.push_str(&format!(
                        "{},aws:us-east-1,2026-11-22T{:02}:00:00Z,{},{}.{}\n",
                        n % 100000,
                        n % 24,
                        n % 977,
                        n % 1000,
                        n % 10
                    ));
                }
                Bytes::from(s.into_bytes()[..CHUNK].to_vec())
            } else {
                let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut v = Vec::with_capacity(CHUNK + 8);
                while v.len() < CHUNK {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.extend_from_slice(&x.to_le_bytes());
                }
                v.truncate(CHUNK);
                Bytes::from(v)
            }
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// How hops are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// Plain TCP (the protocol alone).
    Tcp,
    /// TCP with per-job mutual TLS (production).
    Tls,
    /// One QUIC connection per hop, one stream per "connection" (production alternative).
    Quic,
}

struct Outcome {
    mb_s: f64,
    wire_ratio: f64,
}

/// Mutual TLS with an identity, nothing without (the protocol alone).
fn guard(id: Option<skyx_agent_api::AgentIdentity>) -> HopGuard {
    id.map_or(HopGuard::Open, HopGuard::Tls)
}

async fn run(
    connections: usize,
    relay: bool,
    compression: Compression,
    data: &[Bytes],
    chunks: u64,
    wire: Wire,
) -> Result<Outcome> {
    // With TLS or QUIC, every hop authenticates with a fresh job CA, as agents do in production.
    let ca = skyx_agent_api::JobCa::generate(JOB)?;
    let ids = if wire != Wire::Tcp {
        Some((ca.issue("source")?, ca.issue("relay")?, ca.issue("sink")?))
    } else {
        None
    };
    let (source_id, relay_id, sink_id) = match &ids {
        Some((a, b, c)) => (Some(a), Some(b), Some(c)),
        None => (None, None, None),
    };
    let bind = |role, id: Option<&skyx_agent_api::AgentIdentity>| {
        let id = id.cloned();
        async move {
            let addr = "127.0.0.1:0".parse()?;
            anyhow::Ok(match wire {
                Wire::Quic => {
                    HopListener::bind_quic(addr, JOB, role, None, 64, id.as_ref().unwrap()).await?
                }
                _ => HopListener::bind(addr, JOB, role, None, 64, &guard(id)).await?,
            })
        }
    };
    let connect = |addr, connections, id: Option<&skyx_agent_api::AgentIdentity>| {
        let id = id.cloned();
        async move {
            let config = HopSenderConfig {
                connections,
                ..Default::default()
            };
            anyhow::Ok(match wire {
                Wire::Quic => HopSender::connect_quic(addr, config, id.as_ref().unwrap()).await?,
                _ => HopSender::connect(addr, config, &guard(id)).await?,
            })
        }
    };
    let (sink, mut sink_rx) = bind(Role::Sink, sink_id).await?;
    let sink_task = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(d) = sink_rx.recv().await {
            n += d.raw.as_ref().map_or(0, |r| r.len() as u64);
            d.commit();
        }
        n
    });
    let mut relay_parts = None;
    let first_hop = if relay {
        let (listener, rx) = bind(Role::Relay, relay_id).await?;
        let (onward, ev) = connect(sink.local_addr, connections, relay_id).await?;
        let addr = listener.local_addr;
        let onward = skyx_agent::Fork::single(
            0,
            std::sync::Arc::new(onward),
            ev,
            std::sync::Arc::new(|_, _, _| {}),
        );
        let task = tokio::spawn(skyx_agent::relay(rx, onward));
        relay_parts = Some((listener, task));
        addr
    } else {
        sink.local_addr
    };
    let (hop, mut events) = connect(first_hop, connections, source_id).await?;
    let start = Instant::now();
    let data = data.to_vec();
    let feeder = tokio::spawn(async move {
        // Chunks are compressed two at a time on the blocking pool (one per core), in order.
        let mut encoded = futures::stream::iter(0..chunks)
            .map(|i| {
                let raw = data[(i % data.len() as u64) as usize].clone();
                let c = ChunkRef {
                    job: JOB,
                    chunk: ChunkId(i),
                    object: 0,
                    offset: i * CHUNK as u64,
                    raw_len: 0,
                    raw_crc32c: 0,
                    dests: skyx_protocol::Dests::ALL,
                };
                tokio::task::spawn_blocking(move || encode_chunk(c, raw, compression))
            })
            .buffered(2);
        let mut wire = 0u64;
        while let Some(frame) = encoded.next().await {
            let frame = frame.expect("encode");
            wire += frame.payload.len() as u64;
            hop.send(frame).await.expect("send");
        }
        hop.finish().await;
        wire
    });
    let mut acked = 0;
    while let Some(e) = events.recv().await {
        match e {
            SenderEvent::Acked(_) => acked += 1,
            other => anyhow::bail!("chunk failed: {other:?}"),
        }
    }
    let wire = feeder.await?;
    anyhow::ensure!(
        acked == chunks,
        "only {acked} of {chunks} chunks acknowledged"
    );
    if let Some((listener, task)) = relay_parts {
        listener.close();
        drop(listener);
        task.await?;
    }
    sink.close();
    drop(sink);
    let elapsed = start.elapsed().as_secs_f64();
    let received = sink_task.await?;
    let logical = chunks * CHUNK as u64;
    anyhow::ensure!(
        received == logical,
        "sink received {received} of {logical} bytes"
    );
    Ok(Outcome {
        mb_s: logical as f64 / 1e6 / elapsed,
        wire_ratio: logical as f64 / wire as f64,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut gib = 1.0f64;
    let mut out: Option<String> = None;
    // Run only this row (0-based), e.g. to measure one scenario's memory alone.
    let mut only: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gib" => gib = args.next().context("--gib N")?.parse()?,
            "--out" => out = Some(args.next().context("--out FILE")?),
            "--only" => only = Some(args.next().context("--only ROW")?.parse()?),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let chunks = ((gib * 1024.0 * 1024.0 * 1024.0) / CHUNK as f64).ceil() as u64;
    let text = make_chunks(true);
    let noise = make_chunks(false);
    let mut table = format!(
        "{:.1} GiB per row in 8 MiB chunks; source, relay and sink share the machine.\n\n\
         | path | data | compression | connections | MB/s (logical) | logical/wire |\n|---|---|---|---|---|---|\n",
        gib
    );
    let mut row_index = 0usize;
    for (relay, path) in [(false, "direct"), (true, "via relay")] {
        for (data, name) in [(&text, "text"), (&noise, "random")] {
            for (compression, cname) in
                [(Compression::Off, "off"), (Compression::Zstd(1), "zstd -1")]
            {
                for connections in [1, 8, 32] {
                    row_index += 1;
                    if only.is_some_and(|k| k != row_index - 1) {
                        continue;
                    }
                    let o = run(connections, relay, compression, data, chunks, Wire::Tcp).await?;
                    let row = format!(
                        "| {path} | {name} | {cname} | {connections} | {:.0} | {:.2} |\n",
                        o.mb_s, o.wire_ratio
                    );
                    eprint!("{row}");
                    table.push_str(&row);
                }
            }
        }
    }
    // The production transports: TCP with per-job mutual TLS, and QUIC (its own TLS 1.3).
    table.push_str(
        "\nProduction transports (per-job mutual TLS; QUIC: one connection, N streams):\n\n\
         | path | data | compression | transport | connections | MB/s (logical) |\n|---|---|---|---|---|---|\n",
    );
    for (relay, path) in [(false, "direct"), (true, "via relay")] {
        for (data, name, compression, cname) in [
            (&noise, "random", Compression::Off, "off"),
            (&text, "text", Compression::Zstd(1), "zstd -1"),
        ] {
            for (wire, wname) in [(Wire::Tls, "TCP+TLS"), (Wire::Quic, "QUIC")] {
                for connections in [1, 8, 32] {
                    row_index += 1;
                    if only.is_some_and(|k| k != row_index - 1) {
                        continue;
                    }
                    let o = run(connections, relay, compression, data, chunks, wire).await?;
                    let row = format!(
                        "| {path} | {name} | {cname} | {wname} | {connections} | {:.0} |\n",
                        o.mb_s
                    );
                    eprint!("{row}");
                    table.push_str(&row);
                }
            }
        }
    }
    table.push_str(&format!(
        "\nPeak RSS of the whole benchmark process (all three roles): {:.0} MiB.\n",
        peak_rss_mib()
    ));
    print!("{table}");
    if let Some(path) = out {
        std::fs::write(path, &table)?;
    }
    Ok(())
}
