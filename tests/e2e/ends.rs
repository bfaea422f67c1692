//! Each end its own account: named remotes from a config file and `--src-*`/`--dst-*` flags.
//! Two S3 servers with different keys (s3s-fs, which checks signatures), Azurite with two
//! accounts, anonymous reads: the source agent and the sink agent each reach their store with
//! their end's settings, handed over by the gateway.

use std::path::PathBuf;

use crate::stores::{Scratch, env, unique};

/// A config file in the scratch naming the second S3 server and the second Azure account.
fn config_file(s: &Scratch) -> PathBuf {
    let path = s.dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[remotes.other]
type = "s3"
endpoint = "{}"
access_key_id = "{}"
secret_access_key = "{}"

[remotes.second]
type = "azure"
account = "skyxsecond"
connection_string = "{}"
"#,
            env("SKYX_TEST_S3B_ENDPOINT"),
            env("SKYX_TEST_S3B_ACCESS_KEY"),
            env("SKYX_TEST_S3B_SECRET_KEY"),
            env("SKYX_TEST_AZURE_B_CONNECTION_STRING"),
        ),
    )
    .unwrap();
    path
}

/// The stdout of a command that must have succeeded (else its stdout and stderr as the failure).
pub(crate) fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A local directory of a few files, and what `ls -r` prints for them under `prefix`.
fn seed(s: &Scratch) -> (String, Vec<String>) {
    let dir = s.dir.join("data");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for (name, bytes) in [("a.txt", 3usize), ("sub/b.bin", 70_000), ("c", 0)] {
        std::fs::write(dir.join(name), vec![b'x'; bytes]).unwrap();
    }
    (
        dir.display().to_string(),
        vec!["a.txt".into(), "c".into(), "sub/b.bin".into()],
    )
}

