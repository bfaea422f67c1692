//! A miniature `skyx cp`: a local directory through a relay into another directory, with every
//! real part but the gateway's async loop (played here by the test): the chunker, the tracker,
//! store reads at the source, zstd, per-job mutual TLS on both hops, the relay, verified writes
//! and multipart assembly at the sink. Every destination file must equal its source.

use std::sync::Arc;

use skyx_agent::Fork;
use skyx_agent::{
    HopGuard, HopListener, HopSender, HopSenderConfig, ObjectWriter, Wrote, read_chunk, relay,
};
use skyx_agent_api::JobCa;
use skyx_agent_api::wire::{SinkObject, SinkObjects, SourceObject, Verification};
use skyx_gateway::{
    ChunkPolicy, ObjectEntry, RouteId, Tracker, TrackerConfig, TrackerEvent, chunk_size,
    plan_chunks,
};
use skyx_protocol::{ChunkId, ChunkRef, Compression, JobId, Role, encode_chunk};
use skyx_store::local::LocalStore;
use skyx_store::{ObjectStore, PartReceipt, RetryPolicy};
use tokio::sync::mpsc;

const JOB: JobId = JobId(11);
const MIB: u64 = 1024 * 1024;

fn contents(i: usize, len: usize) -> Vec<u8> {
    if i.is_multiple_of(2) {
        let line = format!("{i},azure:westeurope,{}\n", i * 13);
        line.repeat(len / line.len() + 1).as_bytes()[..len].to_vec()
    } else {
        let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_crosses_a_tls_relay_byte_identical() {
    let base = std::env::temp_dir().join(format!("skyx-mini-cp-{}", std::process::id()));
    let (src_dir, dst_dir) = (base.join("src"), base.join("dst"));
    std::fs::create_dir_all(src_dir.join("nested/deeper")).unwrap();
    std::fs::create_dir_all(&dst_dir).unwrap();
    let mut files: Vec<(String, usize)> = vec![
        ("empty".into(), 0),
        ("one-byte".into(), 1),
        ("nested/deeper/big.bin".into(), 40 * MIB as usize + 123),
    ];
    files.extend((0..300).map(|i| (format!("nested/small-{i:03}"), 1000 + i)));
    for (i, (rel, len)) in files.iter().enumerate() {
        std::fs::write(src_dir.join(rel), contents(i, *len)).unwrap();
    }

    // Gateway: chunk the copy.
    let policy = ChunkPolicy {
        target: 8 * MIB,
        min_part: 1,
        max_parts: 10_000,
    };
    let entries: Vec<ObjectEntry> = files
        .iter()
        .map(|(rel, len)| ObjectEntry {
            key: rel.clone(),
            size: *len as u64,
        })
        .collect();
    let specs = plan_chunks(&entries, &policy).unwrap();
    let root = |d: &std::path::Path| d.to_str().unwrap().trim_start_matches('/').to_string();
    // What the gateway tells the source (with each dispatch) and the sink of each object.
    let sources: Vec<SourceObject> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| SourceObject {
            object: i as u32,
            src_key: format!("{}/{}", root(&src_dir), e.key),
            size: e.size,
            version: None,
        })
        .collect();
    let sinks: Vec<SinkObject> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| SinkObject {
            object: i as u32,
            dst_key: format!("{}/{}", root(&dst_dir), e.key),
            size: e.size,
            chunk_size: chunk_size(e.size, &policy),
            properties: Default::default(),
            upload: None,
        })
        .collect();
    let ca = JobCa::generate(JOB).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(RetryPolicy::default()));

    // Sink: verify, write, report landed chunks (with their part receipts) to the gateway,
    // which opened every multi-chunk object's upload and will complete it.
    let writer = Arc::new(ObjectWriter::new(store.clone()));
    let mut uploads = std::collections::HashMap::new();
    let mut register = SinkObjects::default();
    for (i, o) in sinks.iter().enumerate() {
        let mut o = o.clone();
        if o.size > o.chunk_size {
            let up = store.create_multipart(&o.dst_key).await.unwrap();
            o.upload = Some(up.upload_id.clone());
            uploads.insert(i as u32, up);
        }
        register.add.push(o);
    }
    writer.update(register);
    let (landed_tx, mut landed_rx) =
        mpsc::unbounded_channel::<(ChunkId, u32, Option<PartReceipt>)>();
    let sink_id = ca.issue("sink").unwrap();
    let (sink, mut sink_rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        16,
        &HopGuard::Tls(sink_id.clone()),
    )
    .await
    .unwrap();
    let sink_writer = writer.clone();
    tokio::spawn(async move {
        while let Some(d) = sink_rx.recv().await {
            let c = d.frame.chunk;
            match sink_writer
                .write(c.object, c.offset, d.raw.clone().unwrap(), c.raw_crc32c)
                .await
            {
                Ok(wrote) => {
                    d.commit();
                    let receipt = match wrote {
                        Wrote::Part(r) => Some(r),
                        // A local file is read back by the sink.
                        Wrote::Whole(v) => {
                            assert_eq!(v, Verification::ReadBack);
                            None
                        }
                    };
                    let _ = landed_tx.send((c.chunk, c.object, receipt));
                }
                Err(_) => d.fail(),
            }
        }
    });

    // Relay.
    let relay_id = ca.issue("relay").unwrap();
    let (relay_listener, relay_rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Relay,
        None,
        16,
        &HopGuard::Tls(relay_id.clone()),
    )
    .await
    .unwrap();
    let (onward, onward_events) = HopSender::connect(
        sink.local_addr,
        HopSenderConfig {
            connections: 4,
            ..Default::default()
        },
        &HopGuard::Tls(relay_id.clone()),
    )
    .await
    .unwrap();
    tokio::spawn(relay(
        relay_rx,
        Fork::single(0, Arc::new(onward), onward_events, Arc::new(|_, _, _| {})),
    ));

    // Source: read, compress, send everything the tracker dispatches.
    let mut tracker = Tracker::with_chunks(&specs, TrackerConfig::default());
    let batch = tracker.poll_dispatch(RouteId(0), usize::MAX, std::time::Instant::now());
    assert_eq!(batch.len(), specs.len());
    let source_id = ca.issue("source").unwrap();
    let (source, mut source_events) = HopSender::connect(
        relay_listener.local_addr,
        HopSenderConfig {
            connections: 3,
            ..Default::default()
        },
        &HopGuard::Tls(source_id.clone()),
    )
    .await
    .unwrap();
    tokio::spawn(async move { while source_events.recv().await.is_some() {} });
    let source_store = store.clone();
    let source_objects = sources.clone();
    tokio::spawn(async move {
        for spec in batch {
            let object = &source_objects[spec.object as usize];
            let raw = read_chunk(source_store.as_ref(), object, spec.offset, spec.len)
                .await
                .unwrap();
            let c = ChunkRef {
                job: JOB,
                chunk: spec.id,
                object: spec.object,
                offset: spec.offset,
                raw_len: 0,
                raw_crc32c: 0,
                dests: skyx_protocol::Dests::ALL,
            };
            source
                .send(encode_chunk(c, raw, Compression::Zstd(1)))
                .await
                .unwrap();
        }
        source.finish().await;
    });

    // Gateway loop: landed chunks complete objects.
    let mut completed = 0;
    let mut receipts: std::collections::HashMap<u32, Vec<PartReceipt>> = Default::default();
    while !tracker.is_done() {
        let (chunk, object, receipt) =
            tokio::time::timeout(std::time::Duration::from_secs(60), landed_rx.recv())
                .await
                .expect("progress")
                .unwrap();
        receipts.entry(object).or_default().extend(receipt);
        tracker.handle_landed(chunk);
        while let Some(e) = tracker.poll_event() {
            match e {
                TrackerEvent::ObjectComplete { object } => {
                    if let Some(up) = uploads.get(&object) {
                        let mut parts = receipts.remove(&object).unwrap_or_default();
                        parts.sort_by_key(|p| p.part_number);
                        store.complete_multipart(up, parts).await.unwrap();
                    }
                    completed += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(completed, files.len());

    for (i, (rel, len)) in files.iter().enumerate() {
        let got = std::fs::read(dst_dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(got.len(), *len, "{rel}");
        assert!(got == contents(i, *len), "{rel} differs from its source");
    }
    // Nothing but the copied files at the destination: no staging or temp files left.
    let mut count = 0;
    let mut stack = vec![dst_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                assert!(
                    !e.file_name().to_string_lossy().starts_with(".skyx-"),
                    "leftover {:?}",
                    e.path()
                );
                count += 1;
            }
        }
    }
    assert_eq!(count, files.len());
    std::fs::remove_dir_all(&base).unwrap();
}
