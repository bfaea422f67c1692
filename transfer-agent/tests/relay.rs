//! Chunks from a source through a relay to a sink over loopback TCP, many connections per hop.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_agent::Fork;
use skyx_agent::{HopGuard, HopListener, HopSender, HopSenderConfig, relay};
use skyx_protocol::{
    ChunkId, ChunkRef, Compression, DataFrame, JobId, Role, SenderEvent, encode_chunk,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const JOB: JobId = JobId(5);

fn chunks(n: u64) -> Vec<(DataFrame, Bytes)> {
    let mut rng = SmallRng::seed_from_u64(9);
    (0..n)
        .map(|i| {
            let len = rng.random_range(0..300_000);
            let raw: Bytes = if i % 3 == 0 {
                (0..len)
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<u8>>()
                    .into()
            } else {
                let line = format!("{i},gcp:us-central1-a,{}\n", i * 31);
                line.repeat(len / line.len() + 1).as_bytes()[..len]
                    .to_vec()
                    .into()
            };
            let c = ChunkRef {
                job: JOB,
                chunk: ChunkId(i),
                object: 0,
                offset: 0,
                raw_len: 0,
                raw_crc32c: 0,
                dests: skyx_protocol::Dests::ALL,
            };
            (encode_chunk(c, raw.clone(), Compression::Zstd(1)), raw)
        })
        .collect()
}

/// Starts a sink; returns its address and a task yielding every chunk it received.
async fn sink() -> (
    SocketAddr,
    tokio::task::JoinHandle<HashMap<ChunkId, (Bytes, u32)>>,
    HopListener,
) {
    let (listener, mut rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        32,
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let addr = listener.local_addr;
    let task = tokio::spawn(async move {
        let mut got: HashMap<ChunkId, (Bytes, u32)> = HashMap::new();
        while let Some(d) = rx.recv().await {
            let e = got
                .entry(d.frame.chunk.chunk)
                .or_insert((d.raw.clone().unwrap(), 0));
            e.1 += 1;
            d.commit();
        }
        got
    });
    (addr, task, listener)
}

/// Starts a relay forwarding to `next` over `connections` connections.
async fn start_relay(
    next: SocketAddr,
    connections: usize,
) -> (SocketAddr, HopListener, tokio::task::JoinHandle<()>) {
    let (listener, rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Relay,
        None,
        32,
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let addr = listener.local_addr;
    let (onward, events) = HopSender::connect(
        next,
        HopSenderConfig {
            connections,
            ..Default::default()
        },
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let task = tokio::spawn(relay(
        rx,
        Fork::single(0, Arc::new(onward), events, Arc::new(|_, _, _| {})),
    ));
    (addr, listener, task)
}

async fn send_all(to: SocketAddr, connections: usize, data: &[(DataFrame, Bytes)]) -> (u64, u64) {
    let (hop, mut events) = HopSender::connect(
        to,
        HopSenderConfig {
            connections,
            ..Default::default()
        },
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let frames: Vec<DataFrame> = data.iter().map(|(f, _)| f.clone()).collect();
    let feeder = tokio::spawn(async move {
        for f in frames {
            hop.send(f).await.unwrap();
        }
        hop.finish().await;
    });
    let (mut acked, mut gave_up) = (0, 0);
    while let Some(e) = events.recv().await {
        match e {
            SenderEvent::Acked(_) => acked += 1,
            SenderEvent::GaveUp { .. } => gave_up += 1,
        }
    }
    feeder.await.unwrap();
    (acked, gave_up)
}

/// Sends `data` to `to` over 2 connections until the hop goes down; returns the chunks
/// acknowledged and those given up.
async fn send_until_down(
    to: SocketAddr,
    data: &[(DataFrame, Bytes)],
) -> (HashSet<ChunkId>, HashSet<ChunkId>) {
    let (hop, mut events) = HopSender::connect(
        to,
        HopSenderConfig {
            connections: 2,
            ..Default::default()
        },
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let frames: Vec<DataFrame> = data.iter().map(|(f, _)| f.clone()).collect();
    let feeder = tokio::spawn(async move {
        for f in frames {
            if hop.send(f).await.is_err() {
                break;
            }
        }
        hop.finish().await;
    });
    let (mut acked, mut gave_up) = (HashSet::new(), HashSet::new());
    while let Some(e) = events.recv().await {
        match e {
            SenderEvent::Acked(c) => acked.insert(c),
            SenderEvent::GaveUp { chunk, .. } => gave_up.insert(chunk),
        };
    }
    feeder.await.unwrap();
    (acked, gave_up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_cross_a_relay_intact_and_once() {
    let data = chunks(200);
    let (sink_addr, collected, sink_listener) = sink().await;
    let (relay_addr, relay_listener, relay_task) = start_relay(sink_addr, 4).await;
    let (acked, gave_up) = send_all(relay_addr, 3, &data).await;
    assert_eq!((acked, gave_up), (200, 0));
    // Closing the relay's listener ends its input once the source's connections are gone.
    relay_listener.close();
    drop(relay_listener);
    relay_task.await.unwrap();
    sink_listener.close();
    drop(sink_listener);
    let got = collected.await.unwrap();
    assert_eq!(got.len(), 200);
    for (f, raw) in &data {
        let (bytes, times) = &got[&f.chunk.chunk];
        assert_eq!(bytes, raw, "chunk {:?} differs", f.chunk.chunk);
        assert_eq!(
            *times, 1,
            "chunk {:?} delivered {times} times",
            f.chunk.chunk
        );
    }
}

/// A TCP proxy that cuts connections after `cut_after` bytes from the client: only the first
/// one, or every one. Returns its address and how many connections it has cut.
async fn cutting_proxy(
    target: SocketAddr,
    cut_after: usize,
    cut_all: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cuts = Arc::new(AtomicUsize::new(0));
    let counter = cuts.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let cut_this = std::mem::replace(&mut first, false) || cut_all;
            let limit = if cut_this { Some(cut_after) } else { None };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut total = 0;
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        total += n;
                        if limit.is_some_and(|l| total > l) {
                            counter.fetch_add(1, Ordering::SeqCst);
                            break; // cut: drop both directions
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    (addr, cuts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_on_a_cut_connection_move_to_the_others() {
    // Incompressible chunks only (every third one `chunks` makes), so each connection's share
    // is sure to cross the cut threshold, however dispatch happens to interleave.
    let data: Vec<_> = chunks(360)
        .into_iter()
        .filter(|(f, _)| f.chunk.chunk.0 % 3 == 0)
        .collect();
    assert_eq!(data.len(), 120);
    let (sink_addr, collected, sink_listener) = sink().await;
    let (proxy, cuts) = cutting_proxy(sink_addr, 500_000, false).await;
    let (acked, gave_up) = send_all(proxy, 3, &data).await;
    assert_eq!(
        cuts.load(Ordering::SeqCst),
        1,
        "the first connection was cut mid-transfer"
    );
    assert_eq!(
        (acked, gave_up),
        (120, 0),
        "the two surviving connections carry everything"
    );
    sink_listener.close();
    drop(sink_listener);
    let got = collected.await.unwrap();
    for (f, raw) in &data {
        assert_eq!(&got[&f.chunk.chunk].0, raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_dies_all_chunks_are_given_up_not_lost() {
    let data = chunks(50);
    let (sink_addr, collected, sink_listener) = sink().await;
    // Every connection is cut after 200 KB: the hop cannot finish on its own.
    let (proxy, cuts) = cutting_proxy(sink_addr, 200_000, true).await;
    let (acked, gave_up) = send_until_down(proxy, &data).await;
    assert_eq!(cuts.load(Ordering::SeqCst), 2);
    assert!(
        !gave_up.is_empty(),
        "with every connection cut, some chunks cannot be delivered"
    );
    assert!(acked.is_disjoint(&gave_up));
    assert_eq!(
        acked.len() + gave_up.len(),
        50,
        "every chunk is either acknowledged or reported given up"
    );
    sink_listener.close();
    drop(sink_listener);
    // Whatever the sink received intact is exactly what was acknowledged or more, never less.
    let got = collected.await.unwrap();
    assert!(acked.iter().all(|c| got.contains_key(c)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_reports_every_chunk_its_next_hop_could_not_take() {
    let data = chunks(50);
    let (sink_addr, collected, sink_listener) = sink().await;
    // Every connection from the relay onward is cut after 200 KB, as a link taken down would.
    let (proxy, _cuts) = cutting_proxy(sink_addr, 200_000, true).await;
    let (listener, rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Relay,
        None,
        32,
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let relay_addr = listener.local_addr;
    let (onward, onward_events) = HopSender::connect(
        proxy,
        HopSenderConfig {
            connections: 2,
            ..Default::default()
        },
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let reported = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let sink_of_reports = reported.clone();
    let relay_task = tokio::spawn(relay(
        rx,
        Fork::single(
            0,
            Arc::new(onward),
            onward_events,
            Arc::new(move |_, _, e| {
                if let SenderEvent::GaveUp { chunk, .. } = e {
                    sink_of_reports.lock().unwrap().insert(chunk);
                }
            }),
        ),
    ));
    // The source: what the relay acknowledged, it took responsibility for.
    let (taken, _) = send_until_down(relay_addr, &data).await;
    listener.close();
    drop(listener);
    relay_task.await.unwrap();
    sink_listener.close();
    drop(sink_listener);
    let got = collected.await.unwrap();
    let reported = reported.lock().unwrap().clone();
    assert!(
        !reported.is_empty(),
        "with its links cut, the relay reported nothing"
    );
    // Nothing the relay took is lost in silence: it reached the sink or was reported.
    for c in &taken {
        assert!(
            got.contains_key(c) || reported.contains(c),
            "chunk {c:?} was taken by the relay, never delivered and never reported"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_its_sink_refused_crosses_the_relay_again_only_under_a_new_wire_id() {
    // A sink that refuses the first chunk it gets (a store in an outage), takes the rest.
    let (sink_listener, mut deliveries) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        8,
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let (landed_tx, mut landed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut refused_one = false;
        while let Some(d) = deliveries.recv().await {
            let id = d.frame.chunk.chunk;
            if !std::mem::replace(&mut refused_one, true) {
                d.refuse();
            } else {
                let _ = landed_tx.send(id);
                d.commit();
            }
        }
    });
    let (relay_addr, _relay_listener, _relay) = start_relay(sink_listener.local_addr, 1).await;
    let (hop, mut events) = HopSender::connect(
        relay_addr,
        HopSenderConfig {
            connections: 1,
            ..Default::default()
        },
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let (frame, _) = chunks(1).remove(0);
    let again = |id: u64| {
        let mut f = frame.clone();
        f.chunk.chunk = ChunkId(id);
        f
    };
    // The relay takes the chunk (and acknowledges it); its sink refuses it.
    hop.send(again(0)).await.unwrap();
    assert!(matches!(
        events.recv().await,
        Some(SenderEvent::Acked(ChunkId(0)))
    ));
    // Sent again under the same id, the relay takes it for a duplicate of a chunk it already
    // forwarded: acknowledged, sent nowhere. This is why the gateway dispatches a chunk again
    // under a new wire id (the attempt in its top bits).
    hop.send(again(0)).await.unwrap();
    assert!(matches!(
        events.recv().await,
        Some(SenderEvent::Acked(ChunkId(0)))
    ));
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(500), landed.recv()).await;
    assert!(
        nothing.is_err(),
        "the duplicate reached the sink: {nothing:?}"
    );
    // Under a new id it crosses the relay and lands.
    let retry = 2 << 48;
    hop.send(again(retry)).await.unwrap();
    assert!(matches!(events.recv().await, Some(SenderEvent::Acked(ChunkId(id))) if id == retry));
    assert_eq!(landed.recv().await, Some(ChunkId(retry)));
}
