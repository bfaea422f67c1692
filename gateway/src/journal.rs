//! The job journal: what a copy has achieved, durably, so `skyx cp --resume` after a crash
//! re-sends nothing that landed.
//!
//! One redb file per (source, destination) pair. It records the copy's fingerprint (every
//! object's keys, size and version, and the chunk size, so a resume never mixes two different
//! sources), the multipart uploads opened at the destination, every landed chunk with its part
//! receipt and checksum, and every object completed and verified. Each batch of events the
//! gateway handles is one transaction, committed before the gateway acts on it (completing an
//! object), so what the journal says happened did happen.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const UPLOADS: TableDefinition<u32, &str> = TableDefinition::new("uploads");
const LANDED: TableDefinition<u64, &str> = TableDefinition::new("landed");
const COMPLETE: TableDefinition<u32, u8> = TableDefinition::new("complete");
/// Upload id → destination key of uploads whose abort failed (the store was down): retried at
/// the end of the run and at the start of the next one, so no parts stay billed.
const ABORTS: TableDefinition<&str, &str> = TableDefinition::new("aborts");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("job journal {path}: {message}")]
    Db { path: PathBuf, message: String },
}

/// A chunk the sink wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandedChunk {
    pub object: u32,
    /// (part number, etag) for a part of a multipart upload; `None` for a whole object.
    pub part: Option<(u32, String)>,
    pub raw_len: u64,
    pub raw_crc32c: u32,
}

/// Everything the journal holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalState {
    pub fingerprint: String,
    /// Object → (upload id, destination key).
    pub uploads: HashMap<u32, (String, String)>,
    pub landed: HashMap<u64, LandedChunk>,
    pub complete: HashSet<u32>,
    /// Upload id → destination key of uploads still to abort.
    pub pending_aborts: HashMap<String, String>,
}

/// Changes made together.
#[derive(Debug, Clone, Default)]
pub struct JournalBatch {
    /// (object, upload id, destination key)
    pub uploads: Vec<(u32, String, String)>,
    pub landed: Vec<(u64, LandedChunk)>,
    pub complete: Vec<u32>,
    /// Objects given up: their upload and landed chunks are forgotten (the upload was aborted,
    /// so a resume must start them over).
    pub forget: Vec<(u32, Vec<u64>)>,
    /// (upload id, destination key) of uploads whose abort failed: to retry.
    pub abort_later: Vec<(String, String)>,
    /// Upload ids of pending aborts that have now succeeded.
    pub aborted: Vec<String>,
}

impl JournalBatch {
    pub fn is_empty(&self) -> bool {
        self.uploads.is_empty()
            && self.landed.is_empty()
            && self.complete.is_empty()
            && self.forget.is_empty()
            && self.abort_later.is_empty()
            && self.aborted.is_empty()
    }
}

#[derive(Debug)]
pub struct Journal {
    db: Database,
    path: PathBuf,
}

fn fail(path: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Where the journal of a copy from `src` to `dst` lives under `state_dir`.
pub fn journal_path(state_dir: &Path, src: &str, dst: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{src}\n{dst}").as_bytes());
    state_dir
        .join("jobs")
        .join(format!("{}.redb", hex::encode(&digest[..12])))
}

/// The one fingerprint function of copies and pipelines: SHA-256 (hex) of `parts`, each
/// length-prefixed so that no two different lists of parts collide.
pub fn digest<P: AsRef<[u8]>>(parts: impl IntoIterator<Item = P>) -> String {
    let mut h = Sha256::new();
    for part in parts {
        absorb(&mut h, part.as_ref());
    }
    hex::encode(h.finalize())
}

/// One part of a [`digest`], length-prefixed.
fn absorb(h: &mut Sha256, part: &[u8]) {
    h.update((part.len() as u64).to_le_bytes());
    h.update(part);
}

/// A digest of what is being copied: any change in the object list, sizes, versions or chunk
/// size gives another fingerprint.
pub fn fingerprint<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a str, u64, &'a str)>,
    chunk: u64,
) -> String {
    // The parts `digest` would take, absorbed as they come: no copy per object.
    let mut h = Sha256::new();
    absorb(&mut h, &chunk.to_le_bytes());
    for (src, dst, size, version) in items {
        for part in [src.as_bytes(), dst.as_bytes(), version.as_bytes()] {
            absorb(&mut h, part);
        }
        absorb(&mut h, &size.to_le_bytes());
    }
    hex::encode(h.finalize())
}

