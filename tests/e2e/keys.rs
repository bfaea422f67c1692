//! Hostile and odd source keys. A bucket is remote input: its keys must never decide where on
//! the user's disk a copy writes. moto's S3 server stores and lists keys exactly as given
//! (s3s-fs, backed by a file system, cannot hold `..` segments), so the hostile bucket lives
//! there.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use skyx_store::{ObjectUrl, StoreConfig};

use crate::stores::{Scratch, runtime, unique};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start the test servers"))
}

/// The environment that points `skyx`'s S3 ends at moto (which takes any credentials).
fn moto_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", env("SKYX_TEST_EC2_ENDPOINT")),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
    ]
}

/// A new moto bucket holding `objects` (key, bytes), as a store would serve them.
fn moto_bucket(objects: &[(&str, &[u8])]) -> String {
    let bucket = unique("hostile");
    let mut config = StoreConfig::default();
    config.s3.endpoint = Some(env("SKYX_TEST_EC2_ENDPOINT"));
    config.s3.region = Some("us-east-1".into());
    config.s3.static_credentials = Some(("testing".into(), "testing".into()));
    config.s3.force_path_style = true;
    runtime().block_on(async {
        let url = ObjectUrl::parse(&format!("s3://{bucket}")).unwrap();
        let store = skyx_store::open(&url, &config).await.unwrap();
        store.create_bucket().await.unwrap();
        for (key, data) in objects {
            store
                .put(key, Bytes::copy_from_slice(data))
                .await
                .unwrap_or_else(|e| panic!("put {key:?} into moto: {e}"));
        }
        // The test depends on the server keeping the keys as given: check it does.
        let listed = skyx_store::list_all(store.as_ref(), "").await.unwrap();
        let mut keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
        keys.sort();
        let mut want: Vec<&str> = objects.iter().map(|(k, _)| *k).collect();
        want.sort();
        assert_eq!(keys, want, "moto did not keep the keys as given");
    });
    bucket
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

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
