//! `--tpslimit` and `--bwlimit`: a paced copy arrives whole and verified (how fast it goes is
//! the pacer's unit tests' business, in virtual time: tests here never time anything); bad
//! rates are refused naming the flag; a byte limit keeps a copy off the provider's own copy,
//! which no one can pace.

use crate::stores::{Kind, Scratch};

fn seed(s: &Scratch) -> String {
    let dir = s.dir.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..5 {
        std::fs::write(dir.join(format!("f{i}")), vec![i as u8; 3 << 20]).unwrap();
    }
    dir.display().to_string()
}

#[test]
fn a_paced_copy_arrives_whole_and_server_side_yields_to_a_byte_limit() {
    let s = Scratch::new("limits");
    let data = seed(&s);
    let src = s.root(Kind::S3, "src");
    let out = s.skyx(
        &[
            "cp",
            "-r",
            &data,
            &src,
            "--tpslimit",
            "200",
            "--bwlimit",
            "256MiB/s",
            "--json",
        ],
        &[],
    );
    let r = crate::stores::report(&out);
    assert_eq!(r["objects_copied"], 5, "{r}");
    let check = s.skyx(&["check", &data, &src], &[]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // S3 -> S3 would go server-side; with a byte limit it goes through (paced) agents.
    let dst = s.root(Kind::S3, "dst");
    let out = s.skyx(
        &["cp", "-r", &src, &dst, "--bwlimit", "1GiB", "--json"],
        &[],
    );
    let r = crate::stores::report(&out);
    assert_eq!(r["objects_copied"], 5, "{r}");
    assert_eq!(r["objects_server_side"], 0, "{r}");
}

#[test]
fn bad_rates_are_refused_naming_the_flag() {
    let s = Scratch::new("limits-bad");
    let data = seed(&s);
    let out_dir = s.dir.join("out");
    let out_dir = out_dir.to_str().unwrap();
    for (flags, want) in [
        (vec!["--tpslimit", "0"], "--tpslimit 0"),
        (vec!["--tpslimit=-3"], "--tpslimit -3"),
        (vec!["--bwlimit", "0"], "--bwlimit 0"),
        (vec!["--bwlimit", "fast"], "--bwlimit fast"),
        (
            vec!["--bwlimit", "10MiB", "--server-side", "always"],
            "--server-side always cannot keep --bwlimit",
        ),
    ] {
        let mut args = vec!["cp", "-r", data.as_str(), out_dir];
        args.extend(flags.iter().copied());
        let out = s.skyx(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
    }
    assert!(!std::path::Path::new(out_dir).exists(), "nothing written");
}
