//! Object properties carried across every store pair, read back by a client users know: the
//! AWS CLI writes objects with every system property and user metadata to moto's S3 (which
//! keeps them all), skyx copies them S3 → Azure → GCS → S3, and the AWS CLI reads them back.
//! Also: a static site from a local directory gets its Content-Types; `--content-type`,
//! `--metadata` and `--no-metadata`; a local destination gets the source's mtime.

use std::path::Path;

use crate::aws_cli::aws;
use crate::moto::moto_env;
use crate::stores::{Scratch, unique};

fn skyx_ok(s: &Scratch, args: &[&str]) -> String {
    let moto = moto_env();
    let moto: Vec<(&str, &str)> = moto.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = args.to_vec();
    if matches!(args.first(), Some(&"cp" | &"sync")) {
        all.push("--no-progress");
    }
    let out = s.skyx(&all, &moto);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "skyx {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `aws s3api head-object`, as JSON.
fn head(bucket: &str, key: &str) -> serde_json::Value {
    let out = aws(&["s3api", "head-object", "--bucket", bucket, "--key", key]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "head-object {bucket}/{key}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The fields of a head-object answer a copy must keep.
fn properties(v: &serde_json::Value, with_expires: bool) -> serde_json::Value {
    let mut metadata = v["Metadata"].clone();
    // skyx adds the source's modification time; the rest must be what the AWS CLI wrote.
    if let Some(m) = metadata.as_object_mut() {
        m.remove("mtime");
    }
    serde_json::json!({
        "ContentType": v["ContentType"],
        "ContentEncoding": v["ContentEncoding"],
        "ContentLanguage": v["ContentLanguage"],
        "ContentDisposition": v["ContentDisposition"],
        "CacheControl": v["CacheControl"],
        "Expires": if with_expires { v["ExpiresString"].clone() } else { serde_json::Value::Null },
        "Metadata": metadata,
        "ContentLength": v["ContentLength"],
    })
}

fn new_bucket() -> String {
    let bucket = unique("meta");
    aws(&["s3", "mb", &format!("s3://{bucket}")]);
    bucket
}

#[test]
fn properties_written_by_the_aws_cli_survive_azure_and_gcs_and_come_back() {
    let s = Scratch::new("metadata-clouds");
    let src = new_bucket();
    let back = new_bucket();
    let direct = new_bucket();
    // A small object (one put) and one big enough to go in parts at every destination.
    let small = s.dir.join("page.html");
    std::fs::write(&small, b"<h1>hello</h1>").unwrap();
    let big = s.dir.join("video.bin");
    std::fs::write(&big, vec![7u8; 20 * 1024 * 1024]).unwrap();
    for (file, key) in [(&small, "site/page.html"), (&big, "site/media/video.bin")] {
        aws(&[
            "s3",
            "cp",
            file.to_str().unwrap(),
            &format!("s3://{src}/{key}"),
            "--content-type",
            "text/html; charset=utf-8",
            "--content-encoding",
            "identity",
            "--content-language",
            "en",
            "--content-disposition",
            "inline; filename=\"x.html\"",
            "--cache-control",
            "public, max-age=60",
            "--expires",
            "Thu, 01 Jan 2037 00:00:00 GMT",
            "--metadata",
            "owner=zoe,team=data-eng,build=42",
        ]);
    }
    let container = unique("meta");
    let az = format!("az://devstoreaccount1/{container}");
    let gcs = format!("gs://{}", unique("meta"));
    skyx_ok(&s, &["mb", &az]);
    skyx_ok(&s, &["mb", &gcs]);
    let chunk = ["--chunk-size", "8MiB"];
    for (from, to) in [
        (format!("s3://{src}/site/"), format!("{az}/site/")),
        (format!("{az}/site/"), format!("{gcs}/site/")),
        (format!("{gcs}/site/"), format!("s3://{back}/site/")),
        (format!("s3://{src}/site/"), format!("s3://{direct}/site/")),
    ] {
        let mut args = vec!["cp", "-r", from.as_str(), to.as_str()];
        args.extend(chunk);
        skyx_ok(&s, &args);
    }
    for key in ["site/page.html", "site/media/video.bin"] {
        let original = head(&src, key);
        assert_eq!(original["Metadata"]["owner"], "zoe", "{original}");
        // Through Azure and GCS: everything but Expires, which neither has.
        assert_eq!(
            properties(&head(&back, key), false),
            properties(&original, false),
            "{key} after S3 -> Azure -> GCS -> S3"
        );
        // S3 to S3: everything.
        assert_eq!(
            properties(&head(&direct, key), true),
            properties(&original, true),
            "{key} after S3 -> S3"
        );
        // The source's modification time rode along as rclone's `mtime`.
        assert!(head(&back, key)["Metadata"]["mtime"].is_string());
    }
}

#[test]
fn a_static_site_gets_its_content_types_and_overrides_apply() {
    let s = Scratch::new("metadata-site");
    let site = s.dir.join("site");
    std::fs::create_dir_all(site.join("assets")).unwrap();
    for (name, body) in [
        ("index.html", &b"<h1>home</h1>"[..]),
        ("assets/style.css", b"h1{}"),
        ("assets/app.js", b"1"),
        ("assets/logo.png", b"\x89PNG"),
        ("README", b"plain"),
    ] {
        std::fs::write(site.join(name), body).unwrap();
    }
    let bucket = new_bucket();
    skyx_ok(
        &s,
        &[
            "cp",
            "-r",
            site.to_str().unwrap(),
            &format!("s3://{bucket}/www/"),
        ],
    );
    let content_type = |key: &str| head(&bucket, key)["ContentType"].clone();
    assert_eq!(content_type("www/index.html"), "text/html");
    assert_eq!(content_type("www/assets/style.css"), "text/css");
    assert!(
        content_type("www/assets/app.js")
            .as_str()
            .is_some_and(|t| t.ends_with("/javascript")),
        "{}",
        content_type("www/assets/app.js")
    );
    assert_eq!(content_type("www/assets/logo.png"), "image/png");

    // Overrides: one Content-Type for all, metadata added.
    skyx_ok(
        &s,
        &[
            "cp",
            "-r",
            site.to_str().unwrap(),
            &format!("s3://{bucket}/forced/"),
            "--content-type",
            "text/plain",
            "--metadata",
            "release=2026.11",
        ],
    );
    let forced = head(&bucket, "forced/index.html");
    assert_eq!(forced["ContentType"], "text/plain");
    assert_eq!(forced["Metadata"]["release"], "2026.11");

    // --no-metadata: S3 to S3 without the source's properties.
    skyx_ok(
        &s,
        &[
            "cp",
            "-r",
            &format!("s3://{bucket}/forced/"),
            &format!("s3://{bucket}/bare/"),
            "--no-metadata",
        ],
    );
    let bare = head(&bucket, "bare/index.html");
    assert_ne!(bare["ContentType"], "text/plain", "{bare}");
    assert!(bare["Metadata"].get("release").is_none(), "{bare}");

    // Back to a local directory: each file gets its source's modification time.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    let file = std::fs::File::options()
        .write(true)
        .open(site.join("README"))
        .unwrap();
    file.set_modified(old).unwrap();
    drop(file);
    skyx_ok(
        &s,
        &[
            "cp",
            "-r",
            site.to_str().unwrap(),
            &format!("s3://{bucket}/dated/"),
        ],
    );
    let out = s.dir.join("out");
    skyx_ok(
        &s,
        &[
            "cp",
            "-r",
            &format!("s3://{bucket}/dated/"),
            out.to_str().unwrap(),
        ],
    );
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    assert_eq!(mtime(&out.join("README")), old);
}
