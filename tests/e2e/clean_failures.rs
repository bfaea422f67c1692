//! `skyx cp` through a relay when reality interferes from outside the process: a source
//! rewritten mid-copy, a destination that refuses a write for good, a store that goes away for
//! a while, an agent frozen with SIGSTOP. Each test checks that data is intact or absent
//! (never mixed), that the failure is reported with its cause, that no hop paid for a sink's
//! trouble, and that nothing hidden is left at the destination.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::stores::{Kind, Scratch, VIA_RELAY, env, read};

const MIB: usize = 1024 * 1024;

fn args<'a>(src: &'a str, dst: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["cp", "-r", src, dst, "--json", "--chunk-size", "5MiB"];
    a.extend_from_slice(VIA_RELAY);
    a.extend_from_slice(extra);
    a
}

/// Pseudo-random bytes (incompressible, so wire bytes are comparable with data bytes).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every file under `dir` whose name starts with `.skyx-` (staging left behind).
fn hidden_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with(".skyx-") {
            out.push(path.display().to_string());
        } else if path.is_dir() {
            out.extend(hidden_files(&path));
        }
    }
    out
}

/// Waits for `child` (a `skyx` run), with its output.
fn finish(s: &Scratch, child: Child) -> Output {
    let out = child.wait_with_output().expect("wait for skyx");
    s.assert_no_agents_left();
    out
}

