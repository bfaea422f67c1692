//! moto's S3 server as a store for the tests that need keys kept exactly as given (`..`, `//`,
//! markers, any character): s3s-fs, backed by a file system, cannot hold them.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use skyx_store::{ObjectUrl, StoreConfig};

use crate::stores::{env, runtime, unique};

/// The environment that points `skyx`'s S3 ends at moto (which takes any credentials).
pub fn moto_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", env("SKYX_TEST_EC2_ENDPOINT")),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
    ]
}

fn moto_config() -> StoreConfig {
    let mut config = StoreConfig::default();
    config.s3.endpoint = Some(env("SKYX_TEST_EC2_ENDPOINT"));
    config.s3.region = Some("us-east-1".into());
    config.s3.static_credentials = Some(("testing".into(), "testing".into()));
    config.s3.force_path_style = true;
    config
}

/// The keys under `prefix` in the moto bucket `bucket`, sorted.
pub fn moto_keys(bucket: &str, prefix: &str) -> Vec<String> {
    runtime().block_on(async {
        let url = ObjectUrl::parse(&format!("s3://{bucket}")).unwrap();
        let store = skyx_store::open(&url, &moto_config()).await.unwrap();
        let mut keys: Vec<String> = skyx_store::list_all(store.as_ref(), prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        keys.sort();
        keys
    })
}

/// A new moto bucket holding `objects` (key, bytes), as a store would serve them.
pub fn moto_bucket(objects: &[(&str, &[u8])]) -> String {
    let bucket = unique("moto");
    let config = moto_config();
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
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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
