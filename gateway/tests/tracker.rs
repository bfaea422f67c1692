//! The chunk tracker under failing routes, late chunks, repeated reports and resumes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use skyx_gateway::{
    ChunkPolicy, ObjectEntry, RouteId, Tracker, TrackerConfig, TrackerEvent, object_chunks,
    plan_chunks,
};
use skyx_protocol::ChunkId;

const MIB: u64 = 1024 * 1024;

fn objects() -> Vec<ObjectEntry> {
    [0, 1, 3 * MIB, 40 * MIB, 100 * MIB, 16 * MIB]
        .iter()
        .enumerate()
        .map(|(i, &size)| ObjectEntry {
            key: format!("o{i}"),
            size,
        })
        .collect()
}

fn tracker(config: TrackerConfig) -> (Tracker, usize) {
    let objs = objects();
    let specs = plan_chunks(&objs, &ChunkPolicy::default()).unwrap();
    let n = specs.len();
    (Tracker::with_chunks(&specs, config), n)
}

fn drain(t: &mut Tracker) -> Vec<TrackerEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

#[test]
fn every_object_completes_once_when_everything_lands() {
    let now = Instant::now();
    let (mut t, n) = tracker(TrackerConfig::default());
    let mut sent = Vec::new();
    for route in [RouteId(0), RouteId(1)].into_iter().cycle().take(20) {
        sent.extend(t.poll_dispatch(route, 3, now));
    }
    assert_eq!(sent.len(), n);
    for c in sent.iter().rev() {
        t.handle_landed(c.id);
        t.handle_landed(c.id); // duplicate reports are harmless
    }
    let mut done: Vec<u32> = drain(&mut t)
        .into_iter()
        .map(|e| match e {
            TrackerEvent::ObjectComplete { object } => object,
            other => panic!("{other:?}"),
        })
        .collect();
    done.sort();
    assert_eq!(done, (0..objects().len() as u32).collect::<Vec<_>>());
    assert!(t.is_done());
    let p = t.progress();
    assert_eq!((p.chunks_landed, p.bytes_landed), (n as u64, p.bytes_total));
}

#[test]
fn a_failed_route_hands_its_chunks_to_another() {
    let now = Instant::now();
    let (mut t, n) = tracker(TrackerConfig::default());
    let on_a = t.poll_dispatch(RouteId(0), 4, now);
    assert_eq!(t.in_flight_on(RouteId(0)), 4);
    // What goes out again is named (the run notes why, for a chunk that fails in the end).
    let mut resent = t.handle_route_failed(RouteId(0));
    resent.sort();
    assert_eq!(resent, on_a.iter().map(|c| c.id).collect::<Vec<_>>());
    assert_eq!(t.in_flight_on(RouteId(0)), 0);
    let on_b = t.poll_dispatch(RouteId(1), n, now);
    assert_eq!(
        on_b.len(),
        n,
        "everything, including what the dead route had, goes to B"
    );
    assert_eq!(&on_b[..4], &on_a[..], "the lost chunks go first, in order");
    for c in &on_b {
        t.handle_landed(c.id);
    }
    assert!(t.is_done());
}

#[test]
fn late_chunks_are_sent_again_and_a_late_landing_still_counts_once() {
    let now = Instant::now();
    let (mut t, _) = tracker(TrackerConfig {
        max_attempts: 5,
        landing_timeout: Duration::from_secs(10),
    });
    let first = t.poll_dispatch(RouteId(0), 1, now)[0];
    assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(10)));
    assert_eq!(t.handle_tick(now + Duration::from_secs(9)), vec![]);
    assert_eq!(t.in_flight_on(RouteId(0)), 1);
    assert_eq!(t.handle_tick(now + Duration::from_secs(10)), vec![first.id]);
    let again = t.poll_dispatch(RouteId(1), 1, now + Duration::from_secs(10));
    assert_eq!(again[0].id, first.id);
    // The first copy lands after all; the second landing must not double count.
    t.handle_landed(first.id);
    t.handle_landed(again[0].id);
    assert_eq!(t.progress().chunks_landed, 1);
}

