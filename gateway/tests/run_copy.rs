//! `run_copy` driven directly, without the `skyx` binary: real agents run in this process
//! (`skyx_agent::in_process`, each on a runtime of its own, so killing one ends every task and
//! socket it had), local directories are the stores, and every route goes through a relay.
//! Each test checks what landed byte for byte, and that no agent outlives the copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;
use common::{Scratch, contents, write_source};

use skyx_agent::in_process::InProcessProvider;
use skyx_gateway::{
    AgentSlot, CopyError, CopyItem, CopyJob, CopyOptions, CopyReport, CrashAfter, ObjectFilter,
    Pricing, RouteSpec, Topology, items_of, list_copy, run_copy,
};
use skyx_store::{ObjectStore, ObjectUrl, StoreConfig};
use tokio::sync::watch;

const MIB: usize = 1024 * 1024;

/// Source, relay and sink regions, one agent each, one route with `connections` per hop.
fn relayed(connections: u32) -> Topology {
    let slot = |region: &str| AgentSlot {
        region: region.into(),
        index: 0,
    };
    Topology {
        agents: vec![slot("test:src"), slot("test:relay"), slot("test:dst")],
        routes: vec![RouteSpec::chain(
            vec![0, 1, 2],
            vec![connections, connections],
            1.0,
        )],
    }
}

struct Copy {
    job: CopyJob,
    items: Vec<CopyItem>,
    src: Arc<dyn ObjectStore>,
    dst: Arc<dyn ObjectStore>,
}

async fn prepare(src_dir: &Path, dst_dir: &Path, options: CopyOptions) -> Copy {
    let src_url = ObjectUrl::parse(&format!("{}/", src_dir.display())).unwrap();
    let dst_url = ObjectUrl::parse(&format!("{}/", dst_dir.display())).unwrap();
    let config = StoreConfig::default();
    let src = skyx_store::open(&src_url, &config).await.unwrap();
    let dst = skyx_store::open(&dst_url, &config).await.unwrap();
    let listing = list_copy(
        src.as_ref(),
        &src_url,
        &dst_url,
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
            broadcast: None,
            topology: relayed(4),
            options,
            pricing: Pricing::default(),
        },
        items: listing.items,
        src,
        dst,
    }
}

async fn run(
    copy: &Copy,
    provider: &dyn skyx_provision::Provider,
    cancel: watch::Receiver<bool>,
) -> Result<CopyReport, CopyError> {
    run_copy(
        &copy.job,
        items_of(copy.items.clone()),
        provider,
        copy.src.clone(),
        copy.dst.clone(),
        &mut |_| {},
        cancel,
    )
    .await
}

fn options(chunk_size: u64) -> CopyOptions {
    CopyOptions {
        chunk_size,
        ..CopyOptions::default()
    }
}

/// Runs the copy of `src` to `dst` journaled at `journal`, interrupted (as by Ctrl-C) once
/// `landed` chunks are journaled.
async fn interrupted_after(
    landed: u64,
    src: &Path,
    dst: &Path,
    journal: &Path,
    provider: &InProcessProvider,
) {
    let (cancel_tx, cancel) = watch::channel(false);
    let mut first = options(MIB as u64);
    first.journal = Some(journal.to_path_buf());
    first.crash_after_landed = Some(CrashAfter {
        after: landed,
        crash: Arc::new(move || {
            let _ = cancel_tx.send(true);
        }),
    });
    let copy = prepare(src, dst, first).await;
    match run(&copy, provider, cancel).await {
        Err(CopyError::Interrupted { .. }) => {}
        other => panic!("the copy was not interrupted: {other:?}"),
    }
}

/// Every file landed byte for byte, and no hidden staging is left at the destination.
fn assert_landed(dst: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let got = std::fs::read(dst.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == *data, "{rel} differs");
    }
    assert_eq!(hidden_files(dst), Vec::<PathBuf>::new());
}

