//! What crosses the wire. Data plane: chunks sealed end to end through a relay that holds no
//! key, over hops opened by the hop handshake — what a relay and a sniffer on the link see,
//! what a tampering relay achieves, what a stranger at a data port gets. Control plane: a whole
//! copy whose every gateway↔agent byte is recorded shows no token, key, setting or content.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use skyx_agent::{
    Delivery, Fork, HopError, HopGuard, HopKey, HopListener, HopSender, HopSenderConfig, relay,
};
use skyx_agent_api::Secret;
use skyx_protocol::{
    ChunkId, ChunkKey, ChunkRef, Compression, DataFrame, Frame, JobId, Role, SenderEvent,
    encode_chunk, seal_chunk,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const JOB: JobId = JobId(77);
/// Plaintext no sealed byte stream may show.
const SECRET_LINE: &str = "patient-7731,diagnosis=confidential,";

fn hop_guard(byte: u8) -> HopGuard {
    HopGuard::Handshake(Arc::new(HopKey::new(JOB, &Secret([byte; 32]))))
}

fn chunk_key() -> Arc<ChunkKey> {
    Arc::new(ChunkKey::new(&[3; 32]))
}

fn raw(i: u64) -> Bytes {
    format!("{SECRET_LINE}{i}\n").repeat(3000).into()
}

fn sealed(i: u64, compression: Compression) -> DataFrame {
    let c = ChunkRef {
        job: JOB,
        chunk: ChunkId(i),
        object: 0,
        offset: i * 1_000_000,
        raw_len: 0,
        raw_crc32c: 0,
        dests: skyx_protocol::Dests::ALL,
    };
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&i.to_le_bytes());
    seal_chunk(encode_chunk(c, raw(i), compression), &chunk_key(), nonce)
}

fn config(connections: usize) -> HopSenderConfig {
    HopSenderConfig {
        connections,
        ..Default::default()
    }
}

/// A TCP forwarder between two agents that records every byte crossing it, both ways.
async fn sniffer(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (inbound, _) = listener.accept().await.unwrap();
            let outbound = TcpStream::connect(to).await.unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut r, mut w) in [
                (
                    Box::new(ri) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                ),
                (Box::new(ro), Box::new(wi)),
            ] {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = w.shutdown().await;
                });
            }
        }
    });
    (addr, seen)
}

/// What a relay saw arrive, and what its onward hop reported.
type Seen = (Arc<Mutex<Vec<DataFrame>>>, Arc<Mutex<Vec<SenderEvent>>>);

/// A relay that lets the test look at (and alter) every delivery before forwarding it.
async fn relay_through(next: SocketAddr, alter: fn(&mut DataFrame)) -> (HopListener, Seen) {
    let (listener, mut rx) = HopListener::bind(local(), JOB, Role::Relay, None, 32, &hop_guard(1))
        .await
        .unwrap();
    let (onward, events) = HopSender::connect(next, config(2), &hop_guard(1))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let onward_events = Arc::new(Mutex::new(Vec::new()));
    let (tx, forwarded) = mpsc::channel::<Delivery>(32);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(mut d) = rx.recv().await {
            log.lock().unwrap().push(d.frame.clone());
            alter(&mut d.frame);
            // A relay that alters a chunk also gives it a hop checksum that matches: only the
            // seal can tell.
            d.frame.payload_crc32c = None;
            if tx.send(d).await.is_err() {
                break;
            }
        }
    });
    let log = onward_events.clone();
    tokio::spawn(relay(
        forwarded,
        Fork::single(
            0,
            Arc::new(onward),
            events,
            Arc::new(move |_, _, e| log.lock().unwrap().push(e)),
        ),
    ));
    (listener, (seen, onward_events))
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A sink holding the chunk key; yields the raw bytes of every chunk it took.
async fn start_sink() -> (HopListener, tokio::task::JoinHandle<Vec<(ChunkId, Bytes)>>) {
    let (listener, mut rx) = HopListener::bind(
        local(),
        JOB,
        Role::Sink,
        Some(chunk_key()),
        32,
        &hop_guard(1),
    )
    .await
    .unwrap();
    let task = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(d) = rx.recv().await {
            got.push((d.frame.chunk.chunk, d.raw.clone().unwrap()));
            d.commit();
        }
        got
    });
    (listener, task)
}

/// Sends `frames` to `to` and returns the events the hop reported.
async fn send(to: SocketAddr, frames: Vec<DataFrame>, attempts: u32) -> Vec<SenderEvent> {
    let mut c = config(2);
    c.sender.max_attempts = attempts;
    let (hop, mut events) = HopSender::connect(to, c, &hop_guard(1)).await.unwrap();
    tokio::spawn(async move {
        for f in frames {
            hop.send(f).await.unwrap();
        }
        hop.finish().await;
    });
    let mut got = Vec::new();
    while let Some(e) = events.recv().await {
        got.push(e);
    }
    got
}

