//! `run_broadcast` driven directly: one source, three local directories as destinations, real
//! agents in this process (`skyx_agent::in_process`), and a tree whose relay forks. Each test
//! checks every destination byte for byte, and that the link before the fork carried each
//! chunk once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;
use common::{Scratch, write_source};

use skyx_agent::in_process::InProcessProvider;
use skyx_gateway::{
    AgentSlot, Broadcast, CopyError, CopyJob, CopyOptions, CopyReport, Destination, ObjectFilter,
    Pricing, RouteSpec, Topology, items_of, list_copy, run_broadcast,
};
use skyx_store::{ObjectStore, ObjectUrl, StoreConfig};
use tokio::sync::watch;

const MIB: usize = 1024 * 1024;

fn slot(region: &str) -> AgentSlot {
    AgentSlot {
        region: region.into(),
        index: 0,
    }
}

/// The source, a relay that forks to three sinks (destinations 0, 1, 2).
fn forking_relay() -> Topology {
    Topology {
        agents: ["test:src", "test:relay", "test:a", "test:b", "test:c"]
            .map(slot)
            .to_vec(),
        routes: vec![RouteSpec {
            agents: vec![0, 1, 2, 3, 4],
            connections: vec![4; 4],
            gbps: 1.0,
            parents: vec![0, 1, 1, 1],
            sinks: vec![(2, 0), (3, 1), (4, 2)],
        }],
    }
}

/// The source to destination 0's agent, which writes it and relays to the other two (its
/// sink a node of its own, on the same agent).
fn relaying_destination() -> Topology {
    Topology {
        agents: ["test:src", "test:a", "test:b", "test:c"]
            .map(slot)
            .to_vec(),
        routes: vec![RouteSpec {
            agents: vec![0, 1, 1, 2, 3],
            connections: vec![4; 4],
            gbps: 1.0,
            parents: vec![0, 1, 1, 1],
            sinks: vec![(2, 0), (3, 1), (4, 2)],
        }],
    }
}

struct Copy {
    job: CopyJob,
    items: Vec<skyx_gateway::CopyItem>,
    src: Arc<dyn ObjectStore>,
    dsts: Vec<Arc<dyn ObjectStore>>,
}

async fn prepare(src_dir: &Path, dst_dirs: &[PathBuf], topology: Topology) -> Copy {
    let url = |p: &Path| ObjectUrl::parse(&format!("{}/", p.display())).unwrap();
    let (src_url, dst_urls) = (
        url(src_dir),
        dst_dirs.iter().map(|d| url(d)).collect::<Vec<_>>(),
    );
    let config = StoreConfig::default();
    let src = skyx_store::open(&src_url, &config).await.unwrap();
    let mut dsts = Vec::new();
    for u in &dst_urls {
        dsts.push(skyx_store::open(u, &config).await.unwrap());
    }
    let listing = list_copy(
        src.as_ref(),
        &src_url,
        &dst_urls[0],
        true,
        &ObjectFilter::default(),
    )
    .await
    .unwrap();
    Copy {
        job: CopyJob {
            src_store: "file:///".into(),
            dst_store: "file:///".into(),
            src_settings: None,
            dst_settings: None,
            dst_write: Default::default(),
            broadcast: Some(Broadcast {
                first: dst_urls[0].clone(),
                source_is_object: false,
                more: dst_urls[1..]
                    .iter()
                    .map(|u| Destination {
                        url: u.clone(),
                        store: "file:///".into(),
                        settings: None,
                        write: Default::default(),
                    })
                    .collect(),
            }),
            topology,
            options: CopyOptions {
                chunk_size: MIB as u64,
                ..CopyOptions::default()
            },
            pricing: Pricing::default(),
        },
        items: listing.items,
        src,
        dsts,
    }
}

async fn run(copy: &Copy, provider: &InProcessProvider) -> Result<CopyReport, CopyError> {
    let (_cancel, cancel) = watch::channel(false);
    run_broadcast(
        &copy.job,
        items_of(copy.items.clone()),
        provider,
        copy.src.clone(),
        copy.dsts.clone(),
        &mut |_| {},
        cancel,
    )
    .await
}