/// `.skyx-` staging files and directories anywhere under `dir`.
fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".skyx-") {
                out.push(e.path());
            } else if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_through_a_relay_lands_every_object_and_leaves_no_agent() {
    let s = Scratch::new("plain");
    let sizes = [
        0,
        1,
        1000,
        3 * MIB + 17,
        MIB,
        2 * MIB,
        5 * MIB + 3,
        64 * 1024,
    ];
    let files = write_source(&s.0.join("src"), &sizes);
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), options(MIB as u64)).await;
    let provider = InProcessProvider::default();
    let (_cancel, cancel) = watch::channel(false);
    let report = run(&copy, &provider, cancel).await.unwrap();
    assert_eq!(report.objects_copied, sizes.len() as u64);
    assert!(
        report.objects_failed.is_empty(),
        "{:?}",
        report.objects_failed
    );
    assert_eq!(report.agents_replaced, 0);
    assert_landed(&s.0.join("dst"), &files);
    // Three agents launched (source, relay, sink), none left.
    assert_eq!(provider.launched(), 3);
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_copy_is_replaced_and_every_object_lands() {
    let s = Scratch::new("relay-killed");
    let sizes: Vec<usize> = (0..12).map(|i| MIB * (1 + i % 4) + i).collect();
    let files = write_source(&s.0.join("src"), &sizes);
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), options(MIB as u64)).await;
    let provider = InProcessProvider::default();
    // The relay dies, as if killed, once it has forwarded 6 chunks.
    provider.crash_after_chunks("test:relay#0", 6);
    let (_cancel, cancel) = watch::channel(false);
    let report = run(&copy, &provider, cancel).await.unwrap();
    assert!(report.agents_replaced >= 1, "no agent was replaced");
    assert_eq!(report.objects_copied, sizes.len() as u64);
    assert_landed(&s.0.join("dst"), &files);
    assert!(provider.launched() >= 4);
    assert_eq!(provider.running(), Vec::<String>::new());
}

