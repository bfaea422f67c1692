//! Sorting a listing larger than memory, and keeping a long list of keys out of it.
//!
//! [`sort_spilling`] sorts a stream by a string key with at most one run of items in memory:
//! each full run is sorted and written to an unlinked file under the spill directory (so
//! nothing is left behind, whatever ends the process), and the runs are merged back as a
//! stream. A stream that ends within its first run never touches the disk. Stores do not all
//! list in byte order (a local walk goes directory by directory), and what a sync decides
//! from a merge is only right when both sides are in one order: this gives them that order
//! without trusting any store to have it.
//!
//! [`KeyLog`] holds keys (a sync's deletions) on disk and gives them back in batches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skyx_store::{ErrorKind, StoreError};
use tokio::sync::mpsc;

/// Items held in memory per run by default.
pub const DEFAULT_RUN: usize = 100_000;

/// Items a merge reads ahead of its consumer.
const MERGE_BUFFER: usize = 1024;

/// A spill file that could not be written or read back: the store-shaped error the listing
/// streams carry.
fn spill_error(dir: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        ErrorKind::Other,
        "spill",
        "sort",
        dir.display().to_string(),
        format!("sorting the listing on disk failed: {e}"),
    )
}

/// A new file under `dir` that is already unlinked: it lives while it is open, and no crash
/// leaves it behind.
fn anonymous_file(dir: &Path) -> std::io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(
        ".skyx-spill-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Writes `items` (sorted) to a new spill file, one JSON line each, rewound for reading.
fn write_run<T: Serialize>(dir: &Path, items: &[T]) -> std::io::Result<File> {
    let mut out = BufWriter::with_capacity(1 << 16, anonymous_file(dir)?);
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.rewind()?;
    Ok(file)
}

/// One sorted run being merged: the rest of a spill file, or the last run, still in memory.
enum Run<T> {
    Disk(std::io::Lines<BufReader<File>>),
    Memory(std::vec::IntoIter<T>),
}

impl<T: DeserializeOwned> Run<T> {
    fn next_item(&mut self) -> std::io::Result<Option<T>> {
        match self {
            Run::Memory(items) => Ok(items.next()),
            Run::Disk(lines) => match lines.next() {
                None => Ok(None),
                Some(line) => Ok(Some(serde_json::from_str(&line?)?)),
            },
        }
    }
}

/// `input` sorted by `key`, holding at most `run` items in memory; runs beyond the first are
/// spilled under `dir`. An error of `input` ends the output with that error.
pub fn sort_spilling<T>(
    input: BoxStream<'static, Result<T, StoreError>>,
    key: fn(&T) -> &str,
    run: usize,
    dir: PathBuf,
) -> BoxStream<'static, Result<T, StoreError>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let run = run.max(1);
    let sorted = async move {
        let mut input = input;
        let mut spilled: Vec<File> = Vec::new();
        let mut current: Vec<T> = Vec::with_capacity(run.min(DEFAULT_RUN));
        while let Some(item) = input.try_next().await? {
            current.push(item);
            if current.len() == run {
                let (full, d) = (std::mem::take(&mut current), dir.clone());
                let file = tokio::task::spawn_blocking(move || {
                    let mut full = full;
                    full.sort_unstable_by(|a, b| key(a).cmp(key(b)));
                    write_run(&d, &full)
                })
                .await
                .map_err(|e| spill_error(&dir, e))?
                .map_err(|e| spill_error(&dir, e))?;
                spilled.push(file);
            }
        }
        current.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        if spilled.is_empty() {
            return Ok::<_, StoreError>(futures::stream::iter(current.into_iter().map(Ok)).boxed());
        }
        tracing::debug!(runs = spilled.len() + 1, "merging a listing sorted on disk");
        let mut runs: Vec<Run<T>> = spilled
            .into_iter()
            .map(|f| Run::Disk(BufReader::with_capacity(1 << 16, f).lines()))
            .collect();
        runs.push(Run::Memory(current.into_iter()));
        Ok(merge_runs(runs, key, dir))
    };
    futures::stream::once(sorted)
        .map(|r| match r {
            Ok(stream) => stream,
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
}

/// The k-way merge of sorted runs, on a blocking thread (it reads files), as a stream.
fn merge_runs<T>(
    mut runs: Vec<Run<T>>,
    key: fn(&T) -> &str,
    dir: PathBuf,
) -> BoxStream<'static, Result<T, StoreError>>
where
    T: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<T, StoreError>>(MERGE_BUFFER);
    tokio::task::spawn_blocking(move || {
        let mut heads: Vec<Option<T>> = Vec::with_capacity(runs.len());
        // (key of the run's head, run): the smallest head first.
        let mut heap = BinaryHeap::new();
        for (n, r) in runs.iter_mut().enumerate() {
            match r.next_item() {
                Ok(head) => {
                    if let Some(h) = &head {
                        heap.push(Reverse((key(h).to_string(), n)));
                    }
                    heads.push(head);
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(spill_error(&dir, e)));
                    return;
                }
            }
        }
        while let Some(Reverse((_, n))) = heap.pop() {
            let item = heads[n].take().expect("a run in the heap has a head");
            match runs[n].next_item() {
                Ok(next) => {
                    if let Some(h) = &next {
                        heap.push(Reverse((key(h).to_string(), n)));
                    }
                    heads[n] = next;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(spill_error(&dir, e)));
                    return;
                }
            }
            // A closed channel: the consumer stopped.
            if tx.blocking_send(Ok(item)).is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// Keys kept on disk (one JSON string per line) rather than in memory, counted.
pub struct KeyLog {
    dir: PathBuf,
    file: Option<BufWriter<File>>,
    len: usize,
}

impl std::fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLog").field("len", &self.len).finish()
    }
}

impl KeyLog {
    /// An empty log whose file, once a key comes, lives (unlinked) under `dir`.
    pub fn new(dir: PathBuf) -> KeyLog {
        KeyLog {
            dir,
            file: None,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, key: &str) -> Result<(), StoreError> {
        let wrote = (|| {
            let out = match &mut self.file {
                Some(out) => out,
                file => file.insert(BufWriter::new(anonymous_file(&self.dir)?)),
            };
            serde_json::to_writer(&mut *out, key)?;
            out.write_all(b"\n")
        })();
        wrote.map_err(|e| spill_error(&self.dir, e))?;
        self.len += 1;
        Ok(())
    }

    /// Every key, in the order pushed, read back in batches of up to `batch`.
    pub fn batches(self, batch: usize) -> Result<KeyBatches, StoreError> {
        let dir = self.dir.clone();
        let lines = match self.file {
            None => None,
            Some(out) => {
                let mut file = out.into_inner().map_err(|e| spill_error(&dir, e.error()))?;
                file.rewind().map_err(|e| spill_error(&dir, e))?;
                Some(BufReader::new(file).lines())
            }
        };
        Ok(KeyBatches {
            dir,
            lines,
            batch: batch.max(1),
        })
    }
}

/// The keys of a [`KeyLog`], a batch at a time.
pub struct KeyBatches {
    dir: PathBuf,
    lines: Option<std::io::Lines<BufReader<File>>>,
    batch: usize,
}

impl std::fmt::Debug for KeyBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBatches")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Iterator for KeyBatches {
    type Item = Result<Vec<String>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let lines = self.lines.as_mut()?;
        let mut keys = Vec::new();
        for line in lines.by_ref() {
            let key = line
                .map_err(|e| spill_error(&self.dir, e))
                .and_then(|l| serde_json::from_str(&l).map_err(|e| spill_error(&self.dir, e)));
            match key {
                Ok(k) => keys.push(k),
                Err(e) => return Some(Err(e)),
            }
            if keys.len() == self.batch {
                break;
            }
        }
        (!keys.is_empty()).then_some(Ok(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spill_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("skyx-spill-{name}-{}", std::process::id()))
    }

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn a_stream_longer_than_a_run_comes_back_sorted_through_disk() {
        let dir = spill_dir("sort");
        // A deterministic shuffle of 10,000 keys, sorted with runs of 97.
        let keys: Vec<String> = (0..10_000u64)
            .map(|i| format!("k{:05}", (i * 7919) % 10_000))
            .collect();
        let input = futures::stream::iter(keys.clone().into_iter().map(Ok)).boxed();
        let sorted: Vec<String> = sort_spilling(input, |s: &String| s.as_str(), 97, dir.clone())
            .try_collect()
            .await
            .unwrap();
        let mut expected = keys;
        expected.sort();
        assert_eq!(sorted, expected);
        assert_eq!(files_in(&dir), 0, "spill files are unlinked");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Items alive at once, and the most ever: what a sort holds in memory.
    static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[derive(serde::Serialize)]
    struct Counted(String);

    impl Counted {
        fn new(key: String) -> Counted {
            let live = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(live, Ordering::SeqCst);
            Counted(key)
        }
    }

    impl<'de> serde::Deserialize<'de> for Counted {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Counted::new(String::deserialize(d)?))
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_sort_holds_a_run_and_the_heads_of_the_others_not_the_whole_stream() {
        let dir = spill_dir("peak");
        let total = 20_000u64;
        let input = futures::stream::iter(0..total)
            .map(move |i| Ok(Counted::new(format!("k{:05}", (i * 7919) % total))))
            .boxed();
        let mut sorted = sort_spilling(input, |c: &Counted| c.0.as_str(), 100, dir.clone());
        let mut last = String::new();
        let mut seen = 0;
        while let Some(item) = sorted.try_next().await.unwrap() {
            assert!(item.0 > last, "{} after {last}", item.0);
            last = item.0.clone();
            seen += 1;
        }
        assert_eq!(seen, total);
        // A run (100), the head of each of 200 runs, and the merge's read-ahead (1,024).
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(
            peak <= 100 + 200 + MERGE_BUFFER + 2,
            "{peak} items held at once"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn an_error_of_the_input_ends_the_sorted_stream_with_it() {
        let dir = spill_dir("error");
        let input = futures::stream::iter(vec![
            Ok("b".to_string()),
            Err(StoreError::new(
                ErrorKind::Transient,
                "s",
                "list",
                "",
                "gone",
            )),
        ])
        .boxed();
        let out: Result<Vec<String>, _> = sort_spilling(input, |s: &String| s.as_str(), 1, dir)
            .try_collect()
            .await;
        assert!(out.unwrap_err().message.contains("gone"));
    }

    #[test]
    fn a_key_log_gives_back_every_key_in_batches() {
        let dir = spill_dir("keys");
        let mut log = KeyLog::new(dir.clone());
        for i in 0..25 {
            log.push(&format!("key {i}\n\"quoted\"")).unwrap();
        }
        assert_eq!(log.len(), 25);
        let batches: Vec<Vec<String>> = log.batches(10).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        assert_eq!(batches[2][4], "key 24\n\"quoted\"");
        assert_eq!(KeyLog::new(dir.clone()).batches(10).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
