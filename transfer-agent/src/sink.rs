//! The sink role: every verified delivery is written to the destination store, reported to the
//! gateway, then acknowledged.
//!
//! Trouble with the store stays at the sink: a write refused for a reason that may pass
//! (throttling, a reset, a 5xx) is retried here from the bytes the sink already holds, with
//! backoff, for up to the job's `sink_retry`; the gateway hears of the first failure at once
//! (a warning with the cause). Only when that runs out, or at once for a refusal that cannot
//! pass (a name the file system refuses, a full disk, no permission), is the chunk refused to
//! the previous hop (which gives it up instead of resending it across the link) and reported
//! as [`AgentEvent::WriteFailed`] with its cause and class. So a store's outage never makes
//! a chunk cross a paid hop again by itself, and a permanent error reaches the gateway in one
//! poll, whatever the route.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use skyx_agent_api::wire::{AgentEvent, PartWire};
use skyx_store::retry::RideOut;
use tokio::sync::mpsc;

use crate::events::EventLog;
use crate::hop_listener::Delivery;
use crate::job::Counters;
use crate::objects::{ObjectWriter, Wrote};

/// Runs the sink for one listener's deliveries until they end.
pub(crate) async fn run_sink(
    route: u32,
    mut deliveries: mpsc::Receiver<Delivery>,
    writer: Arc<ObjectWriter>,
    retry_for: Duration,
    events: Arc<EventLog>,
    counters: Arc<Counters>,
) {
    while let Some(d) = deliveries.recv().await {
        let (writer, events, counters) = (writer.clone(), events.clone(), counters.clone());
        // The listener's pending limit bounds how many of these run at once; a delivery being
        // retried keeps its slot, so a sink whose store is down stops taking new chunks.
        tokio::spawn(write_delivery(
            route, d, writer, retry_for, events, counters,
        ));
    }
}

/// Writes one delivery, reports it landed, then acknowledges it. The report comes first: if the
/// agent dies between the two, the chunk is sent again and written again, which is harmless;
/// the other order could acknowledge a chunk the gateway never hears of.
async fn write_delivery(
    route: u32,
    d: Delivery,
    writer: Arc<ObjectWriter>,
    retry_for: Duration,
    events: Arc<EventLog>,
    counters: Arc<Counters>,
) {
    let c = d.frame.chunk;
    let Some(raw) = d.raw.clone() else {
        d.fail();
        return;
    };
    let len = raw.len() as u64;
    let mut ride = RideOut::new(retry_for);
    loop {
        let error = match writer
            .write(c.object, c.offset, raw.clone(), c.raw_crc32c)
            .await
        {
            Ok(wrote) => {
                let (receipt, verified) = match wrote {
                    Wrote::Part(r) => (Some(r), None),
                    Wrote::Whole(v) => (None, Some(v)),
                };
                counters.store_written.fetch_add(len, Ordering::Relaxed);
                counters.chunk_handled();
                events.push(AgentEvent::Landed {
                    chunk: c.chunk.0,
                    object: c.object,
                    part: receipt.map(|r| PartWire {
                        part_number: r.part_number,
                        etag: r.etag,
                    }),
                    raw_len: len,
                    raw_crc32c: c.raw_crc32c,
                    verified,
                });
                d.commit();
                return;
            }
            Err(e) => e,
        };
        let Some(wait) = ride.after(&error) else {
            let (permanent, failures) = (!error.is_retryable(), ride.failures());
            tracing::warn!(chunk = c.chunk.0, permanent, failures, error = %error, "sink write failed; refused");
            events.push(AgentEvent::WriteFailed {
                chunk: c.chunk.0,
                object: c.object,
                route,
                permanent,
                why: error.to_string(),
            });
            d.refuse();
            return;
        };
        if ride.failures() == 1 {
            tracing::warn!(chunk = c.chunk.0, error = %error, "sink write failed; retrying here");
            events.push(AgentEvent::Warning {
                message: format!(
                    "writing chunk {} failed; the sink retries it for up to {} s: {error}",
                    c.chunk.0,
                    ride.window().as_secs()
                ),
            });
        }
        tokio::time::sleep(wait).await;
    }
}
