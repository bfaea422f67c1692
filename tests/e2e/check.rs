//! `skyx check`: two trees compared by size and the best common checksum, or by their bytes
//! with `--download`; differences named with rclone's markers; exit 0 only when they match.

use crate::stores::{Kind, Scratch};

fn check(s: &Scratch, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = s.skyx(&all, &[]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn outcome(v: &serde_json::Value, key: &str) -> String {
    v["objects"][key]["outcome"]
        .as_str()
        .unwrap_or("absent")
        .to_string()
}

#[test]
fn check_names_every_difference_and_matches_only_identical_trees() {
    let s = Scratch::new("check");
    let src = s.dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("one"), b"one").unwrap();
    std::fs::write(src.join("sub/two"), b"two").unwrap();
    // 12 MiB in 5 MiB parts: a multipart S3 object, with no checksum a local file shares.
    std::fs::write(src.join("big"), vec![9u8; 12 * 1024 * 1024]).unwrap();
    let src_arg = src.to_str().unwrap();
    let dst = format!("{}/", s.root(Kind::S3, "checked"));
    let out = s.skyx(
        &[
            "cp",
            "-r",
            src_arg,
            &dst,
            "--chunk-size",
            "5MiB",
            "--no-progress",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Same sizes; the multipart object cannot be compared without reading it.
    let (code, v) = check(&s, &[src_arg, &dst]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(outcome(&v, "one"), "identical");
    assert_eq!(v["objects"]["one"]["by"], "md5");
    assert_eq!(outcome(&v, "big"), "not_comparable");
    let (code, v) = check(&s, &[src_arg, &dst, "--download"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["counts"], serde_json::json!({"identical": 3}));

    // Same size, other bytes; one more at the source; one more at the destination.
    std::fs::write(src.join("sub/two"), b"TWO").unwrap();
    std::fs::write(src.join("new"), b"new").unwrap();
    let out = s.skyx(
        &[
            "cp",
            &src.join("one").display().to_string(),
            &format!("{dst}extra"),
            "--no-progress",
        ],
        &[],
    );
    assert!(out.status.success());
    let (code, v) = check(&s, &[src_arg, &dst, "--download"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(outcome(&v, "sub/two"), "differ");
    assert_eq!(outcome(&v, "new"), "missing_at_destination");
    assert_eq!(outcome(&v, "extra"), "extra_at_destination");
    assert_eq!(outcome(&v, "one"), "identical");
    let (_, v) = check(&s, &[src_arg, &dst]);
    assert_eq!(
        outcome(&v, "sub/two"),
        "differ",
        "by MD5 without reading S3"
    );
    // --one-way ignores what only the destination has; filters narrow both sides.
    let (_, v) = check(&s, &[src_arg, &dst, "--one-way", "--download"]);
    assert_eq!(outcome(&v, "extra"), "absent");
    let (code, v) = check(
        &s,
        &[
            src_arg,
            &dst,
            "--download",
            "--exclude",
            "*",
            "--include",
            "one",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["counts"], serde_json::json!({"identical": 1}));
}