#[test]
fn a_chunk_that_keeps_failing_fails_only_its_object() {
    let now = Instant::now();
    let (mut t, _) = tracker(TrackerConfig {
        max_attempts: 3,
        landing_timeout: Duration::from_secs(60),
    });
    // Chunk 0 (object 0) is always on the route that fails; everything else lands.
    let mut events = Vec::new();
    for _ in 0..3 {
        let batch = t.poll_dispatch(RouteId(7), 1, now);
        assert_eq!(batch[0].id, ChunkId(0));
        t.handle_route_failed(RouteId(7));
        events.extend(drain(&mut t));
    }
    assert_eq!(
        events,
        vec![TrackerEvent::ObjectFailed {
            object: 0,
            chunk: ChunkId(0),
            attempts: 3
        }]
    );
    for c in t.poll_dispatch(RouteId(1), 1000, now) {
        assert_ne!(c.object, 0, "chunks of a failed object are not sent");
        t.handle_landed(c.id);
    }
    assert!(t.is_done());
    assert_eq!(t.progress().objects_failed, 1);
    assert_eq!(t.progress().objects_complete, objects().len() as u64 - 1);
}

#[test]
fn resuming_from_a_journal_resends_nothing_that_landed() {
    let now = Instant::now();
    let objs = objects();
    let specs = plan_chunks(&objs, &ChunkPolicy::default()).unwrap();
    let landed: Vec<ChunkId> = specs
        .iter()
        .filter(|s| s.object == 4 || s.id.0 % 2 == 0)
        .map(|s| s.id)
        .collect();
    let mut t = Tracker::resume(&specs, landed.iter().copied(), TrackerConfig::default());
    let resent = t.poll_dispatch(RouteId(0), 10_000, now);
    let landed: HashSet<ChunkId> = landed.into_iter().collect();
    assert!(resent.iter().all(|c| !landed.contains(&c.id)));
    assert_eq!(resent.len() + landed.len(), specs.len());
    assert!(
        drain(&mut t).contains(&TrackerEvent::ObjectComplete { object: 4 }),
        "fully landed object reported"
    );
}

#[test]
fn random_failures_never_lose_or_double_count_a_chunk() {
    for seed in 0..20 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let (mut t, n) = tracker(TrackerConfig {
            max_attempts: 1000,
            landing_timeout: Duration::from_secs(5),
        });
        let mut now = Instant::now();
        let mut in_flight: HashMap<RouteId, Vec<ChunkId>> = HashMap::new();
        let mut completes = HashMap::new();
        for _ in 0..100_000 {
            let route = RouteId(rng.random_range(0..3));
            for c in t.poll_dispatch(route, rng.random_range(0..4), now) {
                in_flight.entry(route).or_default().push(c.id);
            }
            match rng.random_range(0..10) {
                0 => {
                    t.handle_route_failed(route);
                    in_flight.remove(&route);
                }
                1..=6 => {
                    if let Some(c) = in_flight.get_mut(&route).and_then(|v| v.pop()) {
                        t.handle_landed(c);
                    }
                }
                _ => {}
            }
            now += Duration::from_millis(rng.random_range(0..2000));
            t.handle_tick(now);
            while let Some(e) = t.poll_event() {
                match e {
                    TrackerEvent::ObjectComplete { object } => {
                        *completes.entry(object).or_insert(0) += 1
                    }
                    other => panic!("seed {seed}: {other:?}"),
                }
            }
            if t.is_done() {
                break;
            }
        }
        assert!(t.is_done(), "seed {seed}: not done");
        assert_eq!(t.progress().chunks_landed, n as u64);
        assert!(
            completes.values().all(|&k| k == 1),
            "seed {seed}: {completes:?}"
        );
        assert_eq!(completes.len(), objects().len());
    }
}