/// Nothing failed, and every destination holds every file byte for byte.
fn assert_landed_everywhere(report: &CopyReport, dsts: &[PathBuf], files: &[(String, Vec<u8>)]) {
    assert!(
        report.objects_failed.is_empty(),
        "{:?}",
        report.objects_failed
    );
    for dst in dsts {
        for (rel, data) in files {
            let got = std::fs::read(dst.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert!(got == *data, "{} differs", dst.join(rel).display());
        }
    }
}

/// Wire bytes on the hops from `from`'s region.
fn wire_from(report: &CopyReport, from: &str) -> u64 {
    report
        .hops
        .iter()
        .filter(|h| h.src_region == from)
        .map(|h| h.wire_bytes)
        .sum()
}

const SIZES: [usize; 8] = [
    0,
    1,
    1000,
    3 * MIB + 17,
    MIB,
    2 * MIB,
    5 * MIB + 3,
    64 * 1024,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forking_relay_lands_every_object_at_three_destinations_sending_each_chunk_once() {
    let s = Scratch::new("fork");
    let files = write_source(&s.0.join("src"), &SIZES);
    let dsts: Vec<PathBuf> = (0..3).map(|i| s.0.join(format!("dst{i}"))).collect();
    let copy = prepare(&s.0.join("src"), &dsts, forking_relay()).await;
    let provider = InProcessProvider::default();
    let report = run(&copy, &provider).await.unwrap();
    assert_landed_everywhere(&report, &dsts, &files);
    assert_eq!(report.objects_copied, SIZES.len() as u64);
    // Each object verified at each destination.
    assert_eq!(
        report.verified.values().sum::<u64>(),
        3 * SIZES.len() as u64
    );
    // The source sent the data once (frame headers aside), the relay three times.
    let total: u64 = SIZES.iter().map(|&s| s as u64).sum();
    let (from_src, from_relay) = (
        wire_from(&report, "test:src"),
        wire_from(&report, "test:relay"),
    );
    assert!(
        from_src >= total && from_src < total + total / 10,
        "the source sent {from_src} bytes for {total}"
    );
    assert!(
        from_relay >= 3 * total && from_relay < 3 * (total + total / 10),
        "the relay sent {from_relay} bytes for 3 × {total}"
    );
    assert_eq!(provider.launched(), 5);
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_relays_writes_its_own_copy_and_forwards_the_others() {
    let s = Scratch::new("relaying-dst");
    let files = write_source(&s.0.join("src"), &SIZES);
    let dsts: Vec<PathBuf> = (0..3).map(|i| s.0.join(format!("dst{i}"))).collect();
    let copy = prepare(&s.0.join("src"), &dsts, relaying_destination()).await;
    let provider = InProcessProvider::default();
    let report = run(&copy, &provider).await.unwrap();
    assert_landed_everywhere(&report, &dsts, &files);
    assert_eq!(provider.launched(), 4);
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forking_relay_killed_mid_copy_is_replaced_and_every_destination_gets_everything() {
    let s = Scratch::new("fork-killed");
    let sizes: Vec<usize> = (0..12).map(|i| MIB * (1 + i % 4) + i).collect();
    let files = write_source(&s.0.join("src"), &sizes);
    let dsts: Vec<PathBuf> = (0..3).map(|i| s.0.join(format!("dst{i}"))).collect();
    let copy = prepare(&s.0.join("src"), &dsts, forking_relay()).await;
    let provider = InProcessProvider::default();
    provider.crash_after_chunks("test:relay#0", 6);
    let report = run(&copy, &provider).await.unwrap();
    assert!(report.agents_replaced >= 1, "no agent was replaced");
    assert_landed_everywhere(&report, &dsts, &files);
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_whose_routes_miss_a_destination_is_refused_before_any_agent_starts() {
    let s = Scratch::new("miss");
    write_source(&s.0.join("src"), &[10]);
    let dsts: Vec<PathBuf> = (0..4).map(|i| s.0.join(format!("dst{i}"))).collect();
    // Four destinations named, the tree writes three.
    let copy = prepare(&s.0.join("src"), &dsts, forking_relay()).await;
    let provider = InProcessProvider::default();
    let err = run(&copy, &provider).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "route 0 writes destinations [0, 1, 2]; every route writes each of the copy's 4 once"
        ),
        "{err}"
    );
    assert_eq!(provider.launched(), 0);
}
