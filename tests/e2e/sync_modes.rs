//! `sync` and `cp` modes users know from rclone: `--size-only`, `--checksum` (an error where
//! the ends share no checksum), `--update`, `--no-clobber`, `--max-delete`, `--files-from`,
//! and the size and age bounds; a local directory against the S3 server. The default
//! comparison decides by the source time each destination object recorded when written.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use crate::stores::{Kind, Scratch};

fn write(dir: &Path, name: &str, body: &[u8], age: Duration) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn run(s: &Scratch, args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = args.to_vec();
    all.extend(["--json", "--no-progress"]);
    let out = s.skyx(&all, &[]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

fn ok(s: &Scratch, args: &[&str]) -> serde_json::Value {
    let (out, v) = run(s, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

fn copied(v: &serde_json::Value) -> u64 {
    v["objects_copied"].as_u64().unwrap_or(0)
}

fn read(url: &str) -> Vec<u8> {
    crate::stores::read(url)
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn sync_comparisons_and_guards_decide_as_documented() {
    let s = Scratch::new("sync-modes");
    let src = s.dir.join("src");
    write(&src, "a.txt", b"aaaa", 10 * HOUR);
    write(&src, "b.txt", b"bbbb", 10 * HOUR);
    write(&src, "keep/c.txt", b"cccc", 10 * HOUR);
    let src_arg = src.to_str().unwrap();
    let dst = s.root(Kind::S3, "mirror");
    let dst_dir = format!("{dst}/");
    assert_eq!(copied(&ok(&s, &["sync", src_arg, &dst_dir])), 3);

    // Same size, new content, an older mtime (a version restored from a backup, or one that
    // changed while it was copied): the destination, though newer, recorded the time of the
    // version it was written from, so the default comparison (no common checksum for a local
    // file, so times) sees the change and copies it.
    write(&src, "a.txt", b"AAAA", 20 * HOUR);
    assert_eq!(copied(&ok(&s, &["sync", src_arg, &dst_dir])), 1);
    assert_eq!(read(&format!("{dst}/a.txt")), b"AAAA");
    assert_eq!(copied(&ok(&s, &["sync", src_arg, &dst_dir])), 0);
    // The same content under another time: --checksum reads the file and leaves it; the
    // default sees another time and copies it.
    write(&src, "a.txt", b"AAAA", 5 * HOUR);
    assert_eq!(
        copied(&ok(&s, &["sync", src_arg, &dst_dir, "--checksum"])),
        0
    );
    assert_eq!(copied(&ok(&s, &["sync", src_arg, &dst_dir])), 1);

    // Same size, new content, a new mtime: --size-only leaves it, the default copies it.
    write(&src, "b.txt", b"BBBB", Duration::ZERO);
    assert_eq!(
        copied(&ok(&s, &["sync", src_arg, &dst_dir, "--size-only"])),
        0
    );
    assert_eq!(copied(&ok(&s, &["sync", src_arg, &dst_dir])), 1);

    // Another size but older than the destination: --update leaves it.
    write(&src, "b.txt", b"b-longer", 30 * HOUR);
    assert_eq!(copied(&ok(&s, &["sync", src_arg, &dst_dir, "--update"])), 0);
    assert_eq!(read(&format!("{dst}/b.txt")), b"BBBB");

    // --no-clobber: only what is missing.
    write(&src, "new.txt", b"new", Duration::ZERO);
    assert_eq!(
        copied(&ok(&s, &["sync", src_arg, &dst_dir, "--no-clobber"])),
        1
    );
    assert_eq!(read(&format!("{dst}/b.txt")), b"BBBB");

    // --max-delete: three to delete, two allowed: none deleted, exit 1, said so.
    for name in ["a.txt", "new.txt", "keep/c.txt"] {
        std::fs::remove_file(src.join(name)).unwrap();
    }
    let (out, _) = run(
        &s,
        &[
            "sync",
            src_arg,
            &dst_dir,
            "--delete",
            "--max-delete",
            "2",
            "--size-only",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--max-delete 2: the sync would delete 3 objects; deleted none"),
        "{stderr}"
    );
    assert_eq!(read(&format!("{dst}/keep/c.txt")), b"cccc");
    let v = ok(
        &s,
        &[
            "sync",
            src_arg,
            &dst_dir,
            "--delete",
            "--max-delete",
            "3",
            "--size-only",
        ],
    );
    assert_eq!(v["deleted"], 3);
}

#[test]
fn checksum_refuses_ends_that_share_no_checksum() {
    let s = Scratch::new("sync-checksum");
    let src = s.dir.join("src");
    // 12 MiB in 5 MiB parts: the S3 copy is a multipart object, whose ETag is no MD5.
    write(&src, "big.bin", &vec![3u8; 12 * 1024 * 1024], HOUR);
    let src_arg = src.to_str().unwrap();
    let dst = format!("{}/", s.root(Kind::S3, "multi"));
    ok(&s, &["sync", src_arg, &dst, "--chunk-size", "5MiB"]);
    let (out, _) = run(&s, &["sync", src_arg, &dst, "--checksum"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("share no checksum"), "{stderr}");
    assert!(stderr.contains("big.bin"), "{stderr}");
}

#[test]
fn files_from_and_size_and_age_bounds_choose_the_objects() {
    let s = Scratch::new("select");
    let src = s.dir.join("src");
    write(&src, "small.txt", b"s", Duration::ZERO);
    write(&src, "big.bin", &[7u8; 4096], Duration::ZERO);
    write(&src, "old.log", &[1u8; 100], 48 * HOUR);
    write(&src, "sub/x.csv", b"x,y", Duration::ZERO);
    let src_arg = src.to_str().unwrap();
    let list = s.dir.join("wanted.txt");
    std::fs::write(&list, "# what to copy\nsub/x.csv\n\nold.log\nmissing.txt\n").unwrap();

    let out_dir = |name: &str| s.dir.join(name);
    let files = |dir: &Path| -> Vec<String> {
        crate::moto::files_under(dir)
            .into_iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    };
    // --files-from: the named objects; the missing one is named and makes the exit 1.
    let (out, _) = run(
        &s,
        &[
            "cp",
            "-r",
            src_arg,
            out_dir("listed").to_str().unwrap(),
            "--files-from",
            list.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing.txt: named in --files-from but not at the source"),
        "{stderr}"
    );
    assert_eq!(files(&out_dir("listed")), vec!["old.log", "sub/x.csv"]);

    ok(
        &s,
        &[
            "cp",
            "-r",
            src_arg,
            out_dir("sized").to_str().unwrap(),
            "--min-size",
            "50",
            "--max-size",
            "1KiB",
        ],
    );
    assert_eq!(files(&out_dir("sized")), vec!["old.log"]);
    ok(
        &s,
        &[
            "cp",
            "-r",
            src_arg,
            out_dir("young").to_str().unwrap(),
            "--max-age",
            "24h",
        ],
    );
    assert_eq!(
        files(&out_dir("young")),
        vec!["big.bin", "small.txt", "sub/x.csv"]
    );
    ok(
        &s,
        &[
            "cp",
            "-r",
            src_arg,
            out_dir("aged").to_str().unwrap(),
            "--min-age",
            "1d",
        ],
    );
    assert_eq!(files(&out_dir("aged")), vec!["old.log"]);
    // Bounds that contradict each other are bad input.
    let (out, _) = run(
        &s,
        &[
            "cp",
            "-r",
            src_arg,
            "/tmp/never",
            "--min-size",
            "2KB",
            "--max-size",
            "1KB",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}