/// Polls `cond` every 20 ms until it holds (the copy under test bounds how long that takes).
fn wait_for(what: &str, child: &mut Child, mut cond: impl FnMut() -> bool) {
    while !cond() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("skyx ended ({status}) before {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_source_rewritten_mid_copy_never_lands_mixed() {
    let s = Scratch::new("rewritten");
    let (src, dst) = (s.dir.join("src"), s.dir.join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("obj-{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(src.join(n), noise(i as u64, 12 * MIB)).unwrap();
    }
    let (src_s, dst_s) = (src.display().to_string(), dst.display().to_string());
    // Paced reads make the copy take seconds, so the rewrite lands mid-copy.
    let mut child = s
        .command(&args(&src_s, &dst_s, &["--bwlimit", "12MiB"]), &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first part is staged at the destination, every source file is rewritten in
    // place with other bytes of the same size (same length, new content).
    wait_for("a part was staged", &mut child, || {
        !hidden_files(&dst).is_empty()
    });
    for (i, n) in names.iter().enumerate() {
        std::fs::write(src.join(n), noise(100 + i as u64, 12 * MIB)).unwrap();
    }
    let out = finish(&s, child);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let r = json(&out);
    let failed = r["objects_failed"].as_array().unwrap();
    assert!(!failed.is_empty(), "no object failed: {r}");
    for f in failed {
        let why = f["why"].as_str().unwrap();
        assert!(
            why.contains("changed"),
            "failure not named as a change: {why}"
        );
    }
    // What is at the destination is whole and of the listed version; the rest is absent.
    for (i, n) in names.iter().enumerate() {
        let path = dst.join(n);
        if path.exists() {
            assert!(
                std::fs::read(&path).unwrap() == noise(i as u64, 12 * MIB),
                "{n} landed mixed or as the new version"
            );
        }
    }
    assert_eq!(
        hidden_files(&dst),
        Vec::<String>::new(),
        "staging left behind"
    );
}

#[test]
fn a_write_the_destination_refuses_fails_that_object_at_once_with_its_cause() {
    let s = Scratch::new("refused-write");
    let (src, dst) = (s.dir.join("src"), s.dir.join("dst"));
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/blocked"), noise(1, MIB)).unwrap();
    std::fs::write(src.join("a/fine"), noise(2, MIB)).unwrap();
    std::fs::write(src.join("big"), noise(3, 12 * MIB)).unwrap();
    // A non-empty directory stands where `a/blocked` would go: the file system refuses the
    // write, and no retry can change that.
    std::fs::create_dir_all(dst.join("a/blocked/keep")).unwrap();
    let (src_s, dst_s) = (src.display().to_string(), dst.display().to_string());
    let out = s.skyx(&args(&src_s, &dst_s, &[]), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let r = json(&out);
    let failed = r["objects_failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{r}");
    let why = failed[0]["why"].as_str().unwrap();
    assert!(
        why.contains("refused") && why.contains("directory"),
        "the cause is not named: {why}"
    );
    assert_eq!(std::fs::read(dst.join("a/fine")).unwrap(), noise(2, MIB));
    assert_eq!(std::fs::read(dst.join("big")).unwrap(), noise(3, 12 * MIB));
    assert!(
        dst.join("a/blocked/keep").is_dir(),
        "the directory in the way was touched"
    );
    // Refused by the sink, the chunk was not sent across either hop again.
    for hop in r["hops"].as_array().unwrap() {
        assert_eq!(hop["resent_bytes"], 0, "{hop}");
    }
    assert_eq!(
        hidden_files(&dst),
        Vec::<String>::new(),
        "staging left behind"
    );
}

/// A scratch directory with `objects` files of 8 MiB noise in `src`, an S3 destination root,
/// and the address of the S3 test server (for a proxy in front of it).
fn outage_setup(name: &str, objects: u64) -> (Scratch, std::path::PathBuf, String, SocketAddr) {
    let s = Scratch::new(name);
    let src = s.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..objects {
        std::fs::write(src.join(format!("obj-{i}")), noise(i, 8 * MIB)).unwrap();
    }
    let dst = s.root(Kind::S3, "dst");
    let upstream = env("SKYX_TEST_S3_ENDPOINT")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    (s, src, dst, upstream)
}

#[test]
fn a_store_outage_at_the_sink_is_ridden_out_without_resending_across_the_hops() {
    let (s, src, dst, upstream) = outage_setup("outage", 6);
    // The destination's server goes away for 10 s once 10 MiB went to it: every connection
    // reset, new ones refused.
    let proxy = Proxy::start(upstream, 10 * MIB as u64, Some(Duration::from_secs(10)));
    let endpoint = format!("http://{}", proxy.addr);
    let src_s = src.display().to_string();
    let started = Instant::now();
    let out = s.skyx(
        &args(
            &src_s,
            &dst,
            &["--dst-endpoint", &endpoint, "--compress", "off"],
        ),
        &[],
    );
    let r = crate::stores::report(&out);
    assert!(
        proxy.tripped(),
        "the outage never started ({} bytes)",
        proxy.upstream_bytes()
    );
    assert!(
        started.elapsed() > Duration::from_secs(10),
        "copy ended before the outage did"
    );
    assert_eq!(r["objects_copied"], 6, "{r}");
    let total = 48 * MIB as u64;
    for hop in r["hops"].as_array().unwrap() {
        assert_eq!(
            hop["resent_bytes"], 0,
            "a hop paid for the sink's outage: {hop}"
        );
        let wire = hop["wire_bytes"].as_u64().unwrap();
        assert!(
            wire < total + total / 20,
            "{wire} wire bytes for {total}: {hop}"
        );
    }
    for i in 0..6 {
        assert_eq!(read(&format!("{dst}/obj-{i}")), noise(i, 8 * MIB));
    }
}

#[test]
fn a_store_outage_as_objects_are_completed_is_ridden_out() {
    let (s, src, dst, upstream) = outage_setup("outage-complete", 3);
    // The destination's server goes away for 8 s as the first multipart completion reaches it:
    // longer than the store client's own retries last (about 3 s), well inside the sink's
    // window (60 s). The parts still in flight are the sink's to ride out; the completion the
    // gateway's.
    let proxy = Proxy::start_on_request(upstream, ("POST ", "uploadId="), Duration::from_secs(8));
    let endpoint = format!("http://{}", proxy.addr);
    let src_s = src.display().to_string();
    let out = s.skyx(&args(&src_s, &dst, &["--dst-endpoint", &endpoint]), &[]);
    let r = crate::stores::report(&out);
    assert!(proxy.tripped(), "no completion went through the proxy");
    assert_eq!(r["objects_copied"], 3, "{r}");
    for i in 0..3 {
        assert_eq!(read(&format!("{dst}/obj-{i}")), noise(i, 8 * MIB));
    }
}

#[test]
fn a_frozen_relay_is_replaced_and_the_copy_completes() {
    let s = Scratch::new("frozen");
    let (src, dst) = (s.dir.join("src"), s.dir.join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("obj-{i}")), noise(i, 6 * MIB)).unwrap();
    }
    let (src_s, dst_s) = (src.display().to_string(), dst.display().to_string());
    let mut child = s
        .command(&args(&src_s, &dst_s, &["--bwlimit", "8MiB"]), &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once data reaches the destination, the relay is frozen as a VM under memory pressure
    // or in a live migration looks: alive, connections open, answering nothing.
    wait_for("data reached the destination", &mut child, || {
        !hidden_files(&dst).is_empty() || dst.exists()
    });
    let relay = s.agent_pid("aws:us-east-2#0").expect("the relay runs");
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &relay.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let out = finish(&s, child);
    let r = crate::stores::report(&out);
    assert!(r["agents_replaced"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["objects_copied"], 8, "{r}");
    for i in 0..8 {
        assert_eq!(
            std::fs::read(dst.join(format!("obj-{i}"))).unwrap(),
            noise(i, 6 * MIB)
        );
    }
    assert!(
        !Path::new(&format!("/proc/{relay}")).exists()
            || std::fs::read_to_string(format!("/proc/{relay}/stat"))
                .is_ok_and(|st| st.contains(") Z ")),
        "the frozen relay was left running"
    );
}

/// The uploads the copy's journal still has to abort (the journal of the one copy in `s`).
fn pending_aborts(s: &Scratch) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(s.state().join("jobs")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        if let Ok(Some((_, state))) = skyx_gateway::journal::Journal::open(&e.path()) {
            out.extend(state.pending_aborts);
        }
    }
    out
}

#[test]
fn uploads_a_dead_store_would_not_abort_are_aborted_by_the_next_run() {
    let s = Scratch::new("abort-later");
    let src = s.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("obj-{i}")), noise(i, 12 * MIB)).unwrap();
    }
    let dst = s.root(Kind::S3, "dst");
    let upstream = env("SKYX_TEST_S3_ENDPOINT")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // The destination goes away for good once 8 MiB reached it.
    let proxy = Proxy::start(upstream, 8 * MIB as u64, None);
    let endpoint = format!("http://{}", proxy.addr);
    let src_s = src.display().to_string();
    let run = |extra: &[&str]| {
        let mut a = args(
            &src_s,
            &dst,
            &["--dst-endpoint", &endpoint, "--sink-retry", "2s"],
        );
        a.extend_from_slice(extra);
        s.skyx(&a, &[])
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let r = json(&out);
    let failed = r["objects_failed"].as_array().unwrap();
    assert!(!failed.is_empty(), "{r}");
    for f in failed {
        let why = f["why"].as_str().unwrap();
        assert!(why.contains("refused") || why.contains("upload"), "{why}");
    }
    // Its uploads could not be aborted with the store down: the journal keeps them.
    let pending = pending_aborts(&s);
    assert!(!pending.is_empty(), "no abort was left to retry: {err}");
    // Whether each of those uploads still takes a part (S3 answers NoSuchUpload once one is
    // aborted; s3s-fs answers AccessDenied for an upload it no longer has).
    let open = |pending: &[(String, String)]| -> Vec<bool> {
        crate::stores::runtime().block_on(async {
            let store = crate::stores::open(&dst).await.0;
            let mut out = Vec::new();
            for (id, key) in pending {
                let upload = skyx_store::MultipartUpload::new(key, id, Default::default());
                let part = store.put_part(&upload, 1, bytes::Bytes::from_static(b"x"));
                out.push(part.await.is_ok());
            }
            out
        })
    };
    assert!(
        open(&pending).iter().all(|&o| o),
        "a pending upload is not open"
    );
    // The store comes back; the next run aborts them before anything else, then copies.
    proxy.restore();
    let r = crate::stores::report(&run(&[]));
    assert_eq!(r["objects_copied"], 4, "{r}");
    assert!(pending_aborts(&s).is_empty());
    assert!(
        open(&pending).iter().all(|&o| !o),
        "an upload was left open"
    );
    for i in 0..4 {
        assert_eq!(read(&format!("{dst}/obj-{i}")), noise(i, 12 * MIB));
    }
}

/// A tmpfs mounted for one test, unmounted when dropped (even when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root, as CI has");
        Tmpfs(dir.to_path_buf())
    }

    /// Bytes in use, as the file system counts them.
    fn used(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_fails_what_does_not_fit_by_name_and_frees_what_it_used() {
    let s = Scratch::new("disk-full");
    let src = s.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("obj-{i}")), noise(i, 8 * MIB)).unwrap();
    }
    let disk = Tmpfs::mount(&s.dir.join("disk"), "20m");
    let dst = disk.0.join("dst");
    let (src_s, dst_s) = (src.display().to_string(), dst.display().to_string());
    let out = s.skyx(&args(&src_s, &dst_s, &[]), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "48 MiB fit on 20 MiB? {err}");
    let r = json(&out);
    let failed = r["objects_failed"].as_array().unwrap();
    assert!(!failed.is_empty(), "{r}");
    for f in failed {
        let why = f["why"].as_str().unwrap();
        assert!(
            why.contains("No space left"),
            "the cause is not named: {why}"
        );
    }
    // What landed is whole; nothing hidden stays; the disk holds only what landed.
    let mut landed = 0u64;
    for i in 0..6 {
        let path = dst.join(format!("obj-{i}"));
        if path.exists() {
            assert_eq!(std::fs::read(&path).unwrap(), noise(i, 8 * MIB));
            landed += 8 * MIB as u64;
        }
    }
    assert_eq!(
        landed,
        (6 - failed.len() as u64) * 8 * MIB as u64,
        "objects neither landed nor failed: {r}"
    );
    assert_eq!(
        hidden_files(&dst),
        Vec::<String>::new(),
        "staging left behind"
    );
    let used = disk.used();
    assert!(
        used <= landed + MIB as u64,
        "{used} bytes used on the disk for {landed} bytes that landed"
    );
}

