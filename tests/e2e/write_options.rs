//! How the destination stores what a copy writes, on moto's S3 server (which keeps and
//! reports storage classes and SSE settings as S3 does; s3s-fs ignores them): every object of a
//! copy, whole or multipart, and every server-side copy, lands with the class and encryption
//! asked for; options that do not fit the destination are refused naming the flag, with nothing
//! written; a source object in an archive class fails by name, saying why, and the rest arrive.

use crate::aws_cli::aws;
use crate::moto::{moto_bucket, moto_env};
use crate::stores::{Kind, Scratch};

fn head(bucket: &str, key: &str) -> serde_json::Value {
    let out = aws(&["s3api", "head-object", "--bucket", bucket, "--key", key]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn with_moto<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn storage_class_and_kms_encryption_reach_every_object_written() {
    let s = Scratch::new("write-options");
    let dir = s.dir.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("small.txt"), b"small").unwrap();
    std::fs::write(dir.join("big.bin"), vec![3u8; 20 << 20]).unwrap();
    let bucket = moto_bucket(&[]);
    let env = moto_env();
    let env = with_moto(&env);
    let out = s.skyx(
        &[
            "cp",
            "-r",
            dir.to_str().unwrap(),
            &format!("s3://{bucket}/w/"),
            "--storage-class",
            "standard_ia",
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            "alias/skyx-test",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in ["w/small.txt", "w/big.bin"] {
        let h = head(&bucket, key);
        assert_eq!(h["StorageClass"], "STANDARD_IA", "{key}: {h}");
        assert_eq!(h["ServerSideEncryption"], "aws:kms", "{key}: {h}");
        assert!(
            h["SSEKMSKeyId"]
                .as_str()
                .unwrap_or("")
                .contains("skyx-test"),
            "{key}: {h}"
        );
    }
    // A server-side copy takes the options too.
    let out = s.skyx(
        &[
            "cp",
            "-r",
            &format!("s3://{bucket}/w/"),
            &format!("s3://{bucket}/again/"),
            "--storage-class",
            "ONEZONE_IA",
            "--sse",
            "AES256",
            "--json",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["objects_server_side"], 2, "{r}");
    for key in ["again/small.txt", "again/big.bin"] {
        let h = head(&bucket, key);
        assert_eq!(h["StorageClass"], "ONEZONE_IA", "{key}: {h}");
        assert_eq!(h["ServerSideEncryption"], "AES256", "{key}: {h}");
    }
}

#[test]
fn write_options_that_do_not_fit_the_destination_are_refused_naming_the_flag() {
    let s = Scratch::new("write-refused");
    let dir = s.dir.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), b"x").unwrap();
    let src = dir.to_str().unwrap();
    let local = s.dir.join("out");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            s.root(Kind::S3, "a"),
            vec!["--storage-class", "NEARLINE"],
            "--storage-class NEARLINE: \"NEARLINE\" is not a storage class of S3",
        ),
        (
            s.root(Kind::Azure, "b"),
            vec!["--sse-kms-key-id", "k"],
            "--sse-kms-key-id: Azure does not take a KMS key",
        ),
        (
            local.display().to_string(),
            vec!["--storage-class", "STANDARD"],
            "a local destination has no storage classes",
        ),
        (
            s.root(Kind::Gcs, "c"),
            vec!["--sse", "aws:kms"],
            "needs the KMS key's full name",
        ),
        (
            s.root(Kind::S3, "d"),
            vec!["--sse", "AES128"],
            "--sse AES128: expected AES256 or aws:kms",
        ),
        (
            s.root(Kind::S3, "e"),
            vec!["--encryption-scope", "scope"],
            "--encryption-scope: S3 does not take an encryption scope",
        ),
        (
            s.root(Kind::Azure, "f"),
            vec!["--storage-class", "Glacier"],
            "one of: Hot, Cool, Cold, Archive",
        ),
    ];
    for (dst, flags, want) in cases {
        let mut args = vec!["cp", "-r", src, &dst];
        args.extend(flags.iter().copied());
        let out = s.skyx(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
        if !dst.starts_with('/') {
            let listed = s.skyx(&["ls", "-r", &dst], &[]);
            assert!(
                String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
                "{dst}"
            );
        }
    }
    assert!(!local.exists(), "nothing written");
}

#[test]
fn an_archived_source_object_fails_by_name_and_the_rest_arrive() {
    let s = Scratch::new("archived");
    let bucket = moto_bucket(&[("a/ok.txt", b"fine")]);
    let body = s.dir.join("cold");
    std::fs::write(&body, b"frozen").unwrap();
    aws(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "a/cold.txt",
        "--storage-class",
        "GLACIER",
        "--body",
        body.to_str().unwrap(),
    ]);
    let out_dir = s.dir.join("out");
    let env = moto_env();
    let out = s.skyx(
        &[
            "cp",
            "-r",
            &format!("s3://{bucket}/a/"),
            out_dir.to_str().unwrap(),
            "--json",
        ],
        &with_moto(&env),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let failed = r["objects_failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{r}");
    assert_eq!(failed[0]["key"], "a/cold.txt");
    let why = failed[0]["why"].as_str().unwrap();
    assert!(why.contains("archive") && why.contains("restore"), "{why}");
    assert_eq!(std::fs::read(out_dir.join("ok.txt")).unwrap(), b"fine");
}
