//! A hop judges its connections by the receiver's heartbeats: a next hop that takes the
//! connection and then says nothing (a cut link, a frozen agent) is given up as stalled, while
//! one that holds off reading on purpose (its agent is busy) is waited for, and what waits
//! behind it is not sent again.

use std::time::Duration;

use bytes::Bytes;
use skyx_agent::{HopGuard, HopListener, HopSender, HopSenderConfig};
use skyx_protocol::{
    ChunkId, ChunkRef, Compression, Failure, JobId, Role, SenderEvent, Stall, encode_chunk,
};
use tokio::net::TcpListener;

const JOB: JobId = JobId(11);

fn chunk(i: u64) -> skyx_protocol::DataFrame {
    let c = ChunkRef {
        job: JOB,
        chunk: ChunkId(i),
        object: 0,
        offset: 0,
        raw_len: 0,
        raw_crc32c: 0,
        dests: skyx_protocol::Dests::ALL,
    };
    encode_chunk(c, Bytes::from(vec![i as u8; 64 * 1024]), Compression::Off)
}

fn config(silence: Duration) -> HopSenderConfig {
    let mut c = HopSenderConfig {
        connections: 2,
        silence,
        ..HopSenderConfig::default()
    };
    // Short, so a chunk waiting behind a paused receiver would be resent within the test.
    c.sender.retransmit_after = Duration::from_secs(1);
    c
}

/// Bounds a test that would otherwise wait for the kernel's own timeouts (many minutes).
const WATCHDOG: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_next_hop_that_goes_silent_is_given_up_as_stalled() {
    // Accepts connections and holds them without a byte either way, as a cut link looks.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            conns.push(s);
        }
    });
    let (hop, mut events) =
        HopSender::connect(addr, config(Duration::from_secs(2)), &HopGuard::Open)
            .await
            .unwrap();
    for i in 0..4 {
        hop.send(chunk(i)).await.unwrap();
    }
    let mut gave_up = Vec::new();
    tokio::time::timeout(WATCHDOG, async {
        while gave_up.len() < 4 {
            match events.recv().await.expect("the hop reports every chunk") {
                SenderEvent::GaveUp { chunk, last, .. } => gave_up.push((chunk, last)),
                e => panic!("nothing can be acknowledged by a silent hop: {e:?}"),
            }
        }
    })
    .await
    .expect("a silent next hop was never given up");
    for (chunk, last) in gave_up {
        assert!(
            matches!(last, Failure::Stalled(Stall::Silent(_))),
            "{chunk:?}: {last:?}"
        );
    }
    held.abort();
}

#[tokio::test]
async fn a_chunk_moved_to_an_idle_connection_is_sent_there_and_given_up_when_that_stalls_too() {
    // One chunk on two connections: the one carrying it stalls, the chunk moves to the idle
    // one, and nothing else will ever wake the hop.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            conns.push(s);
        }
    });
    let (hop, mut events) =
        HopSender::connect(addr, config(Duration::from_secs(2)), &HopGuard::Open)
            .await
            .unwrap();
    hop.send(chunk(0)).await.unwrap();
    let e = tokio::time::timeout(WATCHDOG, events.recv())
        .await
        .expect("the moved chunk was never sent again nor given up");
    assert!(
        matches!(
            e,
            Some(SenderEvent::GaveUp {
                last: Failure::Stalled(_),
                ..
            })
        ),
        "{e:?}"
    );
    held.abort();
}

#[tokio::test]
async fn a_next_hop_that_holds_off_reading_on_purpose_is_waited_for() {
    // One chunk may await its commit at a time; the agent takes none for a while.
    let (listener, mut deliveries) = HopListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        JOB,
        Role::Sink,
        None,
        1,
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let (hop, mut events) = HopSender::connect(
        listener.local_addr,
        config(Duration::from_secs(2)),
        &HopGuard::Open,
    )
    .await
    .unwrap();
    let hop = std::sync::Arc::new(hop);
    let sending = {
        let hop = hop.clone();
        tokio::spawn(async move {
            for i in 0..8 {
                hop.send(chunk(i)).await.unwrap();
            }
        })
    };
    // Three times the silence with chunks in flight and the receiver paused: still alive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        events.try_recv().is_err(),
        "nothing given up or acknowledged yet"
    );
    let taking = tokio::spawn(async move {
        let mut n = 0;
        while let Some(d) = deliveries.recv().await {
            d.commit();
            n += 1;
        }
        n
    });
    let mut acked = 0;
    tokio::time::timeout(WATCHDOG, async {
        while acked < 8 {
            match events.recv().await.unwrap() {
                SenderEvent::Acked(_) => acked += 1,
                e => panic!("a paused receiver was given up: {e:?}"),
            }
        }
    })
    .await
    .expect("every chunk acknowledged once the agent took them");
    assert_eq!(
        hop.resent_bytes(),
        0,
        "a chunk waiting behind the pause was resent"
    );
    sending.await.unwrap();
    drop(listener);
    taking.abort();
}
