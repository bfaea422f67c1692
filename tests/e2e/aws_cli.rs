//! Differential tests against the AWS CLI (pip `awscli`), whose `cp`/`sync` semantics skyx
//! promises: the same command on the same moto bucket leaves the same files, case by case.
//! The deliberate differences, each checked here too:
//! - a zero-byte directory marker (`dir/`) becomes an empty directory locally (the AWS CLI
//!   skips it);
//! - a key with a `.` or empty segment (`./a`, `a//b`) is skipped (the AWS CLI normalises it,
//!   so two keys can land on one file; see `keys`);
//! - some objects skipped is exit 1 (the AWS CLI exits 2).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::moto::{files_under, moto_bucket, moto_env, moto_keys};
use crate::stores::{Scratch, env};

/// Runs the AWS CLI against moto, reading no user configuration (`s3` transfers quietly).
pub fn aws(args: &[&str]) -> Output {
    let quiet: &[&str] = if args.first() == Some(&"s3") && args.get(1) != Some(&"mb") {
        &["--only-show-errors"]
    } else {
        &[]
    };
    let out = Command::new(env("SKYX_TEST_AWS_CLI"))
        .arg("--endpoint-url")
        .arg(env("SKYX_TEST_EC2_ENDPOINT"))
        .args(args)
        .args(quiet)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run the AWS CLI");
    // 0, or 2 when some files were skipped; anything else is the reference failing.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn skyx(s: &Scratch, args: &[&str]) -> Output {
    let moto = moto_env();
    let moto: Vec<(&str, &str)> = moto.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = args.to_vec();
    all.push("--no-progress");
    s.skyx(&all, &moto)
}

/// Every file under `dir` (relative path → bytes); nothing for a directory that is not there.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    if !dir.exists() {
        return BTreeMap::new();
    }
    files_under(dir)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel.to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

const KEYS: &[&str] = &[
    "p/a.csv",
    "p/b.json",
    "p/sub/c.csv",
    "p/sub/deep/d.CSV",
    "p/café.txt",
    "p/naïve/ü.csv",
    "p/plus+sign.txt",
    "p/100%.txt",
    "p/space name.csv",
    "p/[x].txt",
    "p/data/x",
    "p/data2/y",
    "p/dir/",
    "p/dir/f.csv",
    "p/empty/",
    "p/tmp-1.csv",
    "other/z.csv",
];

fn bucket() -> String {
    let objects: Vec<(&str, &[u8])> = KEYS
        .iter()
        .map(|k| {
            (
                *k,
                if k.ends_with('/') {
                    &b""[..]
                } else {
                    k.as_bytes()
                },
            )
        })
        .collect();
    moto_bucket(&objects)
}

