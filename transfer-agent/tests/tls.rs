//! Data connections are mutual TLS with a per-job CA: peers of the job exchange chunks; anyone
//! else — another job's agent, a plaintext client — is refused before data is read.

use std::time::Duration;

use bytes::Bytes;
use skyx_agent::{HopError, HopGuard, HopListener, HopSender, HopSenderConfig};
use skyx_agent_api::JobCa;
use skyx_protocol::{ChunkId, ChunkRef, Compression, JobId, Role, SenderEvent, encode_chunk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JOB: JobId = JobId(42);

fn frame(i: u64) -> skyx_protocol::DataFrame {
    let raw = Bytes::from(format!("chunk {i} ").repeat(10_000));
    let c = ChunkRef {
        job: JOB,
        chunk: ChunkId(i),
        object: 0,
        offset: 0,
        raw_len: 0,
        raw_crc32c: 0,
        dests: skyx_protocol::Dests::ALL,
    };
    encode_chunk(c, raw, Compression::Zstd(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_the_job_exchange_chunks_over_mutual_tls() {
    let ca = JobCa::generate(JOB).unwrap();
    let sink_id = ca.issue("sink").unwrap();
    let source_id = ca.issue("source").unwrap();
    let (sink, mut rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        16,
        &HopGuard::Tls(sink_id.clone()),
    )
    .await
    .unwrap();
    let collector = tokio::spawn(async move {
        let mut n = 0;
        while let Some(d) = rx.recv().await {
            assert!(d.raw.as_ref().unwrap().starts_with(b"chunk "));
            n += 1;
            d.commit();
        }
        n
    });
    let (hop, mut events) = HopSender::connect(
        sink.local_addr,
        HopSenderConfig {
            connections: 4,
            ..Default::default()
        },
        &HopGuard::Tls(source_id.clone()),
    )
    .await
    .unwrap();
    let feeder = tokio::spawn(async move {
        for i in 0..40 {
            hop.send(frame(i)).await.unwrap();
        }
        hop.finish().await;
    });
    let mut acked = 0;
    while let Some(e) = events.recv().await {
        assert!(matches!(e, SenderEvent::Acked(_)), "{e:?}");
        acked += 1;
    }
    feeder.await.unwrap();
    assert_eq!(acked, 40);
    sink.close();
    drop(sink);
    assert_eq!(collector.await.unwrap(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_job_is_refused_both_ways() {
    let ours = JobCa::generate(JOB).unwrap();
    let theirs = JobCa::generate(JobId(43)).unwrap();
    let (sink, mut rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        16,
        &HopGuard::Tls(ours.issue("sink").unwrap()),
    )
    .await
    .unwrap();
    // A client with another job's certificate: the handshake fails (it does not trust our CA,
    // and we do not trust its certificate).
    let stranger = theirs.issue("stranger").unwrap();
    let err = HopSender::connect(
        sink.local_addr,
        HopSenderConfig {
            connections: 1,
            ..Default::default()
        },
        &HopGuard::Tls(stranger.clone()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HopError::Handshake { .. }), "{err}");
    // Nothing reached the agent.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err()
    );

    // A listener of another job refuses our agent the same way.
    let (other_sink, _other_rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JobId(43),
        Role::Sink,
        None,
        16,
        &HopGuard::Tls(theirs.issue("sink").unwrap()),
    )
    .await
    .unwrap();
    let ours_client = ours.issue("source").unwrap();
    let err = HopSender::connect(
        other_sink.local_addr,
        HopSenderConfig {
            connections: 1,
            ..Default::default()
        },
        &HopGuard::Tls(ours_client.clone()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HopError::Handshake { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_gets_no_data_path() {
    let ca = JobCa::generate(JOB).unwrap();
    let (sink, mut rx) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        16,
        &HopGuard::Tls(ca.issue("sink").unwrap()),
    )
    .await
    .unwrap();
    // Raw protocol frames without TLS: the listener's handshake fails on them and it hangs up.
    let mut tcp = tokio::net::TcpStream::connect(sink.local_addr)
        .await
        .unwrap();
    tcp.write_all(&skyx_protocol::Frame::Data(frame(1)).to_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the listener answers or closes");
    assert!(
        matches!(n, Ok(0) | Err(_)) || !buf.starts_with(b"SKX1"),
        "no protocol reply to a plaintext peer"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "nothing delivered"
    );
}
