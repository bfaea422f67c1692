//! The pipeline executor's core: a plain state machine over stages and the transfers that feed
//! them. The driver feeds it what happened ([`DagEvent`]) and carries out what it asks
//! ([`DagCommand`]); no IO, no clock, no async, so every ordering is testable.
//!
//! Rules:
//! - A transfer starts as soon as its data exists: pipeline inputs at once, a stage's output
//!   when the stage succeeds.
//! - A stage's compute is provisioned as soon as every stage it reads from has succeeded (so
//!   provisioning overlaps the transfers into it), and it runs only when its compute is up and
//!   every one of its inputs has landed in its region.
//! - A stage's compute is released when the stage exits.
//! - A provisioning capacity error asks for a re-plan of that stage away from the region; the
//!   driver may also move every stage [`Dag::replaceable`] names (those not started), and
//!   answers with [`Dag::relocate`], which re-targets the moved stages' transfers.
//! - Any other failure aborts the pipeline: running work is released, nothing new starts.

/// Where a transfer's data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource {
    /// A pipeline input (index into the spec's inputs).
    Input(usize),
    /// A stage's output.
    Stage(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagStage {
    pub name: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagTransfer {
    pub source: DataSource,
    pub to_stage: usize,
    pub src_region: String,
    pub dst_region: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    Waiting,
    Provisioning,
    /// Compute up, inputs not all landed.
    Provisioned,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    Waiting,
    Running,
    Landed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DagEvent {
    Provisioned {
        stage: usize,
    },
    ProvisionFailed {
        stage: usize,
        capacity: bool,
        why: String,
    },
    TransferLanded {
        transfer: usize,
    },
    TransferFailed {
        transfer: usize,
        why: String,
    },
    StageExited {
        stage: usize,
        success: bool,
        why: String,
    },
    /// The stage's compute could not run it after all (a cluster whose nodes never offered
    /// what it asks): like a provisioning that found no room, it is placed elsewhere.
    StageUnschedulable {
        stage: usize,
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DagCommand {
    Provision {
        stage: usize,
    },
    StartTransfer {
        transfer: usize,
    },
    RunStage {
        stage: usize,
    },
    /// Stop paying for the stage's compute.
    Release {
        stage: usize,
    },
    /// No capacity for the stage in `region`: place it elsewhere and call `relocate`.
    Replan {
        stage: usize,
        region: String,
        why: String,
    },
    /// Every stage succeeded.
    Finish,
    /// The pipeline failed; everything still provisioned has been asked to release.
    Abort {
        why: String,
    },
}

#[derive(Debug, Clone)]
pub struct Dag {
    stages: Vec<DagStage>,
    transfers: Vec<DagTransfer>,
    stage_state: Vec<StageState>,
    transfer_state: Vec<TransferState>,
    aborted: bool,
    finished: bool,
}

impl Dag {
    pub fn new(stages: Vec<DagStage>, transfers: Vec<DagTransfer>) -> Dag {
        assert!(
            transfers.iter().all(|t| t.to_stage < stages.len()
                && match t.source {
                    DataSource::Stage(u) => u < stages.len() && u != t.to_stage,
                    DataSource::Input(_) => true,
                }),
            "transfers refer to stages of the DAG"
        );
        Dag {
            stage_state: vec![StageState::Waiting; stages.len()],
            transfer_state: vec![TransferState::Waiting; transfers.len()],
            stages,
            transfers,
            aborted: false,
            finished: false,
        }
    }

    pub fn stage(&self, s: usize) -> &DagStage {
        &self.stages[s]
    }

    pub fn transfer(&self, t: usize) -> &DagTransfer {
        &self.transfers[t]
    }

    pub fn stage_state(&self, s: usize) -> StageState {
        self.stage_state[s]
    }

    pub fn transfer_state(&self, t: usize) -> TransferState {
        self.transfer_state[t]
    }

    pub fn is_done(&self) -> bool {
        self.finished || self.aborted
    }

    /// Marks work a previous run of the same pipeline finished (from its journal): those
    /// stages and transfers are not done again. Call before `start`.
    pub fn restore(&mut self, succeeded: &[usize], landed: &[usize]) {
        for &s in succeeded {
            self.stage_state[s] = StageState::Succeeded;
        }
        for &t in landed {
            self.transfer_state[t] = TransferState::Landed;
        }
    }

    /// The first commands: every transfer whose data exists, every stage that can be
    /// provisioned.
    pub fn start(&mut self) -> Vec<DagCommand> {
        let mut out = Vec::new();
        self.advance(&mut out);
        out
    }

    pub fn handle(&mut self, event: DagEvent) -> Vec<DagCommand> {
        let mut out = Vec::new();
        if self.is_done() {
            return out;
        }
        match event {
            DagEvent::Provisioned { stage } => {
                if self.stage_state[stage] == StageState::Provisioning {
                    self.stage_state[stage] = StageState::Provisioned;
                }
            }
            DagEvent::ProvisionFailed {
                stage,
                capacity: true,
                why,
            } => {
                // Back to waiting until the driver relocates it.
                self.stage_state[stage] = StageState::Waiting;
                out.push(DagCommand::Replan {
                    stage,
                    region: self.stages[stage].region.clone(),
                    why,
                });
                return out;
            }
            DagEvent::ProvisionFailed { stage, why, .. } => {
                self.stage_state[stage] = StageState::Failed;
                self.abort(
                    format!(
                        "provisioning stage {} failed: {why}",
                        self.stages[stage].name
                    ),
                    &mut out,
                );
                return out;
            }
            DagEvent::TransferLanded { transfer } => {
                if self.transfer_state[transfer] == TransferState::Running {
                    self.transfer_state[transfer] = TransferState::Landed;
                }
            }
            DagEvent::TransferFailed { transfer, why } => {
                self.transfer_state[transfer] = TransferState::Failed;
                let t = &self.transfers[transfer];
                let what = format!(
                    "moving {} to stage {} ({} → {}) failed: {why}",
                    match t.source {
                        DataSource::Input(i) => format!("input #{i}"),
                        DataSource::Stage(u) => format!("the output of {}", self.stages[u].name),
                    },
                    self.stages[t.to_stage].name,
                    t.src_region,
                    t.dst_region
                );
                self.abort(what, &mut out);
                return out;
            }
            DagEvent::StageUnschedulable { stage, why } => {
                if self.stage_state[stage] != StageState::Running {
                    return out;
                }
                self.stage_state[stage] = StageState::Waiting;
                out.push(DagCommand::Release { stage });
                out.push(DagCommand::Replan {
                    stage,
                    region: self.stages[stage].region.clone(),
                    why,
                });
                return out;
            }
            DagEvent::StageExited {
                stage,
                success,
                why,
            } => {
                if self.stage_state[stage] != StageState::Running {
                    return out;
                }
                out.push(DagCommand::Release { stage });
                if success {
                    self.stage_state[stage] = StageState::Succeeded;
                } else {
                    self.stage_state[stage] = StageState::Failed;
                    self.abort(
                        format!("stage {} failed: {why}", self.stages[stage].name),
                        &mut out,
                    );
                    return out;
                }
            }
        }
        self.advance(&mut out);
        out
    }

    /// Which stages a re-plan after `failed` found no capacity may move: `failed` itself, and
    /// every stage that has not started in any way (not provisioned, none of its inputs moving
    /// or landed). The rest keep their places: their compute or data is already committed.
    pub fn replaceable(&self, failed: usize) -> Vec<bool> {
        (0..self.stages.len())
            .map(|s| {
                s == failed
                    || (self.stage_state[s] == StageState::Waiting
                        && self.transfers.iter().enumerate().all(|(t, tr)| {
                            tr.to_stage != s || self.transfer_state[t] == TransferState::Waiting
                        }))
            })
            .collect()
    }

    /// Places stages in new regions after a re-plan: their inbound transfers that were heading
    /// for the old regions go to the new ones (moved again if they had started or landed
    /// there), and their outputs will leave from the new ones.
    pub fn relocate(&mut self, moves: &[(usize, String)]) -> Vec<DagCommand> {
        let mut out = Vec::new();
        if self.is_done() {
            return out;
        }
        for (stage, region) in moves {
            let stage = *stage;
            self.stage_state[stage] = StageState::Waiting;
            if self.stages[stage].region == *region {
                // Another instance in the same region: the data there is still good.
                continue;
            }
            self.stages[stage].region = region.clone();
            for (t, tr) in self.transfers.iter_mut().enumerate() {
                if tr.to_stage == stage {
                    tr.dst_region = region.clone();
                    // Whatever reached the old region is of no use there; a running copy's
                    // result is ignored when it lands (`Running` → restarted below).
                    self.transfer_state[t] = TransferState::Waiting;
                }
                if tr.source == DataSource::Stage(stage) {
                    tr.src_region = region.clone();
                }
            }
        }
        self.advance(&mut out);
        out
    }

    fn data_exists(&self, source: DataSource) -> bool {
        match source {
            DataSource::Input(_) => true,
            DataSource::Stage(u) => self.stage_state[u] == StageState::Succeeded,
        }
    }

    fn advance(&mut self, out: &mut Vec<DagCommand>) {
        if self.is_done() {
            return;
        }
        for t in 0..self.transfers.len() {
            if self.transfer_state[t] == TransferState::Waiting
                && self.data_exists(self.transfers[t].source)
                && self.stage_state[self.transfers[t].to_stage] != StageState::Succeeded
            {
                self.transfer_state[t] = TransferState::Running;
                out.push(DagCommand::StartTransfer { transfer: t });
            }
        }
        for s in 0..self.stages.len() {
            let inbound = || {
                self.transfers
                    .iter()
                    .enumerate()
                    .filter(move |(_, t)| t.to_stage == s)
            };
            match self.stage_state[s] {
                StageState::Waiting if inbound().all(|(_, t)| self.data_exists(t.source)) => {
                    self.stage_state[s] = StageState::Provisioning;
                    out.push(DagCommand::Provision { stage: s });
                }
                StageState::Provisioned
                    if inbound().all(|(i, _)| self.transfer_state[i] == TransferState::Landed) =>
                {
                    self.stage_state[s] = StageState::Running;
                    out.push(DagCommand::RunStage { stage: s });
                }
                _ => {}
            }
        }
        if self.stage_state.iter().all(|s| *s == StageState::Succeeded) {
            self.finished = true;
            out.push(DagCommand::Finish);
        }
    }

    fn abort(&mut self, why: String, out: &mut Vec<DagCommand>) {
        for s in 0..self.stages.len() {
            if matches!(
                self.stage_state[s],
                StageState::Provisioning | StageState::Provisioned | StageState::Running
            ) {
                out.push(DagCommand::Release { stage: s });
            }
        }
        self.aborted = true;
        out.push(DagCommand::Abort { why });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// in0 → a → b → c, and in1 → c; a, b, c in three regions.
    fn chain() -> Dag {
        let st = |n: &str, r: &str| DagStage {
            name: n.into(),
            region: r.into(),
        };
        let tr = |source, to_stage, src: &str, dst: &str| DagTransfer {
            source,
            to_stage,
            src_region: src.into(),
            dst_region: dst.into(),
        };
        Dag::new(
            vec![st("a", "r1"), st("b", "r2"), st("c", "r3")],
            vec![
                tr(DataSource::Input(0), 0, "r0", "r1"),
                tr(DataSource::Stage(0), 1, "r1", "r2"),
                tr(DataSource::Stage(1), 2, "r2", "r3"),
                tr(DataSource::Input(1), 2, "r9", "r3"),
            ],
        )
    }

    use DagCommand::*;
    use DagEvent::*;

    #[test]
    fn stages_run_only_behind_their_landed_inputs_and_provisioning_overlaps_transfers() {
        let mut d = chain();
        // Both inputs move at once; only a can be provisioned (b and c wait for stages).
        assert_eq!(
            d.start(),
            vec![
                StartTransfer { transfer: 0 },
                StartTransfer { transfer: 3 },
                Provision { stage: 0 }
            ]
        );
        // Compute up before the data: nothing runs yet.
        assert_eq!(d.handle(Provisioned { stage: 0 }), vec![]);
        assert_eq!(
            d.handle(TransferLanded { transfer: 0 }),
            vec![RunStage { stage: 0 }]
        );
        // a succeeds: its output moves and b is provisioned at the same time.
        assert_eq!(
            d.handle(StageExited {
                stage: 0,
                success: true,
                why: String::new()
            }),
            vec![
                Release { stage: 0 },
                StartTransfer { transfer: 1 },
                Provision { stage: 1 }
            ]
        );
        assert_eq!(d.handle(TransferLanded { transfer: 1 }), vec![]);
        assert_eq!(
            d.handle(Provisioned { stage: 1 }),
            vec![RunStage { stage: 1 }]
        );
        assert_eq!(
            d.handle(StageExited {
                stage: 1,
                success: true,
                why: String::new()
            }),
            vec![
                Release { stage: 1 },
                StartTransfer { transfer: 2 },
                Provision { stage: 2 }
            ]
        );
        assert_eq!(d.handle(Provisioned { stage: 2 }), vec![]);
        assert_eq!(
            d.handle(TransferLanded { transfer: 2 }),
            vec![],
            "in1 has not landed"
        );
        assert_eq!(
            d.handle(TransferLanded { transfer: 3 }),
            vec![RunStage { stage: 2 }]
        );
        assert_eq!(
            d.handle(StageExited {
                stage: 2,
                success: true,
                why: String::new()
            }),
            vec![Release { stage: 2 }, Finish]
        );
        assert!(d.is_done());
    }

    #[test]
    fn a_failed_stage_releases_what_runs_and_starts_nothing_more() {
        let mut d = chain();
        d.start();
        d.handle(Provisioned { stage: 0 });
        d.handle(TransferLanded { transfer: 0 });
        let out = d.handle(StageExited {
            stage: 0,
            success: false,
            why: "exit 3".into(),
        });
        assert_eq!(out[0], Release { stage: 0 });
        assert!(matches!(&out[1], Abort { why } if why.contains("stage a failed: exit 3")));
        assert_eq!(d.handle(TransferLanded { transfer: 3 }), vec![]);
    }

    #[test]
    fn a_capacity_error_relocates_the_stage_and_its_inputs() {
        let mut d = chain();
        d.start();
        d.handle(TransferLanded { transfer: 0 });
        let out = d.handle(ProvisionFailed {
            stage: 0,
            capacity: true,
            why: "no r1 VMs".into(),
        });
        assert_eq!(
            out,
            vec![Replan {
                stage: 0,
                region: "r1".into(),
                why: "no r1 VMs".into()
            }]
        );
        // Moved to r5: the input goes again, to r5, and a is provisioned there.
        assert_eq!(
            d.relocate(&[(0, "r5".into())]),
            vec![StartTransfer { transfer: 0 }, Provision { stage: 0 }]
        );
        assert_eq!(d.transfer(0).dst_region, "r5");
        assert_eq!(d.transfer(1).src_region, "r5");
        // (The driver cancels the old copy before relocating, so the landing that follows is
        // the new copy's.)
        d.handle(Provisioned { stage: 0 });
        assert_eq!(
            d.handle(TransferLanded { transfer: 0 }),
            vec![RunStage { stage: 0 }]
        );
    }

    #[test]
    fn a_stage_its_compute_could_not_schedule_is_placed_elsewhere() {
        let mut d = chain();
        d.start();
        d.handle(Provisioned { stage: 0 });
        assert_eq!(
            d.handle(TransferLanded { transfer: 0 }),
            vec![RunStage { stage: 0 }]
        );
        let out = d.handle(StageUnschedulable {
            stage: 0,
            why: "no node has 8 CPUs".into(),
        });
        assert_eq!(
            out,
            vec![
                Release { stage: 0 },
                Replan {
                    stage: 0,
                    region: "r1".into(),
                    why: "no node has 8 CPUs".into()
                }
            ]
        );
        assert!(d.replaceable(0)[0]);
        // Moved: its input goes again, to the new region, where it is provisioned.
        assert_eq!(
            d.relocate(&[(0, "r5".into())]),
            vec![StartTransfer { transfer: 0 }, Provision { stage: 0 }]
        );
        // A word that comes late (the stage is no longer running) changes nothing.
        assert_eq!(
            d.handle(StageUnschedulable {
                stage: 0,
                why: "late".into()
            }),
            vec![]
        );
    }

    #[test]
    fn only_stages_that_have_not_started_are_replaceable() {
        let mut d = chain();
        d.start();
        // a is provisioning; c's input in1 is moving; b has not started in any way.
        assert_eq!(d.replaceable(0), vec![true, true, false]);
        d.handle(TransferLanded { transfer: 3 });
        assert_eq!(d.replaceable(0), vec![true, true, false]);
        // b and c move together: b's output will leave from b's new region.
        d.handle(ProvisionFailed {
            stage: 0,
            capacity: true,
            why: "none".into(),
        });
        assert_eq!(
            d.relocate(&[(0, "r5".into()), (1, "r6".into())]),
            vec![StartTransfer { transfer: 0 }, Provision { stage: 0 }]
        );
        assert_eq!(d.transfer(1).src_region, "r5");
        assert_eq!(d.transfer(1).dst_region, "r6");
        assert_eq!(d.transfer(2).src_region, "r6");
    }

    #[test]
    fn a_restored_run_skips_finished_work() {
        let mut d = chain();
        d.restore(&[0, 1], &[0, 1, 3]);
        // a and b are done; b's output must still reach c; in1 landed already.
        assert_eq!(
            d.start(),
            vec![StartTransfer { transfer: 2 }, Provision { stage: 2 }]
        );
    }

    #[test]
    fn other_provisioning_and_transfer_failures_abort() {
        let mut d = chain();
        d.start();
        let out = d.handle(TransferFailed {
            transfer: 3,
            why: "bucket gone".into(),
        });
        assert!(out.contains(&Release { stage: 0 }));
        assert!(matches!(out.last(), Some(Abort { why }) if why.contains("bucket gone")));
        let mut d = chain();
        d.start();
        let out = d.handle(ProvisionFailed {
            stage: 0,
            capacity: false,
            why: "bad image".into(),
        });
        assert!(matches!(out.last(), Some(Abort { why }) if why.contains("bad image")));
    }
}