/// The keys `skyx ls -r URL` lists, relative to the listed prefix.
fn listed(s: &Scratch, url: &str, config: &str, prefix: &str) -> Vec<String> {
    let out = ok(&s.skyx(&["ls", "-r", url, "--config", config], &[]));
    let mut keys: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|k| k.strip_prefix(prefix).unwrap_or(k).to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_copy_between_two_s3_accounts_uses_each_ends_keys() {
    let s = Scratch::new("ends-s3");
    let config = config_file(&s);
    let config = config.to_str().unwrap();
    let (data, names) = seed(&s);
    // The source in the environment's account, the destination in the other one.
    let src_bucket = unique("src");
    let dst_bucket = unique("dst");
    ok(&s.skyx(&["mb", &format!("s3://{src_bucket}")], &[]));
    ok(&s.skyx(&["cp", "-r", &data, &format!("s3://{src_bucket}/d/")], &[]));
    ok(&s.skyx(
        &["mb", &format!("other:{dst_bucket}"), "--config", config],
        &[],
    ));
    let out = ok(&s.skyx(
        &[
            "cp",
            "-r",
            &format!("s3://{src_bucket}/d/"),
            &format!("other:{dst_bucket}/copy/"),
            "--config",
            config,
            "--json",
        ],
        &[],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["objects_copied"], 3);
    assert_eq!(
        listed(&s, &format!("other:{dst_bucket}"), config, "copy/"),
        names
    );
    // The bucket is in the other account only: the environment's server has no such bucket.
    let out = s.skyx(&["ls", &format!("s3://{dst_bucket}")], &[]);
    assert!(!out.status.success());

    // The other server with the environment's keys: refused before anything is copied.
    let out = s.skyx(
        &[
            "cp",
            "-r",
            &format!("s3://{src_bucket}/d/"),
            &format!("s3://{dst_bucket}/again/"),
            "--dst-endpoint",
            &env("SKYX_TEST_S3B_ENDPOINT"),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert_eq!(
        listed(&s, &format!("other:{dst_bucket}"), config, "copy/"),
        names
    );
}

#[test]
fn a_copy_between_two_azure_accounts_uses_each_ends_credentials() {
    let s = Scratch::new("ends-azure");
    let config = config_file(&s);
    let config = config.to_str().unwrap();
    let (data, names) = seed(&s);
    let container = &unique("c");
    let src = format!("az://devstoreaccount1/{container}");
    ok(&s.skyx(&["mb", &src], &[]));
    ok(&s.skyx(&["cp", "-r", &data, &format!("{src}/d")], &[]));
    ok(&s.skyx(
        &["mb", &format!("second:{container}"), "--config", config],
        &[],
    ));
    ok(&s.skyx(
        &[
            "cp",
            "-r",
            &format!("{src}/d"),
            &format!("second:{container}/copy"),
            "--config",
            config,
        ],
        &[],
    ));
    assert_eq!(
        listed(&s, &format!("second:{container}"), config, "copy/"),
        names
    );
    // Without the remote, the environment's credentials are the first account's only.
    let out = s.skyx(&["ls", &format!("az://skyxsecond/{container}")], &[]);
    assert!(!out.status.success());
}

#[test]
fn anonymous_ends_send_unsigned_requests() {
    let s = Scratch::new("ends-anonymous");
    let (data, _) = seed(&s);
    let bucket = unique("pub");
    ok(&s.skyx(&["mb", &format!("s3://{bucket}")], &[]));
    ok(&s.skyx(&["cp", "-r", &data, &format!("s3://{bucket}/d/")], &[]));
    // s3s-fs serves no one without a signature: an unsigned read is refused there, which
    // shows the request went out unsigned.
    let out = s.skyx(
        &[
            "cp",
            "-r",
            &format!("s3://{bucket}/d/"),
            s.dir.join("out").to_str().unwrap(),
            "--src-no-sign-request",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Signature is required"), "{stderr}");
    // moto's S3 checks ACLs as S3 does: made public-read, its bucket serves anonymous
    // readers, and the same copy works.
    let public = crate::moto::moto_bucket(&[("d/x.txt", b"public"), ("d/y/z", b"data")]);
    use crate::aws_cli::aws;
    aws(&[
        "s3api",
        "put-bucket-acl",
        "--bucket",
        &public,
        "--acl",
        "public-read",
    ]);
    for key in ["d/x.txt", "d/y/z"] {
        aws(&[
            "s3api",
            "put-object-acl",
            "--bucket",
            &public,
            "--key",
            key,
            "--acl",
            "public-read",
        ]);
    }
    let out_dir = s.dir.join("public");
    let moto = [("AWS_ENDPOINT_URL", env("SKYX_TEST_EC2_ENDPOINT"))];
    let moto: Vec<(&str, &str)> = moto.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ok(&s.skyx(
        &[
            "cp",
            "-r",
            &format!("s3://{public}/d/"),
            out_dir.to_str().unwrap(),
            "--src-no-sign-request",
        ],
        &moto,
    ));
    assert_eq!(std::fs::read(out_dir.join("y/z")).unwrap(), b"data");
}

#[test]
fn per_end_flags_that_do_not_fit_are_refused_naming_the_flag() {
    let s = Scratch::new("ends-bad");
    let src = s.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"f").unwrap();
    let src = src.to_str().unwrap();
    let bad_config = s.dir.join("bad.toml");
    std::fs::write(
        &bad_config,
        "[remotes.x]\ntype = \"s3\"\nendpont = \"http://a\"\n",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--dst-profile".into(), "nope-no-such-profile".into()],
            "--dst-profile nope-no-such-profile: no such profile",
        ),
        (
            vec!["--src-requester-pays".into()],
            "--src-requester-pays is for S3 ends",
        ),
        (
            vec!["--dst-endpoint".into(), "not a url".into()],
            "--dst-endpoint not a url",
        ),
        (
            vec!["--config".into(), bad_config.display().to_string()],
            "endpont",
        ),
        (
            vec![
                "--config".into(),
                s.dir.join("missing.toml").display().to_string(),
            ],
            "missing.toml",
        ),
    ];
    for (flags, says) in cases {
        let dst = format!("s3://{}/x/", unique("never"));
        let mut args = vec!["cp", "-r", src, &dst];
        args.extend(flags.iter().map(String::as_str));
        let out = s.skyx(&args, &[("AWS_CONFIG_FILE", "/dev/null")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
    // A remote that is not configured is not taken for a local path.
    let out = s.skyx(&["cp", "-r", src, "nosuchremote:bkt/x"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no remote named"), "{stderr}");
    assert!(!std::path::Path::new("nosuchremote:bkt").exists());
}
