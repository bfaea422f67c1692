//! The job journal: what a copy has achieved, durably and per object, so that an interrupted
//! copy's work is not done again.
//!
//! One redb file per (source, destination) pair. Progress is keyed by the source key: each
//! object's record says which version of it (size, version, destination key, chunk size, the
//! properties it is written with) the progress belongs to, the multipart upload opened for it,
//! its landed chunks (part receipts and checksums) and whether it was completed and verified.
//! A later run takes an object's progress only when all of that still matches, so an object
//! added, removed or changed at the source affects only itself. The journal is read per object
//! as the listing streams in and written in one transaction per batch of events, committed
//! before the gateway acts on them (completing an object): what it says happened did happen,
//! and the gateway's memory holds only its window, never the journal.
//!
//! The journal also keeps the copy's settings (chunk size and how the destination writes): a
//! resume under other settings is refused rather than mixing two kinds of upload.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Source key → [`ObjectRecord`] (JSON).
const OBJECTS: TableDefinition<&str, &str> = TableDefinition::new("objects");
/// (source key, part number) → [`PartRecord`] (JSON). A whole object is its part 1.
const PARTS: TableDefinition<(&str, u32), &str> = TableDefinition::new("parts");
/// Source key → upload id and destination key (`id\nkey`) of uploads open: read whole at the
/// start, so uploads an earlier run left are found without reading every object's record.
const UPLOADS: TableDefinition<&str, &str> = TableDefinition::new("open_uploads");
/// Upload id → destination key of uploads whose abort failed (the store was down): retried at
/// the end of the run and at the start of the next one, so no parts stay billed.
const ABORTS: TableDefinition<&str, &str> = TableDefinition::new("aborts");

/// The journal's layout; any other is read only for its uploads (to abort) and replaced.
const FORMAT: &str = "2";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("job journal {path}: {message}")]
    Db { path: PathBuf, message: String },
}

/// Which object a record's progress is for, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub dst_key: String,
    pub size: u64,
    /// The source version it was read at (empty when the store names none).
    pub version: String,
    pub chunk_size: u64,
    /// A digest of the properties it is written with.
    pub properties: String,
    /// Its multipart upload, while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// Completed and verified at the destination.
    #[serde(default)]
    pub complete: bool,
}

impl ObjectRecord {
    /// Whether this record's progress is for the same object written the same way as `other`
    /// (a version the store did not name proves nothing, so it never matches).
    pub fn same_object(&self, other: &ObjectRecord) -> bool {
        !self.version.is_empty()
            && self.version == other.version
            && self.size == other.size
            && self.dst_key == other.dst_key
            && self.chunk_size == other.chunk_size
            && self.properties == other.properties
    }
}

/// A chunk the sink wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The part's receipt; `None` for an object written whole.
    pub etag: Option<String>,
    pub raw_len: u64,
    pub raw_crc32c: u32,
}

/// An object's record with its landed parts.
pub type ObjectProgress = (ObjectRecord, BTreeMap<u32, PartRecord>);

/// What a journal holds that is read whole when it is opened (small: never per object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalState {
    pub settings: String,
    /// Source key → (upload id, destination key) of uploads left open.
    pub open_uploads: HashMap<String, (String, String)>,
    /// Upload id → destination key of uploads still to abort.
    pub pending_aborts: HashMap<String, String>,
}

/// Changes made together. Applied in order: `forget`, `parts`, `objects`, then the aborts.
#[derive(Debug, Clone, Default)]
pub struct JournalBatch {
    /// Source keys whose record and parts go (the upload was aborted, or the object changed).
    pub forget: Vec<String>,
    pub parts: Vec<(String, u32, PartRecord)>,
    /// Records written (replacing any); a complete one drops its parts.
    pub objects: Vec<(String, ObjectRecord)>,
    /// (upload id, destination key) of uploads whose abort failed: to retry.
    pub abort_later: Vec<(String, String)>,
    /// Upload ids of pending aborts that have now succeeded.
    pub aborted: Vec<String>,
}

