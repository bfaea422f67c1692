//! Hostile and odd source keys. A bucket is remote input: its keys must never decide where on
//! the user's disk a copy writes. moto's S3 server stores and lists keys exactly as given
//! (s3s-fs, backed by a file system, cannot hold `..` segments), so the hostile bucket lives
//! there.

use std::path::{Path, PathBuf};

use crate::moto::{files_under, moto_bucket, moto_env};
use crate::stores::{Scratch, unique};

#[test]
fn keys_that_would_leave_the_destination_are_skipped_and_the_rest_copied() {
    let s = Scratch::new("hostile-keys");
    // A name in the system temp directory, far above the destination, unique to this run.
    let far = unique("skyx-escaped");
    let far_key = format!("trav/../../../../../../../../../../../../tmp/{far}");
    let bucket = moto_bucket(&[
        ("trav/../../../ESCAPED.txt", b"escape 1"),
        ("trav/a/../../../ESCAPED2.txt", b"escape 2"),
        (&far_key, b"escape 3"),
        ("trav/..", b"dot dot"),
        ("trav/./dot.txt", b"dot"),
        ("trav//double.txt", b"double"),
        ("trav/ok.txt", b"fine"),
        ("trav/sub/ok..2.txt", b"also fine"),
    ]);
    let dst = s.dir.join("a/b/dst");
    let dst_arg = format!("{}/", dst.display());
    let moto = moto_env();
    let moto: Vec<(&str, &str)> = moto.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = s.skyx(
        &["cp", "-r", &format!("s3://{bucket}/trav/"), &dst_arg],
        &moto,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 1: the copy ran, but not every object was written.
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    for key in [
        "trav/../../../ESCAPED.txt",
        "trav/a/../../../ESCAPED2.txt",
        "trav/..",
        "trav/./dot.txt",
        "trav//double.txt",
        far_key.as_str(),
    ] {
        assert!(
            stderr.contains(&format!("skipping s3://{bucket}/{key}:")),
            "{key} not named as skipped: {stderr}"
        );
    }
    assert!(stderr.contains("6 source objects were skipped"), "{stderr}");
    // Only the safe objects landed, and only inside the destination; nothing anywhere else in
    // the test's scratch (outside the state directory) or in the temp directory.
    assert_eq!(
        files_under(&dst),
        vec![PathBuf::from("ok.txt"), PathBuf::from("sub/ok..2.txt")]
    );
    assert_eq!(std::fs::read(dst.join("ok.txt")).unwrap(), b"fine");
    assert_eq!(
        std::fs::read(dst.join("sub/ok..2.txt")).unwrap(),
        b"also fine"
    );
    let outside: Vec<PathBuf> = files_under(&s.dir)
        .into_iter()
        .filter(|p| !p.starts_with("a/b/dst") && !p.starts_with("state"))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the destination: {outside:?}"
    );
    assert!(!std::env::temp_dir().join(&far).exists());
    assert!(!Path::new("/tmp").join(&far).exists());

    // The single-object form: a key whose last segment is `..` copied into a directory.
    let out = s.skyx(&["cp", &format!("s3://{bucket}/trav/.."), &dst_arg], &moto);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("would write outside the destination"),
        "{stderr}"
    );
    assert_eq!(files_under(&dst).len(), 2);
    assert!(
        files_under(&s.dir)
            .iter()
            .all(|p| p.starts_with("a/b/dst") || p.starts_with("state"))
    );
}

#[test]
fn a_prefix_the_filters_empty_copies_nothing_and_never_its_sibling_object() {
    let s = Scratch::new("filtered-sibling");
    // `data` is an object and a prefix at once, as S3 allows.
    let bucket = moto_bucket(&[("data", b"the sibling object"), ("data/a.json", b"{}")]);
    let dst = s.dir.join("dst");
    let moto = moto_env();
    let moto: Vec<(&str, &str)> = moto.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = s.skyx(
        &[
            "cp",
            "-r",
            &format!("s3://{bucket}/data"),
            &format!("{}/", dst.display()),
            "--exclude",
            "*.json",
        ],
        &moto,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Nothing to copy: the filters left out every object"),
        "{stdout}"
    );
    assert!(
        !dst.exists() || files_under(&dst).is_empty(),
        "copied {:?}",
        files_under(&dst)
    );
}