#[test]
fn recursive_copies_and_filters_leave_the_files_the_aws_cli_leaves() {
    let s = Scratch::new("awscli-filters");
    let bucket = bucket();
    let cases: &[&[&str]] = &[
        &[],
        &["--exclude", "*", "--include", "*.csv"],
        // The exclude comes last: nothing.
        &["--include", "*.csv", "--exclude", "*"],
        // An include alone restricts nothing.
        &["--include", "*.csv"],
        &[
            "--exclude",
            "*",
            "--include",
            "caf?.txt",
            "--include",
            "na?ve/*",
        ],
        &[
            "--exclude",
            "*.csv",
            "--include",
            "sub/*",
            "--exclude",
            "*/deep/*",
        ],
        &["--exclude", "[!a-c]*"],
        &[
            "--exclude",
            "*",
            "--include",
            "[[]x].txt",
            "--include",
            "*[é]*",
        ],
        // `*` crosses `/`: this takes data/x and data2/y.
        &["--exclude", "data*"],
        &["--exclude", "*", "--include", "data/*", "--include", "*%*"],
        &["--exclude", "*.CSV", "--exclude", "*+*", "--exclude", "* *"],
    ];
    for (n, flags) in cases.iter().enumerate() {
        let want_dir = s.dir.join(format!("aws-{n}"));
        let got_dir = s.dir.join(format!("skyx-{n}"));
        let src = format!("s3://{bucket}/p/");
        let mut args = vec!["s3", "cp", "--recursive", &src];
        let want_arg = format!("{}/", want_dir.display());
        args.push(&want_arg);
        args.extend_from_slice(flags);
        aws(&args);
        let got_arg = format!("{}/", got_dir.display());
        let mut args = vec!["cp", "-r", &src, &got_arg];
        args.extend_from_slice(flags);
        let out = skyx(&s, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "case {flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (want, got) = (tree(&want_dir), tree(&got_dir));
        assert_eq!(got, want, "case {flags:?}");
        // The deliberate difference: markers the filters keep become empty directories.
        if flags.is_empty() {
            assert!(got_dir.join("empty").is_dir() && !want_dir.join("empty").exists());
        }
    }
    // Enough cases took something and left something out to mean anything.
    let sizes: Vec<usize> = (0..cases.len())
        .map(|n| tree(&s.dir.join(format!("aws-{n}"))).len())
        .collect();
    assert!(sizes.contains(&0) && sizes.iter().filter(|&&n| n > 0 && n < 14).count() >= 6);
}

#[test]
fn single_objects_land_where_the_aws_cli_puts_them() {
    let s = Scratch::new("awscli-single");
    let bucket = bucket();
    let existing = s.dir.join("existing");
    let cases: Vec<(String, String)> = vec![
        (format!("s3://{bucket}/p/a.csv"), "into/".into()),
        (format!("s3://{bucket}/p/sub/c.csv"), "renamed.csv".into()),
        (format!("s3://{bucket}/p/café.txt"), "existing".into()),
        (format!("s3://{bucket}/p/data/x"), "deep/er/name".into()),
    ];
    for (tool, root) in [("aws", s.dir.join("aws")), ("skyx", s.dir.join("skyx"))] {
        std::fs::create_dir_all(root.join(existing.file_name().unwrap())).unwrap();
        for (src, dst) in &cases {
            let dst = format!("{}/{dst}", root.display());
            if tool == "aws" {
                aws(&["s3", "cp", src, &dst]);
            } else {
                let out = skyx(&s, &["cp", src, &dst]);
                assert!(
                    out.status.success(),
                    "{src} -> {dst}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    let want = tree(&s.dir.join("aws"));
    assert_eq!(want.len(), cases.len());
    assert_eq!(tree(&s.dir.join("skyx")), want);
}

#[test]
fn sync_with_delete_and_filters_leaves_what_the_aws_cli_leaves() {
    let s = Scratch::new("awscli-sync");
    let bucket = bucket();
    let src = format!("s3://{bucket}/p/");
    let flags = ["--delete", "--exclude", "*.log", "--exclude", "keep/*"];
    for tool in ["aws", "skyx"] {
        let dir = s.dir.join(tool);
        // Already there: one object the same, one stale, three the source lacks (two of them
        // excluded, so never deleted).
        for (path, data) in [
            ("a.csv", &b"p/a.csv"[..]),
            ("b.json", b"stale"),
            ("extra.txt", b"x"),
            ("app.log", b"log"),
            ("keep/k", b"kept"),
        ] {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let dst = format!("{}/", dir.display());
        let mut args = vec!["sync", &src, &dst];
        args.extend_from_slice(&flags);
        if tool == "aws" {
            let mut aws_args = vec!["s3"];
            aws_args.extend_from_slice(&args);
            aws(&aws_args);
        } else {
            let out = skyx(&s, &args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let want = tree(&s.dir.join("aws"));
    assert!(want.contains_key("keep/k") && !want.contains_key("extra.txt"));
    assert_eq!(tree(&s.dir.join("skyx")), want);

    // A second sync finds everything in place, the markers' directories included.
    let dst = format!("{}/", s.dir.join("skyx").display());
    let mut args = vec!["sync", &src, &dst];
    args.extend_from_slice(&flags);
    let out = skyx(&s, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Nothing to copy."), "{stdout}");

    // Mirroring one object would delete everything else: refused, nothing touched.
    let out = skyx(&s, &["sync", &format!("{src}a.csv"), &dst, "--delete"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a single object"), "{stderr}");
    assert_eq!(tree(&s.dir.join("skyx")), want);
}

/// A local source with links of every kind and a FIFO, uploaded by both tools to the same
/// bucket: the same keys, the same entries skipped (each named by skyx, exit 1).
#[test]
fn local_sources_with_odd_entries_upload_the_keys_the_aws_cli_uploads() {
    let s = Scratch::new("awscli-local");
    let src = s.dir.join("src");
    let outside = s.dir.join("outside");
    std::fs::create_dir_all(src.join("real")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    std::fs::write(src.join("real/r.txt"), b"r").unwrap();
    std::fs::write(outside.join("o.txt"), b"o").unwrap();
    let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, src.join(name));
    link("../outside", "linkdir").unwrap();
    link("a.txt", "alink").unwrap();
    link("nowhere", "dangling").unwrap();
    link("loop2", "loop1").unwrap();
    link("loop1", "loop2").unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let bucket = moto_bucket(&[]);
    let src_arg = src.display().to_string();
    for (follow, expect) in [
        (
            "--follow-symlinks",
            &["a.txt", "alink", "linkdir/o.txt", "real/r.txt"][..],
        ),
        ("--no-follow-symlinks", &["a.txt", "real/r.txt"][..]),
    ] {
        let (a, b) = (format!("aws{follow}/"), format!("skyx{follow}/"));
        aws(&[
            "s3",
            "cp",
            "--recursive",
            &src_arg,
            &format!("s3://{bucket}/{a}"),
            follow,
        ]);
        let out = skyx(
            &s,
            &["cp", "-r", &src_arg, &format!("s3://{bucket}/{b}"), follow],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let relative = |prefix: &str| -> Vec<String> {
            moto_keys(&bucket, prefix)
                .iter()
                .map(|k| k[prefix.len()..].to_string())
                .collect()
        };
        assert_eq!(relative(&a), expect, "the AWS CLI {follow}");
        assert_eq!(relative(&b), expect, "skyx {follow}");
        let mut skipped = vec!["fifo: not a regular file"];
        if follow == "--follow-symlinks" {
            skipped.extend([
                "dangling: a dangling symbolic link",
                "loop1: a symbolic link loop",
                "loop2: a symbolic link loop",
            ]);
        }
        for what in &skipped {
            assert!(stderr.contains(what), "{what} not named: {stderr}");
        }
        assert!(
            stderr.contains(&format!("{} source objects were skipped", skipped.len())),
            "{stderr}"
        );
    }
}
