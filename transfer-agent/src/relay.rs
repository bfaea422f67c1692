//! The relay role: chunks delivered by the previous hop go on to the next (to several, where a
//! broadcast's tree forks).

use tokio::sync::mpsc;

use crate::fork::Fork;
use crate::hop_listener::Delivery;

/// The relay role: every chunk delivered from the previous hop is queued on each branch of
/// `onward` it is for, and acknowledged upstream once queued on one. Runs until the listener's
/// deliveries end, then finishes the branches. A branch that can no longer take chunks is
/// reported through the fork (as having given the chunk up without a connection); a chunk no
/// branch took is refused upstream, not resent into a dead end.
pub async fn relay(mut deliveries: mpsc::Receiver<Delivery>, onward: Fork) {
    while let Some(d) = deliveries.recv().await {
        if onward.send(&d.frame).await > 0 {
            d.commit();
        } else {
            d.refuse();
        }
    }
    drop(deliveries);
    onward.finish().await;
}