fn shows(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_and_a_sniffer_see_only_ciphertext_and_the_sink_gets_every_byte() {
    let (sink, got) = start_sink().await;
    let (tap_sink, sink_side) = sniffer(sink.local_addr).await;
    let (relay, (relay_saw, _)) = relay_through(tap_sink, |_| {}).await;
    let (tap_relay, source_side) = sniffer(relay.local_addr).await;
    let frames: Vec<DataFrame> = (0..12)
        .map(|i| {
            sealed(
                i,
                if i % 2 == 0 {
                    Compression::Off
                } else {
                    Compression::Zstd(1)
                },
            )
        })
        .collect();
    let events = send(tap_relay, frames, 3).await;
    assert_eq!(events.len(), 12);
    assert!(
        events.iter().all(|e| matches!(e, SenderEvent::Acked(_))),
        "{events:?}"
    );
    relay.close();
    drop(relay);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.close();
    drop(sink);
    let mut got = tokio::time::timeout(Duration::from_secs(10), got)
        .await
        .unwrap()
        .unwrap();
    got.sort_by_key(|(c, _)| *c);
    assert_eq!(got.len(), 12);
    for (c, bytes) in &got {
        assert_eq!(bytes, &raw(c.0), "chunk {c:?} lands as the source read it");
    }
    for frame in relay_saw.lock().unwrap().iter() {
        assert!(frame.sealed);
        assert!(
            !shows(&frame.payload, SECRET_LINE.as_bytes()),
            "the relay reads no plaintext"
        );
        assert_eq!(frame.chunk.raw_crc32c, 0, "nor a checksum of it");
    }
    for (side, seen) in [("source-relay", source_side), ("relay-sink", sink_side)] {
        let seen = seen.lock().unwrap();
        assert!(
            seen.len() > 12 * 1000,
            "{side}: the link carried the chunks"
        );
        assert!(
            !shows(&seen, SECRET_LINE.as_bytes()),
            "{side}: plaintext on the link"
        );
        assert!(!shows(&seen, &[1u8; 32]), "{side}: the hop key on the link");
        assert!(
            !shows(&seen, &[3u8; 32]),
            "{side}: the chunk key on the link"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_alters_a_chunk_gets_it_refused_not_written() {
    let (sink, got) = start_sink().await;
    let (relay, (_, relay_heard)) = relay_through(sink.local_addr, |f| {
        let mut p = f.payload.to_vec();
        p[20] ^= 1;
        f.payload = p.into();
    })
    .await;
    let (tamper_sink, tampered_got) = start_sink().await;
    let (moving_relay, (_, moving_heard)) =
        relay_through(tamper_sink.local_addr, |f| f.chunk.offset += 1).await;
    for (relay, heard, sink, got) in [
        (relay, relay_heard, sink, got),
        (moving_relay, moving_heard, tamper_sink, tampered_got),
    ] {
        send(relay.local_addr, vec![sealed(1, Compression::Off)], 2).await;
        // The relay took it (and acknowledged it upstream); the sink never does, and the
        // relay's hop gives it up after its attempts (the gateway then sends it again).
        let gave_up = async {
            loop {
                if let Some(e) = heard.lock().unwrap().first() {
                    return e.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let first = tokio::time::timeout(Duration::from_secs(60), gave_up)
            .await
            .unwrap();
        assert!(
            matches!(
                first,
                SenderEvent::GaveUp {
                    chunk: ChunkId(1),
                    ..
                }
            ),
            "an altered chunk is never acknowledged by the sink: {first:?}"
        );
        assert!(sink.corrupt_chunks() >= 1, "the sink saw it fail its seal");
        sink.close();
        drop(sink);
        drop(relay);
        let got = tokio::time::timeout(Duration::from_secs(10), got)
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_empty(), "nothing altered was written: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_at_a_data_port_gets_nothing_in_and_nothing_out() {
    let (sink, got) = start_sink().await;
    // Without the hop key: the handshake fails both ways.
    let err = HopSender::connect(sink.local_addr, config(1), &hop_guard(2))
        .await
        .unwrap_err();
    assert!(matches!(err, HopError::HopHandshake { .. }), "{err}");
    // Frames straight at the port, with no handshake: the listener hangs up without a word.
    let mut tcp = TcpStream::connect(sink.local_addr).await.unwrap();
    tcp.write_all(&Frame::Data(sealed(1, Compression::Off)).to_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf))
        .await
        .expect("the listener hangs up");
    assert!(matches!(n, Ok(0) | Err(_)), "no reply to a stranger: {n:?}");
    // A listener of the job, reached by an agent of the job with an unsealed chunk: refused.
    let c = ChunkRef {
        job: JOB,
        chunk: ChunkId(9),
        object: 0,
        offset: 0,
        raw_len: 0,
        raw_crc32c: 0,
        dests: skyx_protocol::Dests::ALL,
    };
    let clear = encode_chunk(c, raw(9), Compression::Off);
    let events = send(sink.local_addr, vec![clear], 2).await;
    assert!(
        events.iter().all(|e| !matches!(e, SenderEvent::Acked(_))),
        "{events:?}"
    );
    sink.close();
    drop(sink);
    let got = tokio::time::timeout(Duration::from_secs(10), got)
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
}

/// Agents of the in-process provider whose control ports sit behind [`sniffer`]s: every byte
/// the gateway and its agents exchange is recorded, and so is every launch token.
#[derive(Debug, Default)]
struct SniffedControl {
    agents: skyx_agent::in_process::InProcessProvider,
    seen: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    tokens: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl skyx_provision::Provider for SniffedControl {
    fn name(&self) -> &str {
        "sniffed"
    }

    async fn launch(
        &self,
        req: skyx_provision::LaunchRequest,
    ) -> Result<skyx_provision::LaunchedAgent, skyx_provision::ProviderError> {
        self.tokens.lock().unwrap().push(req.token.clone());
        let mut agent = self.agents.launch(req).await?;
        let (tap, seen) = sniffer(agent.control).await;
        self.seen.lock().unwrap().push(seen);
        agent.control = tap;
        Ok(agent)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_shows_the_control_link_no_token_key_setting_or_content() {
    use skyx_gateway::{AgentSlot, CopyJob, CopyOptions, ObjectFilter, RouteSpec, Topology};
    let dir = std::env::temp_dir().join(format!("skyx-on-the-wire-{}", std::process::id()));
    let (src_dir, dst_dir) = (dir.join("src"), dir.join("dst"));
    std::fs::create_dir_all(&src_dir).unwrap();
    std::fs::create_dir_all(&dst_dir).unwrap();
    std::fs::write(src_dir.join("records.csv"), raw(1)).unwrap();
    let url =
        |d: &std::path::Path| skyx_store::ObjectUrl::parse(&format!("{}/", d.display())).unwrap();
    let config = skyx_store::StoreConfig::default();
    let src = skyx_store::open(&url(&src_dir), &config).await.unwrap();
    let dst = skyx_store::open(&url(&dst_dir), &config).await.unwrap();
    let listing = skyx_gateway::list_copy(
        src.as_ref(),
        &url(&src_dir),
        &url(&dst_dir),
        true,
        &ObjectFilter::default(),
    )
    .await
    .unwrap();
    let slot = |region: &str| AgentSlot {
        region: region.into(),
        index: 0,
    };
    let job = CopyJob {
        src_store: "file:///".into(),
        dst_store: "file:///".into(),
        src_settings: None,
        dst_settings: None,
        dst_write: Default::default(),
        broadcast: None,
        topology: Topology {
            agents: vec![slot("test:src"), slot("test:relay"), slot("test:dst")],
            routes: vec![RouteSpec::chain(vec![0, 1, 2], vec![2, 2], 1.0)],
        },
        options: CopyOptions::default(),
        pricing: Default::default(),
    };
    let provider = SniffedControl::default();
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    skyx_gateway::run_copy(
        &job,
        skyx_gateway::items_of(listing.items),
        &provider,
        src,
        dst,
        &mut |_| {},
        cancel,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(dst_dir.join("records.csv")).unwrap(), raw(1));
    let _ = std::fs::remove_dir_all(&dir);

    let seen: Vec<Vec<u8>> = provider
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.lock().unwrap().clone())
        .collect();
    assert_eq!(seen.len(), 3, "one control link per agent");
    for (i, link) in seen.iter().enumerate() {
        assert!(link.len() > 1000, "link {i} carried the job");
        for token in provider.tokens.lock().unwrap().iter() {
            assert!(
                !shows(link, token.as_bytes()),
                "link {i}: a launch token in the clear"
            );
        }
        // What the job and its requests would show in the clear: the JSON of the keys and
        // identities, the stores and the objects' names, and the content.
        for clear in [
            "hop_key",
            "chunk_key",
            "identity",
            "file:///",
            "records.csv",
            "/v1/",
        ] {
            assert!(
                !shows(link, clear.as_bytes()),
                "link {i}: {clear:?} in the clear"
            );
        }
        assert!(
            !shows(link, SECRET_LINE.as_bytes()),
            "link {i}: content in the clear"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_who_connect_and_say_nothing_hold_a_bounded_number_of_slots() {
    let (sink, _got) = start_sink().await;
    // As many silent strangers as the listener lets prove themselves at once.
    let mut strangers = Vec::new();
    for _ in 0..skyx_agent::MAX_HANDSHAKING {
        strangers.push(TcpStream::connect(sink.local_addr).await.unwrap());
    }
    let addr = sink.local_addr;
    let mut peer =
        tokio::spawn(async move { HopSender::connect(addr, config(1), &hop_guard(1)).await });
    // While they hold every slot, the listener takes no one else in (the peer's connection
    // waits in the kernel's backlog, its handshake unanswered).
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut peer).await;
    assert!(
        waited.is_err(),
        "a peer got in past {} silent strangers",
        skyx_agent::MAX_HANDSHAKING
    );
    // Once they leave, it gets in.
    drop(strangers);
    let joined = tokio::time::timeout(Duration::from_secs(30), peer).await;
    let connected = joined
        .expect("the peer got in once the strangers left")
        .unwrap();
    assert!(connected.is_ok(), "{:?}", connected.err());
}