impl JournalBatch {
    pub fn is_empty(&self) -> bool {
        self.forget.is_empty()
            && self.parts.is_empty()
            && self.objects.is_empty()
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

impl Journal {
    /// A new, empty journal at `path` for a copy under `settings`, replacing any other.
    pub fn create(path: &Path, settings: &str) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(path, e))?;
        }
        let _ = std::fs::remove_file(path);
        let db = builder().create(path).map_err(|e| fail(path, e))?;
        let j = Journal {
            db,
            path: path.to_path_buf(),
        };
        let tx = j.db.begin_write().map_err(|e| fail(path, e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| fail(path, e))?;
            meta.insert("format", FORMAT).map_err(|e| fail(path, e))?;
            meta.insert("settings", settings)
                .map_err(|e| fail(path, e))?;
            tx.open_table(OBJECTS).map_err(|e| fail(path, e))?;
            tx.open_table(PARTS).map_err(|e| fail(path, e))?;
            tx.open_table(UPLOADS).map_err(|e| fail(path, e))?;
            tx.open_table(ABORTS).map_err(|e| fail(path, e))?;
        }
        tx.commit().map_err(|e| fail(path, e))?;
        Ok(j)
    }

    /// The journal at `path` and its small state, if there is one. A journal of another
    /// layout (an older skyx) yields its uploads as aborts to do and no other progress, and
    /// says so with `None` as the journal: the caller replaces it.
    #[allow(clippy::type_complexity)]
    pub fn open(path: &Path) -> Result<Option<(Option<Journal>, JournalState)>, JournalError> {
        if !path.exists() {
            return Ok(None);
        }
        let db = builder().open(path).map_err(|e| fail(path, e))?;
        let mut state = JournalState::default();
        let current;
        {
            let tx = db.begin_read().map_err(|e| fail(path, e))?;
            let meta = tx.open_table(META).map_err(|e| fail(path, e))?;
            let get = |k: &str| -> Result<String, JournalError> {
                Ok(meta
                    .get(k)
                    .map_err(|e| fail(path, e))?
                    .map(|v| v.value().to_string())
                    .unwrap_or_default())
            };
            current = get("format")? == FORMAT;
            state.settings = get("settings")?;
            if current {
                for row in tx
                    .open_table(UPLOADS)
                    .map_err(|e| fail(path, e))?
                    .iter()
                    .map_err(|e| fail(path, e))?
                {
                    let (k, v) = row.map_err(|e| fail(path, e))?;
                    let (id, key) = split_upload(v.value());
                    state.open_uploads.insert(k.value().to_string(), (id, key));
                }
            } else {
                // The first layout: object index → `id\nkey`, every entry an upload to abort.
                const OLD_UPLOADS: TableDefinition<u32, &str> = TableDefinition::new("uploads");
                if let Ok(t) = tx.open_table(OLD_UPLOADS) {
                    for row in t.iter().map_err(|e| fail(path, e))? {
                        let (_, v) = row.map_err(|e| fail(path, e))?;
                        let (id, key) = split_upload(v.value());
                        state.pending_aborts.insert(id, key);
                    }
                }
            }
            if let Ok(aborts) = tx.open_table(ABORTS) {
                for row in aborts.iter().map_err(|e| fail(path, e))? {
                    let (id, key) = row.map_err(|e| fail(path, e))?;
                    state
                        .pending_aborts
                        .insert(id.value().to_string(), key.value().to_string());
                }
            }
        }
        let journal = current.then(|| Journal {
            db,
            path: path.to_path_buf(),
        });
        Ok(Some((journal, state)))
    }

    /// The progress recorded for each of `keys` (one read transaction for all).
    pub fn lookup(&self, keys: &[&str]) -> Result<Vec<Option<ObjectProgress>>, JournalError> {
        let p = &self.path;
        let tx = self.db.begin_read().map_err(|e| fail(p, e))?;
        let objects = tx.open_table(OBJECTS).map_err(|e| fail(p, e))?;
        let parts = tx.open_table(PARTS).map_err(|e| fail(p, e))?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(v) = objects.get(*key).map_err(|e| fail(p, e))? else {
                out.push(None);
                continue;
            };
            let record: ObjectRecord = serde_json::from_str(v.value()).map_err(|e| fail(p, e))?;
            let mut landed = BTreeMap::new();
            for row in parts
                .range((*key, 0u32)..=(*key, u32::MAX))
                .map_err(|e| fail(p, e))?
            {
                let (k, v) = row.map_err(|e| fail(p, e))?;
                let part: PartRecord = serde_json::from_str(v.value()).map_err(|e| fail(p, e))?;
                landed.insert(k.value().1, part);
            }
            out.push(Some((record, landed)));
        }
        Ok(out)
    }

    /// Records `batch` in one durable transaction.
    pub fn record(&self, batch: &JournalBatch) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let p = &self.path;
        let tx = self.db.begin_write().map_err(|e| fail(p, e))?;
        {
            let mut objects = tx.open_table(OBJECTS).map_err(|e| fail(p, e))?;
            let mut parts = tx.open_table(PARTS).map_err(|e| fail(p, e))?;
            let mut uploads = tx.open_table(UPLOADS).map_err(|e| fail(p, e))?;
            let drop_parts = |parts: &mut redb::Table<(&str, u32), &str>, key: &str| {
                let numbers: Vec<u32> = parts
                    .range((key, 0u32)..=(key, u32::MAX))
                    .map_err(|e| fail(p, e))?
                    .map(|row| row.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()
                    .map_err(|e| fail(p, e))?;
                for n in numbers {
                    parts.remove((key, n)).map_err(|e| fail(p, e))?;
                }
                Ok::<_, JournalError>(())
            };
            for key in &batch.forget {
                objects.remove(key.as_str()).map_err(|e| fail(p, e))?;
                uploads.remove(key.as_str()).map_err(|e| fail(p, e))?;
                drop_parts(&mut parts, key)?;
            }
            for (key, n, part) in &batch.parts {
                let v = serde_json::to_string(part).expect("serializable");
                parts
                    .insert((key.as_str(), *n), v.as_str())
                    .map_err(|e| fail(p, e))?;
            }
            for (key, record) in &batch.objects {
                let v = serde_json::to_string(record).expect("serializable");
                objects
                    .insert(key.as_str(), v.as_str())
                    .map_err(|e| fail(p, e))?;
                match (&record.upload, record.complete) {
                    (Some(id), false) => {
                        // Upload ids never contain a newline (S3's are URL-safe, ours are hex).
                        let v = format!("{id}\n{}", record.dst_key);
                        uploads
                            .insert(key.as_str(), v.as_str())
                            .map_err(|e| fail(p, e))?;
                    }
                    _ => {
                        uploads.remove(key.as_str()).map_err(|e| fail(p, e))?;
                    }
                }
                if record.complete {
                    drop_parts(&mut parts, key)?;
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

/// How journals are opened: a cache of [`CACHE_BYTES`] (redb's default, 1 GiB, would let a
/// journal of ten million objects take the gateway's memory; its pages are on disk anyway).
fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// The journal's page cache.
const CACHE_BYTES: usize = 32 << 20;

/// `id\nkey` → (id, key).
fn split_upload(v: &str) -> (String, String) {
    let (id, key) = v.split_once('\n').unwrap_or((v, ""));
    (id.to_string(), key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str, upload: Option<&str>, complete: bool) -> ObjectRecord {
        ObjectRecord {
            dst_key: "d/k".into(),
            size: 20,
            version: version.into(),
            chunk_size: 10,
            properties: "p".into(),
            upload: upload.map(str::to_string),
            complete,
        }
    }

    fn part(n: u32) -> PartRecord {
        PartRecord {
            etag: Some(format!("etag{n}")),
            raw_len: 10,
            raw_crc32c: n,
        }
    }

    #[test]
    fn progress_is_read_back_per_object_and_forgotten_or_completed_objects_drop_their_parts() {
        let dir = std::env::temp_dir().join(format!("skyx-journal-{}", std::process::id()));
        let path = journal_path(&dir, "s3://a/x", "gs://b/y");
        let j = Journal::create(&path, "settings1").unwrap();
        j.record(&JournalBatch {
            objects: vec![
                ("a".into(), record("v1", Some("up-a"), false)),
                ("b".into(), record("v1", Some("up-b"), false)),
                ("c".into(), record("v1", Some("up-c"), false)),
            ],
            parts: vec![
                ("a".into(), 1, part(1)),
                ("a".into(), 2, part(2)),
                ("b".into(), 1, part(1)),
                ("c".into(), 2, part(2)),
            ],
            ..Default::default()
        })
        .unwrap();
        j.record(&JournalBatch {
            forget: vec!["b".into()],
            objects: vec![("c".into(), record("v1", None, true))],
            ..Default::default()
        })
        .unwrap();
        drop(j);
        let (j, state) = Journal::open(&path).unwrap().unwrap();
        let j = j.expect("the current layout");
        assert_eq!(state.settings, "settings1");
        assert_eq!(
            state.open_uploads,
            HashMap::from([("a".to_string(), ("up-a".to_string(), "d/k".to_string()))]),
            "only a's upload is still open"
        );
        let got = j.lookup(&["a", "b", "c", "zz"]).unwrap();
        let (a, a_parts) = got[0].clone().unwrap();
        assert_eq!(a, record("v1", Some("up-a"), false));
        assert_eq!(a_parts, BTreeMap::from([(1, part(1)), (2, part(2))]));
        assert!(got[1].is_none(), "b was forgotten");
        let (c, c_parts) = got[2].clone().unwrap();
        assert!(c.complete && c_parts.is_empty(), "{c:?} {c_parts:?}");
        assert!(got[3].is_none());
        j.remove();
        assert!(Journal::open(&path).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_record_matches_only_the_same_version_written_the_same_way() {
        let a = record("v1", None, false);
        assert!(a.same_object(&record("v1", Some("u"), true)));
        assert!(!a.same_object(&record("v2", None, false)));
        assert!(!record("", None, false).same_object(&record("", None, false)));
        for change in [
            |r: &mut ObjectRecord| r.size += 1,
            |r: &mut ObjectRecord| r.chunk_size += 1,
            |r: &mut ObjectRecord| r.dst_key.push('x'),
            |r: &mut ObjectRecord| r.properties.push('x'),
        ] {
            let mut b = a.clone();
            change(&mut b);
            assert!(!a.same_object(&b), "{b:?}");
        }
    }
}