impl Journal {
    /// A new, empty journal at `path` for a copy with `fingerprint`, replacing any other.
    pub fn create(path: &Path, fingerprint: &str) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(path, e))?;
        }
        let _ = std::fs::remove_file(path);
        let db = Database::create(path).map_err(|e| fail(path, e))?;
        let j = Journal {
            db,
            path: path.to_path_buf(),
        };
        let tx = j.db.begin_write().map_err(|e| fail(path, e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| fail(path, e))?;
            meta.insert("fingerprint", fingerprint)
                .map_err(|e| fail(path, e))?;
            tx.open_table(UPLOADS).map_err(|e| fail(path, e))?;
            tx.open_table(LANDED).map_err(|e| fail(path, e))?;
            tx.open_table(COMPLETE).map_err(|e| fail(path, e))?;
            tx.open_table(ABORTS).map_err(|e| fail(path, e))?;
        }
        tx.commit().map_err(|e| fail(path, e))?;
        Ok(j)
    }

    /// The journal at `path` and what it holds, if there is one.
    pub fn open(path: &Path) -> Result<Option<(Journal, JournalState)>, JournalError> {
        if !path.exists() {
            return Ok(None);
        }
        let db = Database::open(path).map_err(|e| fail(path, e))?;
        let mut state = JournalState::default();
        {
            let tx = db.begin_read().map_err(|e| fail(path, e))?;
            let meta = tx.open_table(META).map_err(|e| fail(path, e))?;
            state.fingerprint = meta
                .get("fingerprint")
                .map_err(|e| fail(path, e))?
                .map(|v| v.value().to_string())
                .unwrap_or_default();
            for row in tx
                .open_table(UPLOADS)
                .map_err(|e| fail(path, e))?
                .iter()
                .map_err(|e| fail(path, e))?
            {
                let (k, v) = row.map_err(|e| fail(path, e))?;
                let (id, key) = v.value().split_once('\n').unwrap_or((v.value(), ""));
                state
                    .uploads
                    .insert(k.value(), (id.to_string(), key.to_string()));
            }
            for row in tx
                .open_table(LANDED)
                .map_err(|e| fail(path, e))?
                .iter()
                .map_err(|e| fail(path, e))?
            {
                let (k, v) = row.map_err(|e| fail(path, e))?;
                let chunk: LandedChunk =
                    serde_json::from_str(v.value()).map_err(|e| fail(path, e))?;
                state.landed.insert(k.value(), chunk);
            }
            for row in tx
                .open_table(COMPLETE)
                .map_err(|e| fail(path, e))?
                .iter()
                .map_err(|e| fail(path, e))?
            {
                let (k, _) = row.map_err(|e| fail(path, e))?;
                state.complete.insert(k.value());
            }
            // Journals written before pending aborts were kept have no such table.
            if let Ok(aborts) = tx.open_table(ABORTS) {
                for row in aborts.iter().map_err(|e| fail(path, e))? {
                    let (id, key) = row.map_err(|e| fail(path, e))?;
                    state
                        .pending_aborts
                        .insert(id.value().to_string(), key.value().to_string());
                }
            }
        }
        Ok(Some((
            Journal {
                db,
                path: path.to_path_buf(),
            },
            state,
        )))
    }

    /// Records `batch` in one durable transaction.
    pub fn record(&self, batch: &JournalBatch) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let p = &self.path;
        let tx = self.db.begin_write().map_err(|e| fail(p, e))?;
        {
            let mut uploads = tx.open_table(UPLOADS).map_err(|e| fail(p, e))?;
            for (object, id, key) in &batch.uploads {
                // Upload ids never contain a newline (S3's are URL-safe, ours are hex).
                let v = format!("{id}\n{key}");
                uploads
                    .insert(*object, v.as_str())
                    .map_err(|e| fail(p, e))?;
            }
            let mut landed = tx.open_table(LANDED).map_err(|e| fail(p, e))?;
            for (chunk, l) in &batch.landed {
                let v = serde_json::to_string(l).expect("serializable");
                landed.insert(*chunk, v.as_str()).map_err(|e| fail(p, e))?;
            }
            let mut complete = tx.open_table(COMPLETE).map_err(|e| fail(p, e))?;
            for object in &batch.complete {
                complete.insert(*object, 1).map_err(|e| fail(p, e))?;
            }
            for (object, chunks) in &batch.forget {
                uploads.remove(*object).map_err(|e| fail(p, e))?;
                for c in chunks {
                    landed.remove(*c).map_err(|e| fail(p, e))?;
                }
            }
            let mut aborts = tx.open_table(ABORTS).map_err(|e| fail(p, e))?;
            for (id, key) in &batch.abort_later {
                aborts
                    .insert(id.as_str(), key.as_str())
                    .map_err(|e| fail(p, e))?;
            }
            for id in &batch.aborted {
                aborts.remove(id.as_str()).map_err(|e| fail(p, e))?;
            }
        }
        tx.commit().map_err(|e| fail(p, e))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The copy is done: the journal goes.
    pub fn remove(self) {
        let path = self.path.clone();
        drop(self.db);
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_copy_fingerprint_is_the_digest_of_its_parts() {
        let items = [("a", "x/a", 3u64, "v1"), ("b", "x/b", 0, "")];
        let mut parts: Vec<Vec<u8>> = vec![8u64.to_le_bytes().to_vec()];
        for (src, dst, size, version) in items {
            parts.extend([src, dst, version].map(|p| p.as_bytes().to_vec()));
            parts.push(size.to_le_bytes().to_vec());
        }
        assert_eq!(fingerprint(items, 8), digest(&parts));
        assert_ne!(fingerprint(items, 8), fingerprint(items, 9));
    }
    use super::*;

    #[test]
    fn what_is_recorded_is_read_back_and_forgotten_objects_are_gone() {
        let dir = std::env::temp_dir().join(format!("skyx-journal-{}", std::process::id()));
        let path = journal_path(&dir, "s3://a/x", "gs://b/y");
        let j = Journal::create(&path, "fp1").unwrap();
        let chunk = |object, part: Option<u32>| LandedChunk {
            object,
            part: part.map(|p| (p, format!("etag{p}"))),
            raw_len: 10,
            raw_crc32c: 7,
        };
        j.record(&JournalBatch {
            uploads: vec![
                (0, "up0".into(), "k0".into()),
                (1, "up1".into(), "k1".into()),
            ],
            landed: vec![
                (0, chunk(0, Some(1))),
                (1, chunk(0, Some(2))),
                (2, chunk(1, Some(1))),
            ],
            ..Default::default()
        })
        .unwrap();
        j.record(&JournalBatch {
            complete: vec![0],
            forget: vec![(1, vec![2])],
            ..Default::default()
        })
        .unwrap();
        drop(j);
        let (j, state) = Journal::open(&path).unwrap().unwrap();
        assert_eq!(state.fingerprint, "fp1");
        assert_eq!(
            state.uploads,
            HashMap::from([(0, ("up0".to_string(), "k0".to_string()))])
        );
        assert_eq!(state.landed.len(), 2);
        assert_eq!(state.landed[&1], chunk(0, Some(2)));
        assert_eq!(state.complete, HashSet::from([0]));
        j.remove();
        assert!(Journal::open(&path).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn fingerprints_change_with_any_object_detail() {
        let a = fingerprint([("k", "d", 5, "v1")], 8);
        assert_eq!(a, fingerprint([("k", "d", 5, "v1")], 8));
        assert_ne!(a, fingerprint([("k", "d", 6, "v1")], 8));
        assert_ne!(a, fingerprint([("k", "d", 5, "v2")], 8));
        assert_ne!(a, fingerprint([("k", "d", 5, "v1")], 16));
        assert_ne!(a, fingerprint([("k", "e", 5, "v1")], 8));
    }
}