#[test]
fn objects_taken_in_as_they_come_and_let_go_once_finished_leave_nothing_behind() {
    let now = Instant::now();
    let mut t = Tracker::new(TrackerConfig::default());
    let mut next = 0u64;
    let mut admit = |t: &mut Tracker, object: u32, size: u64| {
        let specs = object_chunks(object, ChunkId(next), size, 8 * MIB);
        next += specs.len() as u64;
        t.admit(object, &specs, &[]);
        specs
    };
    let a = admit(&mut t, 0, 20 * MIB);
    assert_eq!((t.queued(), t.objects_held()), (3, 1));
    let sent = t.poll_dispatch(RouteId(0), 10, now);
    assert_eq!((t.queued(), t.in_flight_on(RouteId(0))), (0, 3));
    for c in &sent {
        t.handle_landed(c.id);
    }
    assert_eq!(
        drain(&mut t),
        vec![TrackerEvent::ObjectComplete { object: 0 }]
    );
    assert!(t.is_done());
    t.release(0);
    assert_eq!(t.objects_held(), 0);
    // A late report about a released object's chunk is ignored, and counts nothing.
    assert!(!t.awaits_landing(a[0].id));
    t.handle_landed(a[0].id);
    t.handle_chunk_failed(a[1].id);
    assert!(drain(&mut t).is_empty());
    // More objects come in after the first left; counts cover everything ever taken in.
    let b = admit(&mut t, 1, 1);
    assert!(!t.is_done());
    // An object released while still in flight (the run gave it up) takes its chunks with it.
    let c = admit(&mut t, 2, 9 * MIB);
    let sent = t.poll_dispatch(RouteId(1), 10, now);
    assert_eq!(sent.len(), 3);
    t.handle_chunk_failed(c[0].id);
    assert!(matches!(
        drain(&mut t)[..],
        [TrackerEvent::ObjectFailed { object: 2, .. }]
    ));
    t.release(2);
    assert_eq!(
        t.in_flight_on(RouteId(1)),
        1,
        "only object 1's chunk is left in flight"
    );
    t.handle_landed(b[0].id);
    assert!(t.is_done());
    let p = t.progress();
    assert_eq!(
        (
            p.objects_total,
            p.objects_complete,
            p.objects_failed,
            p.chunks_total
        ),
        (3, 2, 1, 6)
    );
}

#[test]
fn a_broadcast_chunk_is_done_only_once_every_destination_has_it_and_goes_again_only_where_missing()
{
    let now = Instant::now();
    let mut t = Tracker::broadcast(TrackerConfig::default(), 3);
    let specs = object_chunks(0, ChunkId(0), 3 * MIB, MIB);
    t.admit(0, &specs, &[]);
    let r = RouteId(0);
    let out = t.poll_dispatch(r, 10, now);
    assert_eq!(out.len(), 3);
    // A chunk's first dispatch is for every destination.
    assert_eq!(t.dests_of(ChunkId(0)), skyx_protocol::Dests(0b111));
    for c in 0..3 {
        t.handle_landed_at(ChunkId(c), 0);
        t.handle_landed_at(ChunkId(c), 2);
    }
    // Two of three destinations have everything: nothing is complete.
    assert!(drain(&mut t).is_empty());
    assert!(!t.is_done());
    assert!(t.awaits_landing_at(ChunkId(1), 1));
    assert!(!t.awaits_landing_at(ChunkId(1), 0));
    // Lost on its way to destination 1: it goes out again for destination 1 alone.
    t.handle_chunk_lost(ChunkId(1), r);
    assert_eq!(t.poll_dispatch(r, 10, now).len(), 1);
    assert_eq!(t.dests_of(ChunkId(1)), skyx_protocol::Dests(0b010));
    for c in 0..3 {
        t.handle_landed_at(ChunkId(c), 1);
    }
    assert_eq!(
        drain(&mut t),
        vec![TrackerEvent::ObjectComplete { object: 0 }]
    );
    assert!(t.is_done());
    assert_eq!(t.progress().bytes_landed, 3 * MIB);
}
