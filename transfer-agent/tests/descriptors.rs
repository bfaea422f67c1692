//! A hop listener under descriptor pressure: while the process is out of file descriptors its
//! accepts fail (EMFILE); once descriptors free up it must serve new connections again, not
//! have stopped for good. A test binary of its own: it lowers the process's open-files limit.

use std::time::Duration;

use bytes::Bytes;
use skyx_agent::{HopGuard, HopListener, HopSender, HopSenderConfig};
use skyx_protocol::{ChunkId, ChunkRef, Compression, JobId, Role, encode_chunk};
use tokio::net::TcpStream;

const JOB: JobId = JobId(11);

/// Descriptors open in this process now.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_out_of_descriptors_serves_again_once_they_free_up() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let (listener, mut deliveries) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        8,
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let addr = listener.local_addr;
    let saved = getrlimit(Resource::Nofile);
    // A handful of descriptors left: clients and accepted sockets use them up at once.
    let tight = open_descriptors() + 6;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(tight),
            maximum: saved.maximum,
        },
    )
    .unwrap();
    let mut clients = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect(addr).await {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
    }
    // Long enough for the listener to meet EMFILE on the connections waiting in its backlog.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(clients);
    setrlimit(Resource::Nofile, saved).unwrap();
    // With descriptors back, a sender connects and its chunk is delivered.
    let (hop, _events) = HopSender::connect(
        addr,
        HopSenderConfig {
            connections: 1,
            ..Default::default()
        },
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let c = ChunkRef {
        job: JOB,
        chunk: ChunkId(1),
        object: 0,
        offset: 0,
        raw_len: 0,
        raw_crc32c: 0,
        dests: skyx_protocol::Dests::ALL,
    };
    hop.send(encode_chunk(
        c,
        Bytes::from_static(b"after the pressure"),
        Compression::Off,
    ))
    .await
    .unwrap();
    // A guard against hanging forever when the listener has stopped, not a timing check.
    let d = tokio::time::timeout(Duration::from_secs(60), deliveries.recv())
        .await
        .expect("the listener stopped serving after running out of descriptors")
        .expect("deliveries ended");
    assert_eq!(d.raw.as_deref(), Some(&b"after the pressure"[..]));
    d.commit();
}
