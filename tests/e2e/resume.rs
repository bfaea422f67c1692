//! Resume that survives real life: progress is journaled per object, so an interrupted `sync`
//! resumes, a rerun without `--resume` keeps the parts that landed, and a source that changed
//! in between affects only the objects that changed. Interruptions are injected by the gateway
//! killing itself after a number of journaled landings (`SKYX_FAULT_ABORT_AFTER_LANDED`).

use crate::stores::{Kind, Scratch, VIA_RELAY, assert_holds, dataset, report, write_local};

const MIB: usize = 1024 * 1024;

fn with_relay<'a>(mut a: Vec<&'a str>, extra: &[&'a str]) -> Vec<&'a str> {
    a.extend(["--json", "--chunk-size", "5MiB"]);
    a.extend_from_slice(VIA_RELAY);
    a.extend_from_slice(extra);
    a
}

#[test]
fn an_interrupted_sync_resumes_without_copying_again_what_landed() {
    let s = Scratch::new("sync-resume");
    let data = dataset(120, 30 * MIB);
    let src = s.dir.join("src");
    write_local(&src, &data);
    let src = src.display().to_string();
    let dst = s.root(Kind::Gcs, "dst");
    let sync = |extra: &[&'static str]| with_relay(vec!["sync", &src, &dst], extra);
    let out = s.skyx(&sync(&[]), &[("SKYX_FAULT_ABORT_AFTER_LANDED", "60")]);
    assert!(!out.status.success(), "the injected crash did not happen");
    // Objects the interrupted run completed are in place (sync leaves them); the rest, and the
    // parts of unfinished ones, are taken from the journal. (This sync was refused before
    // progress was kept per object: finished objects left its plan, so it never matched.)
    let out = s.skyx(&sync(&["--resume"]), &[]);
    let r = report(&out);
    let unchanged = r["unchanged"].as_u64().unwrap();
    assert!(unchanged > 0, "nothing the first run did was kept: {r}");
    let total: u64 = data.values().map(|&v| v as u64).sum();
    assert!(
        r["bytes_sent"].as_u64().unwrap() < total,
        "everything was sent again: {r}"
    );
    assert_eq!(
        r["objects_copied"].as_u64().unwrap() + unchanged,
        data.len() as u64,
        "{r}"
    );
    assert_holds(&dst, &data);
}

#[test]
fn a_rerun_without_resume_keeps_the_parts_that_landed() {
    let s = Scratch::new("rerun-keeps-parts");
    // Two tiny objects and one of 12 parts: the crash comes with the large one under way.
    let data = dataset(0, 60 * MIB);
    let src = s.dir.join("src");
    write_local(&src, &data);
    let src = src.display().to_string();
    let dst = s.root(Kind::S3, "dst");
    let cp = |extra: &[&'static str]| with_relay(vec!["cp", "-r", &src, &dst], extra);
    let out = s.skyx(&cp(&[]), &[("SKYX_FAULT_ABORT_AFTER_LANDED", "7")]);
    assert!(!out.status.success(), "the injected crash did not happen");
    let out = s.skyx(&cp(&[]), &[]);
    let r = report(&out);
    // `cp` copies every object again (no --resume), but the large object's landed parts are
    // its upload's already: they are not sent again.
    assert_eq!(r["objects_copied"], data.len() as u64, "{r}");
    assert_eq!(r["objects_resumed"], 0, "{r}");
    assert!(
        r["chunks_skipped"].as_u64().unwrap() >= 3,
        "the landed parts were thrown away: {r}"
    );
    assert!(
        (r["bytes_sent"].as_u64().unwrap() as usize) < 60 * MIB,
        "{r}"
    );
    assert_holds(&dst, &data);
}