/// With one attempt per chunk, what the killed relay carried fails, each object naming why
/// its chunk went out again (not only that its attempts ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_out_of_attempts_fails_its_object_naming_why_it_was_sent_again() {
    let s = Scratch::new("attempts-spent");
    let sizes: Vec<usize> = (0..12).map(|i| MIB * (1 + i % 4) + i).collect();
    write_source(&s.0.join("src"), &sizes);
    let mut options = options(MIB as u64);
    options.tracker.max_attempts = 1;
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), options).await;
    let provider = InProcessProvider::default();
    provider.crash_after_chunks("test:relay#0", 6);
    let (_cancel, cancel) = watch::channel(false);
    let report = run(&copy, &provider, cancel).await.unwrap();
    assert!(!report.objects_failed.is_empty(), "nothing was in flight");
    for f in &report.objects_failed {
        assert!(
            f.why
                .starts_with("a chunk could not be delivered in 1 attempts; the last time: "),
            "{}: {}",
            f.key,
            f.why
        );
    }
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_from_its_journal_without_resending_landed_chunks() {
    let s = Scratch::new("resume");
    let sizes: Vec<usize> = (0..10).map(|i| 2 * MIB + i).collect();
    let files = write_source(&s.0.join("src"), &sizes);
    let journal = s.0.join("journal.redb");
    let provider = InProcessProvider::default();
    interrupted_after(8, &s.0.join("src"), &s.0.join("dst"), &journal, &provider).await;
    assert_eq!(provider.running(), Vec::<String>::new());

    let mut again = options(MIB as u64);
    again.journal = Some(journal);
    again.resume = true;
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), again).await;
    let (_cancel, cancel) = watch::channel(false);
    let report = run(&copy, &provider, cancel).await.unwrap();
    assert!(
        report.chunks_skipped >= 8,
        "only {} chunks skipped",
        report.chunks_skipped
    );
    assert!(report.bytes_sent < sizes.iter().sum::<usize>() as u64);
    assert_landed(&s.0.join("dst"), &files);
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_fails_has_its_upload_aborted_and_the_rest_land() {
    let s = Scratch::new("failed-object");
    let sizes = [3 * MIB, 4 * MIB + 1, 1000];
    let files = write_source(&s.0.join("src"), &sizes);
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), options(MIB as u64)).await;
    // Gone after it was listed: its chunks cannot be read, so the object fails and its
    // multipart upload (opened before its first chunk goes) must be aborted.
    let (changed, _) = &files[1];
    std::fs::remove_file(s.0.join("src").join(changed)).unwrap();
    let provider = InProcessProvider::default();
    let (_cancel, cancel) = watch::channel(false);
    let report = run(&copy, &provider, cancel).await.unwrap();
    let failed: Vec<&str> = report
        .objects_failed
        .iter()
        .map(|f| f.key.as_str())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].ends_with(changed.as_str()), "{failed:?}");
    let dst = s.0.join("dst");
    assert!(!dst.join(changed).exists(), "the changed object landed");
    let others: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(rel, _)| rel != changed)
        .cloned()
        .collect();
    assert_landed(&dst, &others);
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_larger_than_its_window_holds_only_the_window_at_the_gateway_and_the_sink() {
    let s = Scratch::new("window");
    let sizes: Vec<usize> = (0..400).map(|i| 100 + i % 7).collect();
    let files = write_source(&s.0.join("src"), &sizes);
    let mut opts = options(MIB as u64);
    opts.window_objects = 40;
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), opts).await;
    let provider = InProcessProvider::default();
    let (_cancel, cancel) = watch::channel(false);
    let report = run(&copy, &provider, cancel).await.unwrap();
    assert_eq!(report.objects_copied, sizes.len() as u64);
    assert_landed(&s.0.join("dst"), &files);
    assert!(
        (1..=40).contains(&report.objects_held_peak),
        "the gateway held {} objects at once",
        report.objects_held_peak
    );
    let sink = report
        .agents
        .iter()
        .find(|a| a.region == "test:dst")
        .unwrap();
    assert!(
        (1..=40).contains(&sink.objects_held_peak),
        "the sink held {} objects at once",
        sink.objects_held_peak
    );
    assert_eq!(provider.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_the_source_changed_moves_only_what_changed_and_what_was_left() {
    let s = Scratch::new("resume-changed");
    let src = s.0.join("src");
    let sizes: Vec<usize> = (0..12).map(|i| 2 * MIB + i).collect();
    let mut files = write_source(&src, &sizes);
    let journal = s.0.join("journal.redb");
    let provider = InProcessProvider::default();
    interrupted_after(10, &src, &s.0.join("dst"), &journal, &provider).await;
    // Meanwhile the first object listed ("file-1": the listing is in key order, so it is the
    // first copied) is rewritten (same size, other bytes), one added, and the second listed
    // ("file-10") removed.
    let (changed, _) = files[1].clone();
    assert_eq!(changed, "file-1");
    let new_bytes: Vec<u8> = contents(99, sizes[1]);
    std::fs::write(src.join(&changed), &new_bytes).unwrap();
    files[1].1 = new_bytes;
    std::fs::write(src.join("added"), contents(7, 3 * MIB)).unwrap();
    files.push(("added".into(), contents(7, 3 * MIB)));
    let (removed, _) = files.remove(10);
    assert_eq!(removed, "file-10");
    std::fs::remove_file(src.join(&removed)).unwrap();

    let mut again = options(MIB as u64);
    again.journal = Some(journal);
    again.resume = true;
    let copy = prepare(&src, &s.0.join("dst"), again).await;
    let (_cancel, cancel) = watch::channel(false);
    let report = run(&copy, &provider, cancel).await.unwrap();
    assert!(
        report.objects_failed.is_empty(),
        "{:?}",
        report.objects_failed
    );
    // Ten landed before the interruption; at most six were the changed and removed objects'.
    assert!(
        report.chunks_skipped >= 4,
        "only {} chunks skipped: the journal was not taken over",
        report.chunks_skipped
    );
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert!(
        report.bytes_sent < total,
        "{} of {total} bytes sent again",
        report.bytes_sent
    );
    // Every object as the source holds it now, the rewritten one included; no staging left.
    assert_landed(&s.0.join("dst"), &files);
    assert_eq!(provider.running(), Vec::<String>::new());
}

/// A planner that moves any copy onto the relayed route, remembering what it was asked.
#[derive(Debug, Default)]
struct ToTheRelay {
    asked: std::sync::Mutex<Vec<skyx_gateway::VolumeEstimate>>,
}

impl skyx_gateway::Replanner for ToTheRelay {
    fn replan(
        &self,
        estimate: &skyx_gateway::VolumeEstimate,
        _refused: &[String],
    ) -> Option<skyx_gateway::Replanned> {
        self.asked.lock().unwrap().push(*estimate);
        Some(skyx_gateway::Replanned {
            topology: relayed(4),
            pricing: Pricing::default(),
            summary: "test:src -> test:relay -> test:dst".into(),
            prediction: None,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_grows_past_its_plan_moves_the_copy_onto_the_new_route() {
    let s = Scratch::new("refine");
    let sizes: Vec<usize> = (0..120).map(|i| 256 * 1024 + i).collect();
    let files = write_source(&s.0.join("src"), &sizes);
    let planner = Arc::new(ToTheRelay::default());
    let mut opts = options(MIB as u64);
    // Planned on the first ten objects' bytes, as a look at a longer listing would.
    let planned_on: u64 = sizes[..10].iter().map(|&n| n as u64).sum();
    opts.replan = Some(skyx_gateway::Replan {
        planned_on,
        planner: planner.clone(),
        // Counted by the copy's own listing.
        volume: None,
    });
    let mut copy = prepare(&s.0.join("src"), &s.0.join("dst"), opts).await;
    // Planned as a direct copy: no relay.
    let direct = relayed(4);
    copy.job.topology = Topology {
        agents: vec![direct.agents[0].clone(), direct.agents[2].clone()],
        routes: vec![RouteSpec::chain(vec![0, 1], vec![4], 1.0)],
    };
    // The listing shows half, then the rest a moment later.
    let (first, rest) = copy.items.split_at(60);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let items = futures::StreamExt::boxed(futures::StreamExt::chain(
        items_of(first),
        futures::StreamExt::flatten(futures::stream::once(async move {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            items_of(rest)
        })),
    ));
    let provider = InProcessProvider::default();
    let (_cancel, cancel) = watch::channel(false);
    let report = run_copy(
        &copy.job,
        items,
        &provider,
        copy.src.clone(),
        copy.dst.clone(),
        &mut |_| {},
        cancel,
    )
    .await
    .unwrap();
    assert_eq!(report.objects_copied, sizes.len() as u64);
    assert_landed(&s.0.join("dst"), &files);
    // Planned again once the listing had doubled past the first plan's bytes (before its
    // second half), and (if the copy was still running) once more on the whole listing,
    // which the new route already carried.
    let asked = planner.asked.lock().unwrap().clone();
    assert!(!asked.is_empty(), "never planned again");
    assert!(
        !asked[0].listing_ended && (20..=60).contains(&asked[0].listed_objects),
        "{asked:?}"
    );
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    for later in &asked[1..] {
        assert!(
            later.listing_ended && later.listed_bytes == total,
            "{later:?}"
        );
    }
    let r = &report.refinements;
    assert_eq!(r.len(), asked.len(), "{r:?}");
    assert_eq!(r[0].agents_launched, vec!["test:relay#0".to_string()]);
    assert_eq!((r[0].routes_built, r[0].routes_drained), (1, 1));
    assert!(r[0].failures.is_empty(), "{:?}", r[0].failures);
    assert!(
        r[1..]
            .iter()
            .all(|f| f.routes_built + f.routes_drained == 0),
        "{r:?}"
    );
    // The second half, at least, went through the relay.
    let relayed_bytes: u64 = report
        .hops
        .iter()
        .filter(|h| h.src_region == "test:relay")
        .map(|h| h.wire_bytes)
        .sum();
    assert!(
        relayed_bytes >= total / 2,
        "{relayed_bytes} of {total} bytes went through the relay"
    );
    assert_eq!(provider.launched(), 3);
    assert_eq!(provider.running(), Vec::<String>::new());
}

/// Agents in this process, but none in `full`: there the cloud says it has no capacity.
#[derive(Debug)]
struct Full {
    full: &'static str,
    agents: InProcessProvider,
    refused: std::sync::atomic::AtomicUsize,
    /// Interrupts the copy as the cloud refuses (a user's Ctrl-C while VMs launch).
    interrupt: Option<watch::Sender<bool>>,
}

#[async_trait::async_trait]
impl skyx_provision::Provider for Full {
    fn name(&self) -> &str {
        "in-process, one region full"
    }

    async fn launch(
        &self,
        req: skyx_provision::LaunchRequest,
    ) -> Result<skyx_provision::LaunchedAgent, skyx_provision::ProviderError> {
        if req.region == self.full {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(interrupt) = &self.interrupt {
                let _ = interrupt.send(true);
            }
            return Err(skyx_provision::ProviderError::Capacity {
                agent: req.name,
                region: req.region,
                why: "ZONE_RESOURCE_POOL_EXHAUSTED".into(),
            });
        }
        self.agents.launch(req).await
    }
}

/// A planner that routes around the refused regions: directly when the relay is refused.
#[derive(Debug, Default)]
struct AroundRefused {
    asked: std::sync::Mutex<Vec<Vec<String>>>,
    /// Interrupts the copy as it plans (a user's Ctrl-C while the route is planned again).
    interrupt: Option<watch::Sender<bool>>,
}

impl skyx_gateway::Replanner for AroundRefused {
    fn replan(
        &self,
        _estimate: &skyx_gateway::VolumeEstimate,
        refused: &[String],
    ) -> Option<skyx_gateway::Replanned> {
        self.asked.lock().unwrap().push(refused.to_vec());
        if let Some(interrupt) = &self.interrupt {
            let _ = interrupt.send(true);
        }
        let relayed = relayed(4);
        let topology = if refused.iter().any(|r| r == "test:relay") {
            Topology {
                agents: vec![relayed.agents[0].clone(), relayed.agents[2].clone()],
                routes: vec![RouteSpec::chain(vec![0, 1], vec![4], 1.0)],
            }
        } else {
            relayed
        };
        Some(skyx_gateway::Replanned {
            topology,
            pricing: Pricing::default(),
            summary: "test:src -> test:dst".into(),
            prediction: None,
        })
    }
}

/// Options of a copy that plans around regions out of capacity with `planner`.
fn around_full(planner: Arc<AroundRefused>) -> CopyOptions {
    let mut opts = options(MIB as u64);
    opts.capacity_replan = Some(skyx_gateway::Replan {
        planned_on: 0,
        planner,
        volume: None,
    });
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_region_out_of_capacity_is_planned_around_before_a_byte_moves() {
    let s = Scratch::new("capacity");
    let files = write_source(&s.0.join("src"), &[3 * MIB, 100, 0]);
    let provider = Full {
        full: "test:relay",
        agents: InProcessProvider::default(),
        refused: Default::default(),
        interrupt: None,
    };
    let (_cancel, cancel) = watch::channel(false);

    // Without a planner, the cloud's answer fails the copy, and nothing is left running.
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), options(MIB as u64)).await;
    let err = run(&copy, &provider, cancel.clone()).await.unwrap_err();
    assert!(
        err.to_string().contains("ZONE_RESOURCE_POOL_EXHAUSTED"),
        "{err}"
    );
    assert_eq!(provider.agents.running(), Vec::<String>::new());

    // With one, the route is planned again without the relay's region: the agents launched
    // for the first plan are stopped, the direct route carries everything.
    let planner = Arc::new(AroundRefused::default());
    let opts = around_full(planner.clone());
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), opts).await;
    let launched_before = provider.agents.launched();
    let report = run(&copy, &provider, cancel).await.unwrap();
    assert_eq!(report.objects_copied, 3);
    assert_landed(&s.0.join("dst"), &files);
    assert_eq!(
        *planner.asked.lock().unwrap(),
        vec![vec!["test:relay".to_string()]]
    );
    let r = &report.refinements;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        r[0].cause.as_deref(),
        Some("test:relay had no capacity (ZONE_RESOURCE_POOL_EXHAUSTED)")
    );
    assert_eq!(r[0].plan.as_deref(), Some("test:src -> test:dst"));
    assert!(
        report.hops.iter().all(|h| h.src_region != "test:relay"),
        "{:?}",
        report.hops
    );
    // Two agents for the refused plan (source and sink), two for the new one; none left.
    assert_eq!(provider.agents.launched() - launched_before, 4);
    assert_eq!(
        provider.refused.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(provider.agents.running(), Vec::<String>::new());
    // The given-up plan's agents are metered with the rest.
    assert_eq!(report.agents.len(), 4, "{:?}", report.agents);

    // The source's own region cannot be planned around: the copy fails saying so.
    let source_full = Full {
        full: "test:src",
        agents: InProcessProvider::default(),
        refused: Default::default(),
        interrupt: None,
    };
    let opts = around_full(Arc::new(AroundRefused::default()));
    let copy = prepare(&s.0.join("src"), &s.0.join("dst2"), opts).await;
    let (_cancel, cancel) = watch::channel(false);
    let err = run(&copy, &source_full, cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "no capacity in test:src (ZONE_RESOURCE_POOL_EXHAUSTED), and no plan avoids it"
        ),
        "{err}"
    );
    assert_eq!(source_full.agents.running(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_while_agents_launch_or_a_plan_is_made_again_launches_nothing_more() {
    let s = Scratch::new("capacity-interrupted");
    write_source(&s.0.join("src"), &[3 * MIB, 100]);
    let (interrupt, cancel) = watch::channel(false);
    let provider = Full {
        full: "test:relay",
        agents: InProcessProvider::default(),
        refused: Default::default(),
        interrupt: Some(interrupt),
    };
    let planner = Arc::new(AroundRefused::default());
    let opts = around_full(planner.clone());
    let copy = prepare(&s.0.join("src"), &s.0.join("dst"), opts).await;
    let err = run(&copy, &provider, cancel).await.unwrap_err();
    assert!(matches!(err, CopyError::Interrupted { .. }), "{err}");
    // No plan made around the full region, nothing launched for one; what the first plan
    // launched (source and sink) is torn down.
    assert!(planner.asked.lock().unwrap().is_empty());
    assert_eq!(provider.agents.launched(), 2);
    assert_eq!(provider.agents.running(), Vec::<String>::new());

    // Ctrl-C as the route is planned again: the new plan's agents are not launched.
    let (interrupt, cancel) = watch::channel(false);
    let provider = Full {
        full: "test:relay",
        agents: InProcessProvider::default(),
        refused: Default::default(),
        interrupt: None,
    };
    let planner = Arc::new(AroundRefused {
        interrupt: Some(interrupt),
        ..Default::default()
    });
    let opts = around_full(planner.clone());
    let copy = prepare(&s.0.join("src"), &s.0.join("dst2"), opts).await;
    let err = run(&copy, &provider, cancel).await.unwrap_err();
    assert!(matches!(err, CopyError::Interrupted { .. }), "{err}");
    assert_eq!(planner.asked.lock().unwrap().len(), 1);
    assert_eq!(provider.agents.launched(), 2);
    assert_eq!(provider.agents.running(), Vec::<String>::new());
}
