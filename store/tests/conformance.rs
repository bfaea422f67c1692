//! One conformance suite, run against every backend: the local filesystem and the real local
//! servers `deploy/test-servers.sh start` brings up (S3: s3s-fs). A backend whose server is not
//! configured fails its test; it is never skipped.
//!
//! Checks: put/get of empty, 1-byte and small objects; head sizes and checksums; ranged reads;
//! listing past 1,000 keys (pagination) and with a delimiter; a streamed multipart upload of
//! several hundred MiB read back by streaming; aborted uploads leave nothing; delete; copy;
//! properties (system properties, user metadata, mtime) written by a put and by a multipart
//! upload read back as the store keeps them (`kept`); and errors (missing key, missing bucket,
//! bad credentials) with the right kind.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use md5::{Digest, Md5};
use skyx_store::s3::{S3Config, S3Store};
use skyx_store::{
    ErrorKind, ObjectStore, ObjectStoreExt, Properties, RetryPolicy, StoreError, StoreLocation,
    UploadOptions, list_all, local::LocalStore,
};

#[path = "conformance/server_side.rs"]
mod server_side;

const MIB: usize = 1024 * 1024;

/// Deterministic pseudo-random bytes (xorshift), so large objects need no memory to check.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the conformance suite needs the local test servers. Run \
             `bash deploy/test-servers.sh start && source deploy/.servers/env` (the README's test \
             command does this)"
        )
    })
}

fn kind_of(e: &StoreError) -> ErrorKind {
    e.kind
}

