//! The way out of an agent on a route: one branch on a chain, several where a broadcast's tree
//! forks. A chunk goes to every live branch behind one of its destinations (the frame's
//! `dests`), its payload shared, so each byte crosses each link of the tree once.
//!
//! Each branch is a hop of its own (its connections, its window, its give-ups), reporting under
//! its own route id, so the gateway knows which link a loss or a dead hop was on. A branch
//! that failed is down for good; the gateway rebuilds the route.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use skyx_protocol::{DataFrame, Dests, SenderEvent};
use tokio::sync::mpsc;

use crate::hop::HopSender;

/// What a branch reports, with its route id and its down flag (set it once the hop has no
/// connection left; [`Fork::send`] skips it from then on).
pub type BranchEvents = Arc<dyn Fn(u32, &AtomicBool, SenderEvent) + Send + Sync>;

/// One branch as it is opened: its hop and the hop's events.
#[derive(Debug)]
pub struct ForkBranch {
    pub route: u32,
    pub dests: Dests,
    pub hop: Arc<HopSender>,
    pub events: mpsc::UnboundedReceiver<SenderEvent>,
}

struct Branch {
    route: u32,
    dests: Dests,
    hop: Arc<HopSender>,
    down: Arc<AtomicBool>,
}

/// The branches of one route at one agent.
pub struct Fork {
    branches: Vec<Branch>,
    report: BranchEvents,
    drains: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.branches.iter().map(|b| (b.route, b.dests)))
            .finish()
    }
}

impl Fork {
    /// Opens the fork over `branches` (at least one); each branch's events go to `report` as
    /// they come.
    pub fn new(branches: Vec<ForkBranch>, report: BranchEvents) -> Fork {
        assert!(!branches.is_empty(), "a fork has a branch");
        let mut out = Vec::with_capacity(branches.len());
        let mut drains = Vec::with_capacity(branches.len());
        for b in branches {
            let down = Arc::new(AtomicBool::new(false));
            let (route, flag, report, mut events) =
                (b.route, down.clone(), report.clone(), b.events);
            drains.push(tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    report(route, &flag, e);
                }
            }));
            out.push(Branch {
                route: b.route,
                dests: b.dests,
                hop: b.hop,
                down,
            });
        }
        Fork {
            branches: out,
            report,
            drains,
        }
    }

    /// A fork of one branch to every destination (a chain's hop).
    pub fn single(
        route: u32,
        hop: Arc<HopSender>,
        events: mpsc::UnboundedReceiver<SenderEvent>,
        report: BranchEvents,
    ) -> Fork {
        Fork::new(
            vec![ForkBranch {
                route,
                dests: Dests::ALL,
                hop,
                events,
            }],
            report,
        )
    }

    /// Sends `frame` on every live branch behind one of its destinations, at once (each waits
    /// while its own window is full, so the slowest branch paces the fork). A branch whose hop
    /// is gone is marked down and reported as having given the chunk up. Returns how many
    /// branches took it.
    pub async fn send(&self, frame: &DataFrame) -> usize {
        let dests = frame.chunk.dests;
        let sends = self
            .branches
            .iter()
            .filter(|b| b.dests.meets(dests))
            .map(|b| async move {
                // A branch already down cannot take it either: reported like one that just
                // went down, so the gateway hears of every chunk it did not carry.
                let res = match b.down.load(Ordering::Relaxed) {
                    true => Err(crate::hop::HopError::Closed),
                    false => b.hop.send(frame.clone()).await,
                };
                (b, res)
            });
        let mut taken = 0;
        for (b, res) in futures::future::join_all(sends).await {
            match res {
                Ok(()) => taken += 1,
                Err(_) => {
                    (self.report)(
                        b.route,
                        &b.down,
                        SenderEvent::GaveUp {
                            chunk: frame.chunk.chunk,
                            attempts: 0,
                            last: skyx_protocol::Failure::ConnectionLost,
                        },
                    );
                    b.down.store(true, Ordering::Relaxed);
                }
            }
        }
        taken
    }

    /// Whether no branch behind `dests` is live: nothing for them can go out any more.
    pub fn down_for(&self, dests: Dests) -> bool {
        self.branches
            .iter()
            .filter(|b| b.dests.meets(dests))
            .all(|b| b.down.load(Ordering::Relaxed))
    }

    /// Ends every branch once what it holds is acknowledged or given up (a hop shared with
    /// the agent, to read its counters, ends with the agent).
    pub async fn finish(self) {
        for (b, drain) in self.branches.into_iter().zip(self.drains) {
            if let Ok(hop) = Arc::try_unwrap(b.hop) {
                hop.finish().await;
                // Its events end with it.
                let _ = drain.await;
            }
        }
    }
}
