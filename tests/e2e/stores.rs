//! Fixtures for the data-moving tests: the real local servers `deploy/test-servers.sh start`
//! brings up (s3s-fs, Azurite, the GCS emulator), fresh buckets in them, deterministic datasets,
//! running `skyx` against them, and checking what landed, byte for byte, through the store
//! layer (not through `skyx`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use skyx_store::{ObjectStore, ObjectUrl, StoreConfig};

use crate::util::bin;

/// A kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
    Azure,
    Gcs,
}

pub const ALL: [Kind; 4] = [Kind::Local, Kind::S3, Kind::Azure, Kind::Gcs];

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the local test servers. Run \
             `bash deploy/test-servers.sh start && source deploy/.servers/env` (the README's test \
             command does this)"
        )
    })
}

/// A name no other test (or run) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
    .to_lowercase()
    .chars()
    .take(60)
    .collect()
}

/// The environment a user would have set to reach the test servers.
pub fn store_env() -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), env("SKYX_TEST_S3_ENDPOINT")),
        ("AWS_ACCESS_KEY_ID".into(), env("SKYX_TEST_S3_ACCESS_KEY")),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            env("SKYX_TEST_S3_SECRET_KEY"),
        ),
        ("AWS_REGION".into(), "us-east-1".into()),
        (
            "AZURE_STORAGE_CONNECTION_STRING".into(),
            env("SKYX_TEST_AZURE_CONNECTION_STRING"),
        ),
        (
            "STORAGE_EMULATOR_HOST".into(),
            env("SKYX_TEST_GCS_ENDPOINT"),
        ),
        ("GOOGLE_CLOUD_PROJECT".into(), "skyx-test".into()),
    ]
}

/// The store layer configured for the test servers (for checking results independently).
pub fn store_config() -> StoreConfig {
    let mut c = StoreConfig::default();
    c.s3.endpoint = Some(env("SKYX_TEST_S3_ENDPOINT"));
    c.s3.region = Some("us-east-1".into());
    c.s3.static_credentials = Some((
        env("SKYX_TEST_S3_ACCESS_KEY"),
        env("SKYX_TEST_S3_SECRET_KEY"),
    ));
    c.s3.force_path_style = true;
    c.azure.connection_string = Some(env("SKYX_TEST_AZURE_CONNECTION_STRING"));
    c.gcs.endpoint = Some(env("SKYX_TEST_GCS_ENDPOINT"));
    c.gcs.anonymous = true;
    c.gcs.project = Some("skyx-test".into());
    c
}

/// A scratch area private to one test: a state directory for journals and agent logs, and
/// local directories; the buckets made for it in the test servers are emptied when it ends.
pub struct Scratch {
    pub dir: PathBuf,
    /// Buckets made by `root`, by URL: the servers outlive the test, and the suite's data left
    /// there together would fill the disk (s3s-fs) or the memory (Azurite, the GCS emulator).
    buckets: std::sync::Mutex<Vec<String>>,
}

/// Marks a scratch directory kept on purpose (`SKYX_KEEP_SCRATCH`): never swept.
const KEPT: &str = ".kept";

