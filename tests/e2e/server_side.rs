//! Server-side copies: between two buckets of one S3 server, two of the GCS emulator and two
//! Azurite accounts, the provider copies every object itself (no agent starts), with the
//! objects' properties, verified at rest; `--server-side never` sends them through agents;
//! `--server-side always` refuses ends that cannot, naming why.

use std::process::Command;

use crate::ends::ok;
use crate::stores::{Kind, Scratch, env};

/// A page, a binary and an empty file, copied to `url` with user metadata.
fn seed(s: &Scratch, url: &str) {
    let dir = s.dir.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), b"<h1>hello</h1>").unwrap();
    std::fs::write(dir.join("blob.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    ok(&s.skyx(
        &[
            "cp",
            "-r",
            dir.to_str().unwrap(),
            url,
            "--metadata",
            "team=data",
        ],
        &[],
    ));
}

fn report(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// What the AWS CLI's HEAD says of an object on the test S3 server.
fn s3_head(bucket_and_key: &str) -> serde_json::Value {
    let (bucket, key) = bucket_and_key.split_once('/').unwrap();
    let out = Command::new(env("SKYX_TEST_AWS_CLI"))
        .args(["s3api", "head-object", "--bucket", bucket, "--key", key])
        .args(["--endpoint-url", &env("SKYX_TEST_S3_ENDPOINT")])
        .env("AWS_ACCESS_KEY_ID", env("SKYX_TEST_S3_ACCESS_KEY"))
        .env("AWS_SECRET_ACCESS_KEY", env("SKYX_TEST_S3_SECRET_KEY"))
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run the AWS CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn copies_within_one_cloud_go_server_side_with_their_properties() {
    let s = Scratch::new("server-side");
    for kind in [Kind::S3, Kind::Gcs, Kind::Azure] {
        let src = s.root(kind, "src");
        let dst = s.root(kind, "dst");
        seed(&s, &src);
        let dry = ok(&s.skyx(&["cp", "-r", &src, &dst, "--dry-run"], &[]));
        assert!(dry.contains("Server-side:"), "{dry}");
        let out = ok(&s.skyx(&["cp", "-r", &src, &dst, "--json"], &[]));
        let r = report(&out);
        assert_eq!(r["objects_copied"], 3, "{kind:?}: {out}");
        assert_eq!(r["objects_server_side"], 3, "{kind:?}: {out}");
        assert_eq!(r["agents"].as_array().unwrap().len(), 0, "{out}");
        // Every object with content was checked by a content hash the stores keep.
        let by_hash: u64 = ["crc32c", "md5"]
            .iter()
            .filter_map(|h| r["verified"][h].as_u64())
            .sum();
        assert!(by_hash >= 2, "{kind:?}: {out}");
        // Same bytes, by the best hash both ends keep (and by reading where there is none).
        ok(&s.skyx(&["check", &src, &dst, "--download"], &[]));
        if kind == Kind::S3 {
            let head = s3_head(&format!("{}/index.html", dst.trim_start_matches("s3://")));
            assert_eq!(head["ContentType"], "text/html", "{head}");
            assert_eq!(head["Metadata"]["team"], "data", "{head}");
        }

        // Through agents when asked.
        let again = format!("{dst}-agents");
        let out = ok(&s.skyx(
            &["cp", "-r", &src, &again, "--json", "--server-side", "never"],
            &[],
        ));
        let r = report(&out);
        assert_eq!(r["objects_copied"], 3, "{out}");
        assert_eq!(r["objects_server_side"], 0, "{out}");
        assert!(!r["agents"].as_array().unwrap().is_empty(), "{out}");
    }
}

#[test]
fn server_side_always_refuses_ends_that_cannot_naming_why() {
    let s = Scratch::new("server-side-refused");
    let src = s.root(Kind::S3, "src");
    seed(&s, &src);
    let local = s.dir.join("out");
    for (dst, why) in [
        (
            local.to_str().unwrap().to_string(),
            "different kinds of store",
        ),
        (s.root(Kind::Gcs, "dst"), "different kinds of store"),
    ] {
        let out = s.skyx(&["cp", "-r", &src, &dst, "--server-side", "always"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--server-side always") && stderr.contains(why),
            "{stderr}"
        );
    }
    assert!(!local.exists(), "nothing written");
}