/// The suite. `root` is a key prefix private to this run.
async fn conformance(store: Arc<dyn ObjectStore>, root: &str) {
    let key = |name: &str| format!("{root}/{name}");

    // put / get / head: empty, one byte, small, a whole chunk past Azure's 4 MiB partitions.
    for (name, data) in [
        ("empty", Vec::new()),
        ("one", vec![0x5a]),
        ("small", pseudo_random(1, 100_000)),
        ("whole-chunk", pseudo_random(2, 6 << 20)),
    ] {
        let written = store
            .put_with(
                &key(name),
                Bytes::from(data.clone()),
                &Properties::default(),
            )
            .await
            .unwrap();
        // What the put's answer says the store holds is what was sent, and a cloud store's
        // answer carries a checksum (the writer's verification needs no request of its own).
        assert_eq!(written.size, data.len() as u64, "{name}: put answered size");
        if let Some(crc) = written.crc32c {
            assert_eq!(crc, crc32c::crc32c(&data), "{name}: put answered CRC32C");
        }
        if let Some(md5) = written.md5 {
            assert_eq!(
                md5,
                <[u8; 16]>::from(Md5::digest(&data)),
                "{name}: put answered MD5"
            );
        }
        let answered = written.crc32c.is_some() || written.md5.is_some();
        match store.location() {
            StoreLocation::Local => assert!(!answered, "{name}: a file answers only its size"),
            _ => assert!(answered, "{name}: the put's answer carries no checksum"),
        }
        let meta = store.head(&key(name)).await.unwrap();
        assert_eq!(meta.size, data.len() as u64, "{name}");
        assert_eq!(meta.key, key(name));
        if let Some(md5) = meta.md5 {
            assert_eq!(
                md5,
                <[u8; 16]>::from(Md5::digest(&data)),
                "{name}: head MD5 differs from content"
            );
        }
        if let Some(crc) = meta.crc32c {
            assert_eq!(crc, crc32c::crc32c(&data), "{name}: head CRC32C differs");
        }
        // A cloud store keeps a content checksum of every whole object, which verification
        // compares with the source's CRC32C (S3: the one written with it; GCS: its own) or
        // MD5 (Azure computes one on Put Blob): never size alone.
        let kept = match store.location() {
            StoreLocation::S3 { .. } | StoreLocation::Gcs { .. } => meta.crc32c.is_some(),
            StoreLocation::Azure { .. } => meta.md5.is_some(),
            StoreLocation::Local => true,
            StoreLocation::Synthetic { .. } => unreachable!("a benchmark device, not under test"),
        };
        assert!(
            kept,
            "{name}: {} keeps no content checksum",
            store.location()
        );
        assert_eq!(
            store.get(&key(name)).await.unwrap(),
            Bytes::from(data),
            "{name}"
        );
    }

    // Ranged reads, including the last byte and a range across the middle.
    let small = pseudo_random(1, 100_000);
    for (a, b) in [
        (0, 1),
        (99_999, 100_000),
        (12_345, 67_890),
        (0, 100_000),
        (500, 500),
    ] {
        let got = store
            .get_range_bytes(&key("small"), a..b, None)
            .await
            .unwrap();
        assert_eq!(&got[..], &small[a as usize..b as usize], "range {a}..{b}");
    }
    let e = store
        .get_range_bytes(&key("small"), 99_000..200_000, None)
        .await
        .unwrap_err();
    assert!(
        matches!(kind_of(&e), ErrorKind::InvalidInput | ErrorKind::Other),
        "range past the end: {e}"
    );

    // A read pinned to a version: served while the object is that version, refused as
    // Changed once it was overwritten (never the new bytes under the old version's name).
    let pinned = key("pinned");
    store
        .put(&pinned, Bytes::from(pseudo_random(9, 70_000)))
        .await
        .unwrap();
    let v1 = store.head(&pinned).await.unwrap().etag;
    let v1 = v1.unwrap_or_else(|| panic!("{}: a head names no version", store.location()));
    let first = store
        .get_range_bytes(&pinned, 0..1000, Some(&v1))
        .await
        .unwrap();
    assert_eq!(&first[..], &pseudo_random(9, 70_000)[..1000]);
    // A local file's identity includes its change time: make sure the clock moved.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .put(&pinned, Bytes::from(pseudo_random(10, 70_000)))
        .await
        .unwrap();
    let e = store
        .get_range_bytes(&pinned, 1000..2000, Some(&v1))
        .await
        .unwrap_err();
    assert_eq!(
        kind_of(&e),
        ErrorKind::Changed,
        "pinned read of a rewritten object: {e}"
    );
    let v2 = store.head(&pinned).await.unwrap().etag.unwrap();
    assert_ne!(v1, v2, "{}: a rewrite keeps the version", store.location());
    let now = store
        .get_range_bytes(&pinned, 0..1000, Some(&v2))
        .await
        .unwrap();
    assert_eq!(&now[..], &pseudo_random(10, 70_000)[..1000]);

    // Listing: more than 1,000 keys forces pagination on S3-like stores.
    let many = format!("{root}/many");
    stream::iter(0..1100)
        .map(|i| {
            let store = store.clone();
            let k = format!("{many}/obj-{i:05}");
            async move { store.put(&k, Bytes::from(format!("{i}"))).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let listed = list_all(store.as_ref(), &format!("{many}/")).await.unwrap();
    assert_eq!(listed.len(), 1100, "recursive listing across pages");
    let mut keys: Vec<_> = listed.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1100, "no duplicates across pages");
    assert!(listed.iter().all(|m| m.size >= 1));
    let only = list_all(store.as_ref(), &format!("{many}/obj-001"))
        .await
        .unwrap();
    assert_eq!(only.len(), 100, "prefix filter obj-001xx");

    store
        .put(&key("dir/a/x"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    store
        .put(&key("dir/b/y"), Bytes::from_static(b"y"))
        .await
        .unwrap();
    store
        .put(&key("dir/top"), Bytes::from_static(b"t"))
        .await
        .unwrap();
    let level = store.list_with_delimiter(&key("dir/")).await.unwrap();
    assert_eq!(
        level
            .objects
            .iter()
            .map(|o| o.key.clone())
            .collect::<Vec<_>>(),
        vec![key("dir/top")]
    );
    let mut prefixes = level.common_prefixes.clone();
    prefixes.sort();
    assert_eq!(prefixes, vec![key("dir/a/"), key("dir/b/")]);

    // A streamed multipart upload of several hundred MiB, checked by streaming it back.
    let big_len = 300 * MIB + 12_345;
    let chunks = (0..big_len.div_ceil(MIB)).map(move |i| {
        let len = MIB.min(big_len - i * MIB);
        Ok(Bytes::from(pseudo_random(1000 + i as u64, len)))
    });
    let mut expected = Md5::new();
    for c in chunks.clone() {
        expected.update(c.as_ref().unwrap());
    }
    let expected = expected.finalize();
    let written = store
        .upload(
            &key("big"),
            stream::iter(chunks),
            UploadOptions {
                part_size: 16 * MIB as u64,
                concurrency: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(written, big_len as u64);
    assert_eq!(store.head(&key("big")).await.unwrap().size, big_len as u64);
    let mut got = Md5::new();
    let mut n = 0usize;
    let mut body = store
        .get_range(&key("big"), 0..big_len as u64, None)
        .await
        .unwrap();
    while let Some(chunk) = body.try_next().await.unwrap() {
        n += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(n, big_len);
    assert_eq!(
        got.finalize(),
        expected,
        "multipart object differs from what was streamed in"
    );
    let straddle = store
        .get_range_bytes(
            &key("big"),
            (16 * MIB - 10) as u64..(16 * MIB + 10) as u64,
            None,
        )
        .await
        .unwrap();
    let mut want = pseudo_random(1015, MIB)[MIB - 10..].to_vec();
    want.extend_from_slice(&pseudo_random(1016, 10));
    assert_eq!(&straddle[..], &want[..], "range across a part boundary");

    // An explicitly aborted upload leaves no object.
    let up = store.create_multipart(&key("aborted")).await.unwrap();
    store
        .put_part(&up, 1, Bytes::from(pseudo_random(9, 5 * MIB)))
        .await
        .unwrap();
    store.abort_multipart(&up).await.unwrap();
    assert_eq!(
        kind_of(&store.head(&key("aborted")).await.unwrap_err()),
        ErrorKind::NotFound
    );

    // A failing source stream aborts the upload and leaves no object.
    let failing = stream::iter((0..6).map(|i| {
        if i < 5 {
            Ok(Bytes::from(pseudo_random(i, 4 * MIB)))
        } else {
            Err(StoreError::new(
                ErrorKind::Other,
                "source",
                "get",
                "x",
                "source died",
            ))
        }
    }));
    let e = store
        .upload(
            &key("failed"),
            failing,
            UploadOptions {
                part_size: 5 * MIB as u64,
                concurrency: 2,
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("source died"), "{e}");
    assert_eq!(
        kind_of(&store.head(&key("failed")).await.unwrap_err()),
        ErrorKind::NotFound
    );
    let leftovers = list_all(store.as_ref(), &format!("{root}/failed"))
        .await
        .unwrap();
    assert!(
        leftovers.is_empty(),
        "nothing visible after a failed upload: {leftovers:?}"
    );

    // Properties, through a put and through a multipart upload.
    let props = sample_properties();
    store
        .put_with(
            &key("page.html"),
            Bytes::from_static(b"<h1>hi</h1>"),
            &props,
        )
        .await
        .unwrap();
    let want = kept(&props, store.location(), "page.html");
    assert_eq!(store.properties(&key("page.html")).await.unwrap(), want);
    let up = store
        .create_multipart_with(&key("big.html"), &props)
        .await
        .unwrap();
    let part = store
        .put_part(&up, 1, Bytes::from_static(b"<p>parts</p>"))
        .await
        .unwrap();
    store.complete_multipart(&up, vec![part]).await.unwrap();
    let want = kept(&props, store.location(), "big.html");
    assert_eq!(store.properties(&key("big.html")).await.unwrap(), want);
    // Nothing asked, nothing invented (a local file's type is guessed from its name).
    let bare = store.properties(&key("small")).await.unwrap();
    assert!(
        bare.user.is_empty() && bare.cache_control.is_none(),
        "{bare:?}"
    );

    // Copy and delete.
    store.copy(&key("small"), &key("copied")).await.unwrap();
    assert_eq!(store.get(&key("copied")).await.unwrap(), Bytes::from(small));
    store.delete(&key("copied")).await.unwrap();
    assert_eq!(
        kind_of(&store.head(&key("copied")).await.unwrap_err()),
        ErrorKind::NotFound
    );
    store
        .delete(&key("copied"))
        .await
        .expect("deleting a missing object is not an error");

    // Errors carry the kind, the store, the operation and the key.
    let e = store.get(&key("no-such-key")).await.unwrap_err();
    assert_eq!(kind_of(&e), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no-such-key"), "{e}");

    // Clean up what this run wrote.
    let all = list_all(store.as_ref(), &format!("{root}/")).await.unwrap();
    stream::iter(all)
        .map(|m| {
            let store = store.clone();
            async move { store.delete(&m.key).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert!(
        list_all(store.as_ref(), &format!("{root}/"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every property, a non-ASCII value and a name Azure would refuse among them.
fn sample_properties() -> Properties {
    let mut user = std::collections::BTreeMap::new();
    user.insert("owner".to_string(), "Zoë".to_string());
    user.insert("x-team".to_string(), "data-eng".to_string());
    Properties {
        content_type: Some("text/html; charset=utf-8".into()),
        content_encoding: Some("identity".into()),
        content_language: Some("en".into()),
        content_disposition: Some("inline".into()),
        cache_control: Some("max-age=60".into()),
        expires: Some("Thu, 01 Jan 2037 00:00:00 GMT".into()),
        user,
        modified: Some(
            std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 250_000_000),
        ),
    }
}

/// What a store of `location` gives back of `written` (the mapping rules of
/// `skyx_store::properties`): S3 everything; Azure and GCS no Expires, Azure names as C#
/// identifiers; a local file only its mtime, and a Content-Type guessed from `name`.
fn kept(written: &Properties, location: &StoreLocation, name: &str) -> Properties {
    let mut p = written.clone();
    match location {
        StoreLocation::S3 { .. } => {}
        StoreLocation::Gcs { .. } => p.expires = None,
        StoreLocation::Azure { .. } => {
            p.expires = None;
            p.user = p
                .user
                .iter()
                .map(|(k, v)| (skyx_store::properties::azure_name(k), v.clone()))
                .collect();
        }
        StoreLocation::Local => {
            p = Properties {
                content_type: skyx_store::properties::guess_content_type(name),
                modified: written.modified,
                ..Properties::default()
            }
        }
        StoreLocation::Synthetic { .. } => unreachable!("a benchmark device, not under test"),
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filesystem_conforms() {
    let dir = std::env::temp_dir().join(unique("skyx-store-local"));
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.to_str().unwrap().trim_start_matches('/').to_string();
    let store = LocalStore::new(RetryPolicy::default());
    // Between two paths of this machine, the process copies (and reads back) itself.
    server_side::copies_across_buckets(&store, &store, &root, &sample_properties(), |p| {
        kept(p, store.location(), "x.copy")
    })
    .await;
    conformance(Arc::new(store), &root).await;
    // No hidden staging or temp files are left behind either.
    let left: Vec<_> = walk(&dir);
    assert!(left.is_empty(), "leftovers: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn s3_config(secret: &str) -> S3Config {
    S3Config {
        endpoint: Some(env("SKYX_TEST_S3_ENDPOINT")),
        region: Some("us-east-1".into()),
        static_credentials: Some((env("SKYX_TEST_S3_ACCESS_KEY"), secret.to_string())),
        profile: None,
        force_path_style: true,
        ..S3Config::default()
    }
}

async fn s3_bucket(name: &str) -> String {
    let conf = s3_config(&env("SKYX_TEST_S3_SECRET_KEY"));
    let sdk = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(conf.endpoint.unwrap())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                env("SKYX_TEST_S3_ACCESS_KEY"),
                env("SKYX_TEST_S3_SECRET_KEY"),
                None,
                None,
                "test",
            ))
            .build(),
    );
    let bucket = unique(name).to_lowercase();
    let bucket: String = bucket.chars().take(63).collect();
    sdk.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create test bucket");
    bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_conforms() {
    let bucket = s3_bucket("conf").await;
    let open = |bucket: String| async move {
        S3Store::new(
            &bucket,
            &s3_config(&env("SKYX_TEST_S3_SECRET_KEY")),
            RetryPolicy::default(),
        )
        .await
        .unwrap()
    };
    let store = open(bucket).await;
    conformance(Arc::new(open(s3_bucket("conf").await).await), "run").await;
    // Objects past 5 MiB are copied in parts of 5 MiB (UploadPartCopy).
    let store = store.with_copy_limits(5 * MIB as u64, 5 * MIB as u64);
    let other = open(s3_bucket("other").await).await;
    server_side::copies_across_buckets(&store, &other, "ss", &sample_properties(), |p| {
        kept(p, store.location(), "")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_name_missing_buckets_and_bad_credentials() {
    let cfg = s3_config(&env("SKYX_TEST_S3_SECRET_KEY"));
    // Listing, not put: s3s-fs creates a bucket on put where S3 answers NoSuchBucket.
    let name: String = unique("skyx-missing").chars().take(40).collect();
    let missing = S3Store::new(&name, &cfg, RetryPolicy::never())
        .await
        .unwrap();
    let e = missing.list_with_delimiter("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BucketNotFound, "{e}");
    assert!(e.to_string().contains(&format!("s3://{name}")), "{e}");

    let bucket = s3_bucket("creds").await;
    let wrong = S3Store::new(&bucket, &s3_config("not-the-secret"), RetryPolicy::never())
        .await
        .unwrap();
    let e = wrong.put("k", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    let e = wrong.head("k").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
}

/// The Azurite account from the connection string the test servers script exports.
fn azure_account() -> (String, String, String) {
    azure_account_of(&env("SKYX_TEST_AZURE_CONNECTION_STRING"))
}

fn azure_account_of(cs: &str) -> (String, String, String) {
    let field = |name: &str| {
        cs.split(';')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from the test connection string"))
            .to_string()
    };
    (
        field("AccountName"),
        field("AccountKey"),
        field("BlobEndpoint"),
    )
}

async fn azure_container(name: &str) -> String {
    azure_container_of(&env("SKYX_TEST_AZURE_CONNECTION_STRING"), name).await
}

async fn azure_container_of(cs: &str, name: &str) -> String {
    let (account, key, endpoint) = azure_account_of(cs);
    let container: String = unique(name).to_lowercase().chars().take(63).collect();
    let sas = skyx_store::azure::account_sas(
        &account,
        &key,
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let url = url::Url::parse(&format!("{endpoint}/{container}?{sas}")).unwrap();
    azure_storage_blob::BlobContainerClient::new(url, None, None)
        .unwrap()
        .create(None)
        .await
        .expect("create test container");
    container
}

fn azure_config(key: Option<&str>) -> skyx_store::azure::AzureConfig {
    let cs = env("SKYX_TEST_AZURE_CONNECTION_STRING");
    let cs = match key {
        Some(k) => cs
            .split(';')
            .map(|p| {
                if p.starts_with("AccountKey=") {
                    format!("AccountKey={k}")
                } else {
                    p.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(";"),
        None => cs,
    };
    skyx_store::azure::AzureConfig {
        connection_string: Some(cs),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_conforms() {
    let (account, _, _) = azure_account();
    let container = azure_container("conf").await;
    let store = skyx_store::azure::AzureStore::new(
        &account,
        &container,
        &azure_config(None),
        RetryPolicy::default(),
    )
    .unwrap();
    // The second account of the test servers: a copy signed by the source's own SAS.
    let cs_b = env("SKYX_TEST_AZURE_B_CONNECTION_STRING");
    let (account_b, _, _) = azure_account_of(&cs_b);
    let container_b = azure_container_of(&cs_b, "other").await;
    let config_b = skyx_store::azure::AzureConfig {
        connection_string: Some(cs_b),
        ..Default::default()
    };
    let other = skyx_store::azure::AzureStore::new(
        &account_b,
        &container_b,
        &config_b,
        RetryPolicy::default(),
    )
    .unwrap();
    server_side::copies_across_buckets(&store, &other, "ss", &sample_properties(), |p| {
        kept(p, store.location(), "")
    })
    .await;
    conformance(Arc::new(store), "run").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_errors_name_missing_containers_and_bad_credentials() {
    let (account, _, _) = azure_account();
    let missing = skyx_store::azure::AzureStore::new(
        &account,
        "skyx-no-such-container",
        &azure_config(None),
        RetryPolicy::never(),
    )
    .unwrap();
    let e = missing
        .put("k", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BucketNotFound, "{e}");
    assert!(
        e.to_string()
            .contains("az://devstoreaccount1/skyx-no-such-container"),
        "{e}"
    );

    let container = azure_container("creds").await;
    // A valid base64 key that is not the account's: every request is refused.
    let wrong = skyx_store::azure::AzureStore::new(
        &account,
        &container,
        &azure_config(Some("d3Jvbmcta2V5LXdyb25nLWtleQ==")),
        RetryPolicy::never(),
    )
    .unwrap();
    let e = wrong.put("k", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
}

fn gcs_config() -> skyx_store::gcs::GcsConfig {
    skyx_store::gcs::GcsConfig::from_lookup(&|v| match v {
        "STORAGE_EMULATOR_HOST" => Some(env("SKYX_TEST_GCS_ENDPOINT")),
        "GOOGLE_CLOUD_PROJECT" => Some("skyx-test".into()),
        _ => None,
    })
}

async fn gcs_bucket(name: &str) -> String {
    use gcloud_storage::client::{Client, ClientConfig};
    use gcloud_storage::http::buckets::insert::{InsertBucketParam, InsertBucketRequest};
    let client = Client::new(
        ClientConfig {
            storage_endpoint: env("SKYX_TEST_GCS_ENDPOINT"),
            ..Default::default()
        }
        .anonymous(),
    );
    let bucket: String = unique(name).to_lowercase().chars().take(63).collect();
    client
        .insert_bucket(&InsertBucketRequest {
            name: bucket.clone(),
            param: InsertBucketParam {
                project: "skyx-test".into(),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .expect("create test bucket");
    bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_conforms() {
    let open = |bucket: String| async move {
        skyx_store::gcs::GcsStore::new(&bucket, &gcs_config(), RetryPolicy::default())
            .await
            .unwrap()
    };
    let store = open(gcs_bucket("conf").await).await;
    let other = open(gcs_bucket("other").await).await;
    server_side::copies_across_buckets(&store, &other, "ss", &sample_properties(), |p| {
        kept(p, store.location(), "")
    })
    .await;
    conformance(Arc::new(store), "run").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_composes_more_than_32_parts_in_levels() {
    let bucket = gcs_bucket("compose").await;
    let store = skyx_store::gcs::GcsStore::new(&bucket, &gcs_config(), RetryPolicy::default())
        .await
        .unwrap();
    let parts: Vec<Bytes> = (0..70)
        .map(|i| Bytes::from(pseudo_random(i, 1000 + i as usize)))
        .collect();
    let all: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
    store
        .upload(
            "k",
            stream::iter(parts.into_iter().map(Ok)),
            UploadOptions {
                part_size: 1000,
                concurrency: 8,
            },
        )
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), Bytes::from(all));
    assert!(
        list_all(&store, "")
            .await
            .unwrap()
            .iter()
            .all(|m| m.key == "k"),
        "temporary parts are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_errors_name_missing_buckets() {
    let missing =
        skyx_store::gcs::GcsStore::new("skyx-no-such-bucket", &gcs_config(), RetryPolicy::never())
            .await
            .unwrap();
    let e = missing.list_with_delimiter("").await.unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::BucketNotFound | ErrorKind::NotFound),
        "{e}"
    );
    assert!(e.to_string().contains("gs://skyx-no-such-bucket"), "{e}");
}