/// Removes the scratch of test processes that are gone (unless kept on purpose): a run killed
/// mid-test (^C, a timeout) leaves its scratch behind, gigabytes for the big tests, and a few
/// such runs fill the disk.
fn remove_scratch_of_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("skyx-e2e-") {
            continue;
        }
        // skyx-e2e-NAME-PID-NANOS-N (see `unique`).
        let Some(pid) = name.rsplit('-').nth(2).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() && !e.path().join(KEPT).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(remove_scratch_of_dead_runs);
        let dir = std::env::temp_dir().join(unique(&format!("skyx-e2e-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            dir,
            buckets: Default::default(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `skyx ARGS` with the servers' environment and this scratch's state directory.
    pub fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(bin("skyx"));
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env("SKYX_STATE_DIR", self.state())
            // Never the user's own named remotes.
            .env("SKYX_CONFIG", self.dir.join("no-config.toml"))
            .envs(store_env())
            .envs(extra_env.iter().copied());
        cmd
    }

    /// Runs `skyx ARGS` (see [`Scratch::command`]); no agent may outlive it.
    pub fn skyx(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let out = self.command(args, extra_env).output().expect("run skyx");
        self.assert_no_agents_left();
        out
    }

    /// The pid of this test's agent named `name` (e.g. `aws:us-east-2#0`), once it runs.
    pub fn agent_pid(&self, name: &str) -> Option<u32> {
        let marker = format!("SKYX_STATE_DIR={}", self.state().display());
        processes_with_env(&marker).into_iter().find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|&b| b == 0).any(|arg| arg == name.as_bytes())
        })
    }

    /// A root URL of `kind` for this test, in a new bucket (or directory).
    pub fn root(&self, kind: Kind, name: &str) -> String {
        let bucket = unique(name);
        let url = match kind {
            Kind::Local => return self.dir.join(name).display().to_string(),
            Kind::S3 => format!("s3://{bucket}"),
            Kind::Azure => format!("az://devstoreaccount1/{bucket}"),
            Kind::Gcs => format!("gs://{bucket}"),
        };
        let out = self.skyx(&["mb", &url], &[]);
        assert!(
            out.status.success(),
            "skyx mb {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.buckets.lock().unwrap().push(url.clone());
        format!("{url}/{name}")
    }

    /// Agents are launched by the gateway with the test's state directory in their
    /// environment; none may outlive the command that launched them.
    pub fn assert_no_agents_left(&self) {
        let marker = format!("SKYX_STATE_DIR={}", self.state().display());
        // Agents exit as soon as their gateway's pipe closes; allow them a moment to do so.
        for _ in 0..100 {
            let left = processes_with_env(&marker);
            if left.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "agent processes left running: {:?}",
            processes_with_env(&marker)
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A failed test's scratch is kept only when asked for: kept by default, a few failures
        // of the big-data tests fill the disk and fail every test after them.
        if std::thread::panicking() && std::env::var_os("SKYX_KEEP_SCRATCH").is_some() {
            // Marked, so the next test process (one per test under nextest) does not sweep it.
            let _ = std::fs::write(self.dir.join(KEPT), b"");
            eprintln!("scratch kept: {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let buckets = std::mem::take(&mut *self.buckets.lock().unwrap_or_else(|e| e.into_inner()));
        if buckets.is_empty() {
            return;
        }
        // On a thread of its own: the test's own runtime may be the one dropping this. Bounded:
        // a server that stopped answering must not hold the test forever.
        let emptied = std::thread::spawn(move || {
            let limit = std::time::Duration::from_secs(120);
            runtime().block_on(async {
                for url in &buckets {
                    match tokio::time::timeout(limit, empty(url)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => eprintln!("emptying {url}: {e}"),
                        Err(_) => eprintln!("emptying {url}: no end after {limit:?}"),
                    }
                }
            })
        })
        .join();
        if emptied.is_err() {
            eprintln!("emptying the test's buckets panicked");
        }
    }
}

/// Deletes every object in bucket `url`, a few at a time.
async fn empty(url: &str) -> Result<(), skyx_store::StoreError> {
    let store = skyx_store::open(&ObjectUrl::parse(url).unwrap(), &store_config()).await?;
    let keys: Vec<String> = store.list("").map_ok(|m| m.key).try_collect().await?;
    futures::stream::iter(keys)
        .map(|key| {
            let store = store.clone();
            async move { store.delete(&key).await }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

/// Pids of agent processes (`skyx agent` / `skyx-agent`) whose environment holds `marker`.
pub fn processes_with_env(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let is_agent = cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == b"agent" || arg.ends_with(b"skyx-agent"));
        if !is_agent {
            continue;
        }
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Deterministic content for object `name`, generated in pieces (so multi-GiB objects need
/// no memory): half the objects compressible text, half pseudo-random bytes, so both
/// compression paths run.
pub struct Content {
    /// The repeated line of a text object.
    line: Option<Vec<u8>>,
    /// xorshift state of a random object, and its last word, of which `spare` bytes are
    /// still unused (taken lowest first).
    x: u64,
    word: [u8; 8],
    spare: usize,
    pos: usize,
}

impl Content {
    pub fn new(name: &str) -> Content {
        let seed = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        let line = (seed % 2 == 0).then(|| format!("{name},aws:us-east-1,{seed}\n").into_bytes());
        Content {
            line,
            x: seed | 1,
            word: [0; 8],
            spare: 0,
            pos: 0,
        }
    }

    /// Fills `buf` with the next bytes. A slice at a time, never a byte at a time: the tests
    /// are built unoptimised and generate gigabytes with this.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        if let Some(line) = &self.line {
            while i < buf.len() {
                let at = self.pos % line.len();
                let n = (line.len() - at).min(buf.len() - i);
                buf[i..i + n].copy_from_slice(&line[at..at + n]);
                self.pos += n;
                i += n;
            }
            return;
        }
        while i < buf.len() {
            if self.spare == 0 {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 7;
                self.x ^= self.x << 17;
                self.word = self.x.to_le_bytes();
                self.spare = 8;
            }
            let from = 8 - self.spare;
            let n = self.spare.min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&self.word[from..from + n]);
            self.spare -= n;
            i += n;
        }
    }
}

/// The whole content of a (small) object.
pub fn content(name: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Content::new(name).fill(&mut out);
    out
}

/// A route with one relay: aws:us-east-1 -> aws:us-east-2 -> gcp:asia-southeast1, one agent
/// per region, a few connections per hop, rehearsed by agents on this machine.
pub const VIA_RELAY: &[&str] = &[
    "--rehearse",
    "--src-region",
    "aws:us-east-1",
    "--dst-region",
    "gcp:asia-southeast1",
    "--via",
    "aws:us-east-2",
    "--max-vms-per-region",
    "1",
    "--connections",
    "4",
];

/// A dataset: relative key → size.
pub type Dataset = BTreeMap<String, usize>;

/// Empty, one byte, `small` small objects in a few directories, and `large` bytes in one
/// multi-chunk object.
pub fn dataset(small: usize, large: usize) -> Dataset {
    let mut d = Dataset::new();
    d.insert("empty".into(), 0);
    d.insert("one-byte".into(), 1);
    for i in 0..small {
        d.insert(
            format!("dir{:02}/small-{i:05}", i % 20),
            100 + (i * 37) % 2000,
        );
    }
    if large > 0 {
        d.insert("big/large.bin".into(), large);
    }
    d
}

/// Writes `data` under local directory `dir`.
pub fn write_local(dir: &Path, data: &Dataset) {
    use std::io::Write;
    for (key, &len) in data {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        let mut generator = Content::new(key);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            generator.fill(&mut buf[..n]);
            f.write_all(&buf[..n]).unwrap();
            left -= n;
        }
        f.flush().unwrap();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub async fn open(url: &str) -> (Arc<dyn ObjectStore>, String) {
    let url = ObjectUrl::parse(url).unwrap();
    let store = skyx_store::open(&url, &store_config()).await.unwrap();
    (store, url.key.trim_end_matches('/').to_string())
}

/// The listing prefix of everything under key `base` (matched at a `/`).
fn prefix_of(base: &str) -> String {
    if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    }
}

/// Deletes every object under `url`: for tests whose data would otherwise hold gigabytes of
/// the test servers' disk for the rest of the suite.
pub fn remove_all(url: &str) {
    runtime().block_on(async {
        let (store, base) = open(url).await;
        let keys: Vec<String> = store
            .list(&prefix_of(&base))
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        for key in keys {
            store.delete(&key).await.unwrap();
        }
    })
}

/// Checks that exactly `data` is under `url`, every object byte-identical (read back through
/// the store layer and compared with the expected content).
pub fn assert_holds(url: &str, data: &Dataset) {
    runtime().block_on(async {
        let (store, base) = open(url).await;
        let prefix = prefix_of(&base);
        let metas: BTreeMap<String, skyx_store::ObjectMeta> = store
            .list(&prefix)
            .map_ok(|m| (m.key[prefix.len()..].to_string(), m))
            .try_collect()
            .await
            .unwrap();
        let listed: BTreeMap<String, u64> =
            metas.iter().map(|(k, m)| (k.clone(), m.size)).collect();
        let want: BTreeMap<String, u64> =
            data.iter().map(|(k, &v)| (k.clone(), v as u64)).collect();
        if listed != want {
            let missing: Vec<_> = want
                .keys()
                .filter(|k| !listed.contains_key(*k))
                .take(5)
                .collect();
            let extra: Vec<_> = listed
                .keys()
                .filter(|k| !want.contains_key(*k))
                .take(5)
                .collect();
            panic!(
                "{url}: {} objects listed, {} expected; missing {missing:?}, unexpected {extra:?}",
                listed.len(),
                want.len()
            );
        }
        futures::stream::iter(data.iter())
            .map(|(key, &len)| {
                let store = store.clone();
                let full = format!("{prefix}{key}");
                let listed_md5 = metas[key].md5;
                async move {
                    // Where the store lists a content MD5 it computed itself, comparing it
                    // with the expected content's is the byte-for-byte check, without reading
                    // every object back (10,000 GETs from an emulator take minutes).
                    if let Some(md5) = listed_md5 {
                        let mut want = Content::new(key);
                        let mut hasher = Md5::new();
                        let mut buf = vec![0u8; 1 << 20];
                        let mut left = len;
                        while left > 0 {
                            let n = left.min(buf.len());
                            want.fill(&mut buf[..n]);
                            hasher.update(&buf[..n]);
                            left -= n;
                        }
                        assert_eq!(
                            <[u8; 16]>::from(hasher.finalize()),
                            md5,
                            "{url}/{key}: content MD5 differs from its source"
                        );
                        return;
                    }
                    // Streamed and compared piece by piece: objects may be GiBs.
                    let mut want = Content::new(key);
                    let mut expected = Vec::new();
                    let mut seen = 0usize;
                    let mut s = store.get_range(&full, 0..len as u64, None).await.unwrap();
                    while let Some(piece) = s.next().await {
                        let piece = piece.unwrap();
                        expected.resize(piece.len(), 0);
                        want.fill(&mut expected);
                        assert!(
                            piece[..] == expected[..],
                            "{url}/{key} differs from its source near byte {seen}"
                        );
                        seen += piece.len();
                    }
                    assert_eq!(seen, len, "{url}/{key}: length");
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    });
}

/// One object's bytes.
pub fn read(url: &str) -> Vec<u8> {
    runtime().block_on(async {
        let (store, key) = open(url).await;
        let meta = store.head(&key).await.unwrap();
        let mut got = Vec::new();
        let mut s = store.get_range(&key, 0..meta.size, None).await.unwrap();
        while let Some(piece) = s.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        got
    })
}

/// Whether anything at all is under `url` (bad-input tests: nothing may be written).
pub fn is_empty(url: &str) -> bool {
    runtime().block_on(async {
        let (store, base) = open(url).await;
        let prefix = prefix_of(&base);
        match store.list(&prefix).try_next().await {
            Ok(first) => first.is_none(),
            Err(e) => e.kind == skyx_store::ErrorKind::NotFound,
        }
    })
}

/// The summary `skyx cp --json` printed.
pub fn report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "skyx failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "skyx --json did not print JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
