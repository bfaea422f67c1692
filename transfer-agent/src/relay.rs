//! The relay role: chunks delivered by the previous hop go on to the next.

use std::sync::Arc;

use skyx_protocol::SenderEvent;
use tokio::sync::mpsc;

use crate::hop::HopSender;
use crate::hop_listener::Delivery;

/// The relay role: every chunk delivered from the previous hop is queued to the next hop and
/// acknowledged upstream once queued. Runs until the listener's deliveries end, then finishes
/// the onward hop. What the onward hop gives up goes to `on_event` (an agent reports it to its
/// gateway); a chunk that cannot be queued because the onward hop is gone is refused upstream
/// (not resent into a dead end) and reported there too, as given up without a connection.
pub async fn relay(
    mut deliveries: mpsc::Receiver<Delivery>,
    onward: Arc<HopSender>,
    mut onward_events: mpsc::UnboundedReceiver<SenderEvent>,
    on_event: impl Fn(SenderEvent) + Send + Sync + 'static,
) {
    let on_event = Arc::new(on_event);
    let forward = on_event.clone();
    let drain = tokio::spawn(async move {
        while let Some(e) = onward_events.recv().await {
            forward(e);
        }
    });
    while let Some(d) = deliveries.recv().await {
        let chunk = d.frame.chunk.chunk;
        match onward.send(d.frame.clone()).await {
            Ok(()) => d.commit(),
            Err(_) => {
                on_event(SenderEvent::GaveUp {
                    chunk,
                    attempts: 0,
                    last: skyx_protocol::Failure::ConnectionLost,
                });
                d.refuse();
            }
        }
    }
    drop(deliveries);
    // The agent may share the hop (to read its counters); then it ends with the agent.
    if let Ok(onward) = Arc::try_unwrap(onward) {
        onward.finish().await;
        let _ = drain.await;
    }
}
