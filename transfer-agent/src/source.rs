//! The source role: dispatched chunks are read from the source store (pinned to the version
//! the copy listed), encoded and handed to the route's first hop; and what a hop sender gives
//! up is reported to the gateway as it happens, by sources and relays alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use skyx_agent_api::wire::{AgentEvent, ChunkOrder, CompressionSpec};
use skyx_protocol::{
    ChunkRef, Compression, Dests, Failure, NackReason, SenderEvent, encode_chunk, seal_chunk,
};
use skyx_store::ObjectStore;
use tokio::sync::{Semaphore, mpsc};

use crate::events::EventLog;
use crate::fork::Fork;
use crate::job::{Counters, Job, SourceOrder};
use crate::objects::read_chunk;

/// Tells the gateway, as it happens, of a chunk a hop sender (a source's or a relay's, on
/// branch `route`) gave up: it is `Lost` (the gateway sends it again, perhaps another way), and
/// the first time the hop has no connection left (`down` not yet set) the branch is
/// `RouteDown`, so the gateway stops dispatching to it at once instead of waiting for landing
/// timeouts. A chunk the next hop refused is not reported: the agent that refused it has told
/// the gateway why.
pub(crate) fn report_gave_up(events: &EventLog, route: u32, down: &AtomicBool, e: SenderEvent) {
    let SenderEvent::GaveUp {
        chunk,
        attempts,
        last,
    } = e
    else {
        return;
    };
    if last == Failure::Nack(NackReason::Refused) {
        return;
    }
    // Given up without a single send, for a lost or stalled connection: the hop has no live
    // connection left.
    let hop_down = match last {
        Failure::ConnectionLost => Some("every connection to the next hop failed".into()),
        Failure::Stalled(stall) => {
            Some(format!("every connection to the next hop stalled: {stall}"))
        }
        _ => None,
    };
    if attempts == 0
        && let Some(why) = hop_down
        && !down.swap(true, Ordering::Relaxed)
    {
        events.push(AgentEvent::RouteDown { route, why });
    }
    events.push(AgentEvent::Lost {
        chunk: chunk.0,
        route,
        why: format!("next hop: {last:?} after {attempts} attempts"),
    });
}

pub(crate) struct SourceRoute {
    pub(crate) route: u32,
    pub(crate) job: Arc<Job>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) fork: Fork,
    pub(crate) orders: mpsc::UnboundedReceiver<SourceOrder>,
    pub(crate) events: Arc<EventLog>,
    pub(crate) counters: Arc<Counters>,
}

/// The source role for one route: up to `read_concurrency` chunks are read and encoded at once
/// and handed to the route's branches (each chunk to those behind its destinations), which
/// hold them until the next hop acknowledges them. Reads wait while a branch is full, so a slow
/// link or sink slows reading instead of filling memory.
pub(crate) async fn run_source_route(r: SourceRoute) {
    let SourceRoute {
        route,
        job,
        store,
        fork,
        mut orders,
        events,
        counters,
    } = r;
    let fork = Arc::new(fork);
    let readers = Arc::new(Semaphore::new(job.read_concurrency));
    while let Some(SourceOrder { order, object }) = orders.recv().await {
        let Ok(permit) = readers.clone().acquire_owned().await else {
            break;
        };
        let (job, store, fork, events, counters) = (
            job.clone(),
            store.clone(),
            fork.clone(),
            events.clone(),
            counters.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            if fork.down_for(Dests(order.dests)) {
                events.push(AgentEvent::Lost {
                    chunk: order.chunk,
                    route,
                    why: "route is down".into(),
                });
                return;
            }
            if let Some(pace) = &job.read_pace {
                pace.take(order.len as f64).await;
            }
            let raw = match read_chunk(store.as_ref(), &object, order.offset, order.len).await {
                Ok(raw) => raw,
                Err(e) if e.is_retryable() => {
                    events.push(AgentEvent::Lost {
                        chunk: order.chunk,
                        route,
                        why: format!("source read: {e}"),
                    });
                    return;
                }
                Err(e) => {
                    events.push(AgentEvent::Unreadable {
                        chunk: order.chunk,
                        object: order.object,
                        changed: e.kind == skyx_store::ErrorKind::Changed,
                        why: e.to_string(),
                    });
                    return;
                }
            };
            counters
                .store_read
                .fetch_add(raw.len() as u64, Ordering::Relaxed);
            let frame = encode(&job, order, object.size, raw).await;
            let raw_len = u64::from(frame.chunk.raw_len);
            // A branch that could not take it was reported by the fork (down, and the chunk
            // lost on it), so the gateway sends it again to the destinations behind that branch.
            if fork.send(&frame).await > 0 {
                counters.raw_sent.fetch_add(raw_len, Ordering::Relaxed);
                counters.chunk_handled();
            }
        });
    }
}

/// Chunks up to this size are encoded on the task itself.
const INLINE_ENCODE: usize = 64 * 1024;

/// Encodes a chunk on a blocking thread (zstd is CPU work), following the job's compression.
async fn encode(
    job: &Arc<Job>,
    order: ChunkOrder,
    object_size: u64,
    raw: Bytes,
) -> skyx_protocol::DataFrame {
    let chunk = ChunkRef {
        job: job.id,
        chunk: skyx_protocol::ChunkId(order.chunk),
        object: order.object,
        offset: order.offset,
        raw_len: 0,
        raw_crc32c: 0,
        dests: Dests(order.dests),
    };
    let compression = match job.compression {
        CompressionSpec::Off => Compression::Off,
        CompressionSpec::Zstd { level } => Compression::Zstd(level),
        CompressionSpec::Auto { level } => {
            let mut incompressible = job.incompressible.lock().expect("incompressible");
            let known = incompressible.contains(&order.object);
            // Its last chunk: the object need not be remembered any longer (what the set
            // holds stays bounded by the objects under way, not the job).
            if known && order.offset + order.len >= object_size {
                incompressible.remove(&order.object);
            }
            drop(incompressible);
            if known {
                Compression::Off
            } else {
                Compression::Zstd(level)
            }
        }
    };
    let raw_len = raw.len();
    let compression = if raw_len < 64 {
        Compression::Off
    } else {
        compression
    };
    let key = job.chunk_key.clone();
    let work = move || {
        let frame = encode_chunk(chunk, raw, compression);
        let encoded_len = frame.payload.len();
        let frame = match key {
            // A fresh random nonce per seal (see `skyx_protocol::seal`).
            Some(key) => seal_chunk(frame, &key, skyx_agent_api::keys::random()),
            None => frame,
        };
        (frame, encoded_len)
    };
    // A small chunk compresses and seals in microseconds, and a raw chunk in the clear only
    // needs its checksum: a trip to the blocking pool would cost more.
    let light = matches!(compression, Compression::Off) && job.chunk_key.is_none();
    let (frame, encoded_len) = if light || raw_len <= INLINE_ENCODE {
        work()
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .expect("encoding does not panic")
    };
    if let CompressionSpec::Auto { .. } = job.compression
        && order.offset == 0
        && raw_len > 0
        && (raw_len as u64) < object_size
        && encoded_len as f64 > 0.95 * raw_len as f64
    {
        // The first chunk barely shrank: the rest of this object is sent raw. (Only objects
        // with a rest are remembered.)
        job.incompressible
            .lock()
            .expect("incompressible")
            .insert(order.object);
    }
    frame
}
