//! [`EventLog`]: what an agent has to tell its gateway (chunks landed, routes dead, ...),
//! numbered, kept until the gateway's next poll acknowledges them by asking for later ones.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use skyx_agent_api::wire::AgentEvent;
use tokio::sync::watch;

/// Events for the gateway, numbered; the gateway asks for those after the last it saw, which
/// also releases the ones before.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<AgentEvent>)>,
    next: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Mutex::new((0, VecDeque::new())),
            next: watch::Sender::new(0),
        }
    }
}

impl EventLog {
    pub fn push(&self, event: AgentEvent) {
        let mut inner = self.inner.lock().expect("event log");
        inner.1.push_back(event);
        let next = inner.0 + inner.1.len() as u64;
        drop(inner);
        self.next.send_replace(next);
    }

    /// Events numbered `after` and later, waiting up to `wait` for one if there is none.
    pub async fn since(&self, after: u64, wait: Duration) -> (u64, Vec<AgentEvent>) {
        let mut rx = self.next.subscribe();
        if *rx.borrow_and_update() <= after {
            let _ = tokio::time::timeout(wait, rx.wait_for(|&n| n > after)).await;
        }
        let mut inner = self.inner.lock().expect("event log");
        let (first, events) = &mut *inner;
        // Everything before `after` was delivered in an earlier answer: release it.
        while *first < after && !events.is_empty() {
            events.pop_front();
            *first += 1;
        }
        let skip = after.saturating_sub(*first) as usize;
        let out: Vec<AgentEvent> = events.iter().skip(skip).cloned().collect();
        (*first + events.len() as u64, out)
    }
}