#[test]
fn a_killed_copy_leaves_no_staging_once_run_again() {
    let s = Scratch::new("killed-staging");
    let (src, dst) = (s.dir.join("src"), s.dir.join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("obj-{i}")), noise(i, 12 * MIB)).unwrap();
    }
    let (src_s, dst_s) = (src.display().to_string(), dst.display().to_string());
    // The gateway dies (as if killed) with uploads open and parts staged.
    let out = s.skyx(
        &args(&src_s, &dst_s, &[]),
        &[("SKYX_FAULT_ABORT_AFTER_LANDED", "4")],
    );
    assert!(!out.status.success(), "the injected crash did not happen");
    assert!(
        !hidden_files(&dst).is_empty(),
        "the killed run left nothing to clean"
    );
    // A fresh run (not a resume) aborts what the dead one left and sweeps its staging.
    let r = crate::stores::report(&s.skyx(&args(&src_s, &dst_s, &[]), &[]));
    assert_eq!(r["objects_copied"], 6, "{r}");
    assert_eq!(
        hidden_files(&dst),
        Vec::<String>::new(),
        "staging left behind"
    );
    for i in 0..6 {
        assert_eq!(
            std::fs::read(dst.join(format!("obj-{i}"))).unwrap(),
            noise(i, 12 * MIB)
        );
    }
}
