//! The run's status line, printed on a ticker: every stage's state (a running stage's with the
//! last line its log has so far, wherever its compute is) and every copy under way.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use skyx_pipeline::schedule::{Dag, StageState, TransferState};

use super::Driver;

/// How much of a log's end is read for its last line.
const TAIL_BYTES: u64 = 4096;
/// How much of that line a status line shows.
const SHOWN_CHARS: usize = 60;

impl Driver {
    /// One line on every stage and every copy under way.
    pub(super) fn status_line(&self, dag: &Dag) -> String {
        let now = self.started.elapsed().as_secs_f64();
        let mut parts: Vec<String> = (0..self.run.stages.len())
            .map(|s| {
                let name = &self.run.stages[s].name;
                match dag.stage_state(s) {
                    StageState::Waiting => format!("{name} waiting"),
                    StageState::Provisioning => format!("{name} provisioning"),
                    StageState::Provisioned => {
                        let inbound: Vec<usize> = (0..self.run.edges.len())
                            .filter(|&t| self.run.edges[t].to_stage == s)
                            .collect();
                        let landed = inbound
                            .iter()
                            .filter(|&&t| dag.transfer_state(t) == TransferState::Landed)
                            .count();
                        format!("{name} up, {landed}/{} inputs in", inbound.len())
                    }
                    StageState::Running => {
                        let mut part = format!(
                            "{name} running {:.0} s",
                            now - self.stage_reports[s].started_s.unwrap_or(now)
                        );
                        let log = self.run.root.join(format!("{name}.log"));
                        if let Some(line) = last_line_of(&log) {
                            part.push_str(&format!(" ({line})"));
                        }
                        part
                    }
                    StageState::Succeeded => format!("{name} done"),
                    StageState::Failed => format!("{name} failed"),
                }
            })
            .collect();
        let progress = self.progress.lock().expect("progress");
        for (&t, &(landed, total)) in progress.iter() {
            let e = &self.run.edges[t];
            parts.push(format!(
                "{}→{} {:.1}/{:.1} MB",
                e.name,
                self.run.stages[e.to_stage].name,
                landed as f64 / 1e6,
                total as f64 / 1e6
            ));
        }
        format!("status: {}", parts.join(" · "))
    }
}

/// The last line of `log` that says something, cut to [`SHOWN_CHARS`]; `None` for no log yet.
fn last_line_of(log: &Path) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut tail = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let mut shown: String = line.chars().take(SHOWN_CHARS).collect();
    if line.chars().count() > SHOWN_CHARS {
        shown.push('…');
    }
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logs_last_line_is_its_last_that_says_something_cut_short() {
        let dir = std::env::temp_dir().join(format!("skyx-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("s.log");
        assert_eq!(last_line_of(&log), None);
        std::fs::write(&log, "starting\nepoch 3/10 loss 0.25\n\n").unwrap();
        assert_eq!(last_line_of(&log).unwrap(), "epoch 3/10 loss 0.25");
        let long = format!("{}\n{}", "x".repeat(10_000), "é".repeat(100));
        std::fs::write(&log, long).unwrap();
        assert_eq!(
            last_line_of(&log).unwrap(),
            format!("{}…", "é".repeat(SHOWN_CHARS))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
