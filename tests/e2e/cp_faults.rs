//! `skyx cp` when things go wrong: agents die, frames are corrupted, the gateway itself is
//! killed, and users give bad input. Faults are injected deterministically (environment
//! variables read by the agent and gateway processes; see `skyx_agent::daemon` and
//! `CopyOptions::abort_after_landed`), so no test races a timer. After every command, no agent
//! process of the test may be left running (checked by `Scratch::skyx`).

use crate::stores::{
    Kind, Scratch, VIA_RELAY, assert_holds, dataset, is_empty, report, write_local,
};

const MIB: usize = 1024 * 1024;

fn args<'a>(src: &'a str, dst: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["cp", "-r", src, dst, "--json", "--chunk-size", "5MiB"];
    a.extend_from_slice(VIA_RELAY);
    a.extend_from_slice(extra);
    a
}

#[test]
fn a_relay_killed_mid_transfer_is_replaced_and_the_copy_completes() {
    let s = Scratch::new("relay-killed");
    let data = dataset(100, 60 * MIB);
    let src = s.dir.join("src");
    write_local(&src, &data);
    let src = src.display().to_string();
    let dst = s.root(Kind::S3, "dst");
    // The relay dies (abort, as if killed) after forwarding 15 chunks.
    let out = s.skyx(
        &args(&src, &dst, &[]),
        &[("SKYX_FAULT_ABORT_AFTER_CHUNKS", "aws:us-east-2#0=15")],
    );
    let r = report(&out);
    assert!(r["agents_replaced"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["objects_copied"], data.len() as u64);
    assert_holds(&dst, &data);
}

#[test]
fn corrupted_frames_are_detected_and_resent() {
    let s = Scratch::new("corrupt");
    let data = dataset(60, 30 * MIB);
    let src = s.dir.join("src");
    write_local(&src, &data);
    let src = src.display().to_string();
    let dst = s.root(Kind::Azure, "dst");
    // Every agent flips a payload bit in every 4th frame it sends (after checksumming, under
    // TLS, so only skyx's own checks can catch it).
    let out = s.skyx(&args(&src, &dst, &[]), &[("SKYX_FAULT_CORRUPT_EVERY", "4")]);
    let r = report(&out);
    assert!(r["corrupt_chunks_detected"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["objects_copied"], data.len() as u64);
    assert_holds(&dst, &data);
}

#[test]
fn a_killed_gateway_resumes_without_resending_landed_chunks() {
    let s = Scratch::new("resume");
    let data = dataset(200, 80 * MIB);
    let total_chunks = data.len() + 80 / 5 - 1;
    let src = s.dir.join("src");
    write_local(&src, &data);
    let src = src.display().to_string();
    let dst = s.root(Kind::Gcs, "dst");
    // The gateway dies (abort, as if killed with SIGKILL) once 60 chunks are journaled; its
    // agents must go with it (checked by `skyx`).
    let out = s.skyx(
        &args(&src, &dst, &[]),
        &[("SKYX_FAULT_ABORT_AFTER_LANDED", "60")],
    );
    assert!(!out.status.success(), "the injected crash did not happen");
    // Whatever is visible at the destination is complete: partial objects are not.
    let out = s.skyx(&args(&src, &dst, &["--resume"]), &[]);
    let r = report(&out);
    let skipped = r["chunks_skipped"].as_u64().unwrap();
    assert!(skipped >= 60, "only {skipped} chunks skipped: {r}");
    assert_eq!(r["chunks_total"].as_u64().unwrap(), total_chunks as u64);
    let total: u64 = data.values().map(|&v| v as u64).sum();
    assert!(
        r["bytes_sent"].as_u64().unwrap() < total,
        "the resumed run re-sent everything: {r}"
    );
    assert_eq!(
        r["objects_copied"].as_u64().unwrap() + r["objects_resumed"].as_u64().unwrap(),
        data.len() as u64
    );
    assert_holds(&dst, &data);
}

/// Runs a copy that must fail with `code`, and checks the message names the problem and that
/// nothing was written at the destination.
fn refused(s: &Scratch, src: &str, dst: &str, env: &[(&str, &str)], code: i32, needle: &str) {
    let out = s.skyx(&["cp", "-r", src, dst], env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "cp {src} {dst}: {err}");
    assert!(
        err.contains(needle),
        "cp {src} {dst}: expected {needle:?} in: {err}"
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message_and_nothing_written() {
    let s = Scratch::new("bad-input");
    let data = dataset(5, 0);
    let src = s.dir.join("src");
    write_local(&src, &data);
    let src = src.display().to_string();
    let dst = s.root(Kind::S3, "dst");

    // (source, destination, extra environment, exit code, what the message must say)
    type Case<'a> = (String, String, Vec<(&'a str, &'a str)>, i32, &'a str);
    let missing_dir = s.dir.join("no-such-dir").display().to_string();
    let cases: Vec<Case> = vec![
        (
            "ftp://host/x".into(),
            dst.clone(),
            vec![],
            2,
            "unknown scheme 'ftp'",
        ),
        (
            "s3://Bad_Bucket/x".into(),
            dst.clone(),
            vec![],
            2,
            "not a valid s3 bucket name",
        ),
        (src.clone(), "az://acct".into(), vec![], 2, "container"),
        (
            "s3://skyx-no-such-bucket-e2e/data".into(),
            dst.clone(),
            vec![],
            2,
            "s3://skyx-no-such-bucket-e2e",
        ),
        (
            src.clone(),
            "gs://skyx-no-such-bucket-e2e/x".into(),
            vec![],
            2,
            "gs://skyx-no-such-bucket-e2e",
        ),
        (
            missing_dir.clone(),
            dst.clone(),
            vec![],
            2,
            "no such object or prefix",
        ),
        (
            src.clone(),
            dst.clone(),
            vec![("AWS_SECRET_ACCESS_KEY", "not-the-secret")],
            2,
            "permission denied",
        ),
    ];
    for (from, to, env, code, needle) in &cases {
        refused(&s, from, to, env, *code, needle);
    }
    assert!(is_empty(&dst), "a refused copy wrote to {dst}");
    // Flags that cannot work fail before anything happens, naming the flag.
    for (flags, needle) in [
        (&["--chunk-size", "1GiB"][..], "--chunk-size 1GiB: at most"),
        (&["--connections", "0"][..], "--connections"),
        (&["--sink-retry", "soon"][..], "--sink-retry soon"),
    ] {
        let mut a = vec!["cp", "-r", src.as_str(), dst.as_str()];
        a.extend_from_slice(flags);
        let out = s.skyx(&a, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    // Control characters in a URL are refused and shown escaped, never sent to the terminal.
    let out = s.skyx(&["cp", "s3://bucket/a\u{1b}[31mb", &src], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("control character") && !err.contains('\u{1b}'),
        "{err:?}"
    );
    // A file that never ends is not read to the end.
    let out = s.skyx(&["run", "/dev/zero", "--dry-run"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("larger than"), "{err}");
    // A file given where a directory needs -r: the message says so.
    let out = s.skyx(&["cp", &src, &dst], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-r/--recursive"));
    assert!(is_empty(&dst));
}
