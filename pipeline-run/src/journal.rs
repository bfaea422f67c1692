//! The pipeline's journal: what a run has finished, durably, so a rerun of the same spec and
//! plan skips it. redb, the technology of a copy's journal (`skyx_gateway::Journal`): the
//! state is one small document (placements after re-plans, stages that succeeded, transfers
//! that landed), rewritten whole in one transaction per step, under the run's fingerprint.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::hooks::Placement;

const STATE: TableDefinition<&str, &str> = TableDefinition::new("pipeline");
const FINGERPRINT: &str = "fingerprint";
const DOCUMENT: &str = "state";

/// What a previous run finished.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunJournal {
    /// This run's own name, made when it starts afresh and kept by its resumes: what compute
    /// outside this machine (a Ray cluster's jobs) knows the run's work by.
    #[serde(default)]
    pub run_id: String,
    /// Stage → where it runs (after any re-plans).
    pub placements: BTreeMap<String, Placement>,
    pub succeeded: BTreeSet<String>,
    /// "data→stage@region" of landed transfers.
    pub landed: BTreeSet<String>,
}

/// The journal file of a run (`state.redb` under its root).
#[derive(Debug)]
pub struct PipelineJournal {
    db: Database,
    path: PathBuf,
}

impl PipelineJournal {
    /// The file under a run's root directory.
    pub fn path_in(root: &Path) -> PathBuf {
        root.join("state.redb")
    }

    /// Opens (or creates) the journal at `path`, and returns what it holds for `fingerprint`:
    /// nothing when it is new or was written for another spec or plan.
    pub fn open(
        path: &Path,
        fingerprint: &str,
    ) -> Result<(PipelineJournal, Option<RunJournal>), String> {
        let fail = |e: &dyn std::fmt::Display| format!("journal {}: {e}", path.display());
        let db = Database::create(path).map_err(|e| fail(&e))?;
        let previous = {
            let tx = db.begin_read().map_err(|e| fail(&e))?;
            match tx.open_table(STATE) {
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(fail(&e)),
                Ok(table) => {
                    let get = |k: &str| -> Result<Option<String>, String> {
                        Ok(table
                            .get(k)
                            .map_err(|e| fail(&e))?
                            .map(|v| v.value().to_string()))
                    };
                    match (get(FINGERPRINT)?, get(DOCUMENT)?) {
                        (Some(fp), Some(doc)) if fp == fingerprint => {
                            Some(serde_json::from_str(&doc).map_err(|e| fail(&e))?)
                        }
                        _ => None,
                    }
                }
            }
        };
        let journal = PipelineJournal {
            db,
            path: path.to_path_buf(),
        };
        Ok((journal, previous))
    }

    /// Records `state` for `fingerprint` in one durable transaction.
    pub fn save(&self, fingerprint: &str, state: &RunJournal) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| format!("journal {}: {e}", self.path.display());
        let doc = serde_json::to_string(state).map_err(|e| fail(&e))?;
        let tx = self.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut table = tx.open_table(STATE).map_err(|e| fail(&e))?;
            table
                .insert(FINGERPRINT, fingerprint)
                .map_err(|e| fail(&e))?;
            table.insert(DOCUMENT, doc.as_str()).map_err(|e| fail(&e))?;
        }
        tx.commit().map_err(|e| fail(&e))
    }
}

/// The placements the journal under `root` holds for `fingerprint` (for tests and tools).
pub fn journaled_placements(
    root: &Path,
    fingerprint: &str,
) -> Result<BTreeMap<String, Placement>, String> {
    let (_, state) = PipelineJournal::open(&PipelineJournal::path_in(root), fingerprint)?;
    Ok(state.map(|s| s.placements).unwrap_or_default())
}
