//! Read and write throughput of every store backend against the local test servers, and peak
//! memory while streaming a large object through multipart.
//!
//! Needs the servers: `bash bench/run-stores.sh` starts them, runs this, and stops them.
//! Usage: store_throughput [--size-mib N] [--part-mib N] [--concurrency N] [--out FILE]
//! Writes a Markdown table (machine, command, figures) to --out (default: stdout only).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use skyx_store::{ObjectStore, ObjectStoreExt, RetryPolicy, UploadOptions};

const MIB: u64 = 1024 * 1024;

struct Args {
    size_mib: u64,
    part_mib: u64,
    concurrency: usize,
    out: Option<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        size_mib: 1024,
        part_mib: 16,
        concurrency: 4,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--size-mib" => a.size_mib = value()?.parse()?,
            "--part-mib" => a.part_mib = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--out" => a.out = Some(value()?),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} not set: run bench/run-stores.sh"))
}

/// Peak resident set size of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// 1 MiB chunks of incompressible bytes, generated on the fly (nothing held in memory).
fn data(size: u64) -> impl futures::Stream<Item = skyx_store::Result<Bytes>> + Send + Unpin {
    let n = size.div_ceil(MIB);
    stream::iter((0..n).map(move |i| {
        let len = MIB.min(size - i * MIB) as usize;
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(len);
        Ok(Bytes::from(v))
    }))
}

struct Row {
    backend: &'static str,
    write_mb_s: f64,
    read_mb_s: f64,
    rss_after_write: f64,
}

async fn measure(
    backend: &'static str,
    store: Arc<dyn ObjectStore>,
    key: &str,
    a: &Args,
) -> Result<Row> {
    let size = a.size_mib * MIB;
    let t = Instant::now();
    let opts = UploadOptions {
        part_size: a.part_mib * MIB,
        concurrency: a.concurrency,
    };
    store.upload(key, data(size), opts).await?;
    let write = size as f64 / 1e6 / t.elapsed().as_secs_f64();
    let rss_after_write = peak_rss_mib();
    // Read back with `concurrency` ranged reads of one part each, as the agents do.
    let t = Instant::now();
    let part = a.part_mib * MIB;
    let n = size.div_ceil(part);
    let read: u64 = stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let r = i * part..((i + 1) * part).min(size);
                let mut s = store.get_range(key, r, None).await?;
                let mut got = 0u64;
                while let Some(c) = s.try_next().await? {
                    got += c.len() as u64;
                }
                Ok::<_, skyx_store::StoreError>(got)
            }
        })
        .buffer_unordered(a.concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    anyhow::ensure!(read == size, "{backend}: read {read} of {size} bytes");
    let read_mb_s = size as f64 / 1e6 / t.elapsed().as_secs_f64();
    store.delete(key).await?;
    Ok(Row {
        backend,
        write_mb_s: write,
        read_mb_s,
        rss_after_write,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let retry = RetryPolicy::default();
    let mut rows = Vec::new();

    let dir = tempdir()?;
    let local: Arc<dyn ObjectStore> = Arc::new(skyx_store::local::LocalStore::new(retry.clone()));
    let local_key = format!("{}/bench.bin", dir.trim_start_matches('/'));
    rows.push(measure("local", local, &local_key, &a).await?);

    let s3cfg = skyx_store::s3::S3Config {
        endpoint: Some(env("SKYX_TEST_S3_ENDPOINT")?),
        region: Some("us-east-1".into()),
        static_credentials: Some((
            env("SKYX_TEST_S3_ACCESS_KEY")?,
            env("SKYX_TEST_S3_SECRET_KEY")?,
        )),
        profile: None,
        force_path_style: true,
        ..Default::default()
    };
    let bucket = "skyx-bench";
    let sdk = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(env("SKYX_TEST_S3_ENDPOINT")?)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                env("SKYX_TEST_S3_ACCESS_KEY")?,
                env("SKYX_TEST_S3_SECRET_KEY")?,
                None,
                None,
                "bench",
            ))
            .build(),
    );
    // Already existing from an earlier run is fine.
    let _ = sdk.create_bucket().bucket(bucket).send().await;
    let s3: Arc<dyn ObjectStore> =
        Arc::new(skyx_store::s3::S3Store::new(bucket, &s3cfg, retry.clone()).await?);
    rows.push(measure("s3 (s3s-fs)", s3, "bench.bin", &a).await?);

    let cs = env("SKYX_TEST_AZURE_CONNECTION_STRING")?;
    let az_cfg = skyx_store::azure::AzureConfig {
        connection_string: Some(cs.clone()),
        ..Default::default()
    };
    let key = cs
        .split(';')
        .find_map(|p| p.strip_prefix("AccountKey="))
        .context("AccountKey")?
        .to_string();
    let endpoint = cs
        .split(';')
        .find_map(|p| p.strip_prefix("BlobEndpoint="))
        .context("BlobEndpoint")?
        .to_string();
    let sas = skyx_store::azure::account_sas(
        "devstoreaccount1",
        &key,
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    )
    .map_err(anyhow::Error::msg)?;
    let _ = azure_storage_blob::BlobContainerClient::new(
        url::Url::parse(&format!("{endpoint}/skyx-bench?{sas}"))?,
        None,
        None,
    )?
    .create(None)
    .await;
    let az: Arc<dyn ObjectStore> = Arc::new(skyx_store::azure::AzureStore::new(
        "devstoreaccount1",
        "skyx-bench",
        &az_cfg,
        retry.clone(),
    )?);
    rows.push(measure("azure (Azurite)", az, "bench.bin", &a).await?);

    let gcs_endpoint = env("SKYX_TEST_GCS_ENDPOINT")?;
    {
        use gcloud_storage::client::{Client, ClientConfig};
        use gcloud_storage::http::buckets::insert::{InsertBucketParam, InsertBucketRequest};
        let c = Client::new(
            ClientConfig {
                storage_endpoint: gcs_endpoint.clone(),
                ..Default::default()
            }
            .anonymous(),
        );
        let _ = c
            .insert_bucket(&InsertBucketRequest {
                name: "skyx-bench".into(),
                param: InsertBucketParam {
                    project: "skyx".into(),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await;
    }
    let gcs: Arc<dyn ObjectStore> = Arc::new(
        skyx_store::gcs::GcsStore::new(
            "skyx-bench",
            &skyx_store::gcs::GcsConfig {
                endpoint: Some(gcs_endpoint),
                project: Some("skyx-bench".into()),
                anonymous: true,
                ..Default::default()
            },
            retry,
        )
        .await?,
    );
    rows.push(measure("gcs (gcp-storage-emulator)", gcs, "bench.bin", &a).await?);
    let _ = std::fs::remove_dir_all(&dir);

    let mut out = format!(
        "Object of {} MiB, parts of {} MiB, {} in flight (memory bound ≈ part × (in flight + 1) = {} MiB).\n\n\
         | backend | write MB/s | read MB/s | peak RSS of the process after its upload (MiB) |\n|---|---|---|---|\n",
        a.size_mib,
        a.part_mib,
        a.concurrency,
        a.part_mib * (a.concurrency as u64 + 1)
    );
    for r in &rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} |\n",
            r.backend, r.write_mb_s, r.read_mb_s, r.rss_after_write
        ));
    }
    print!("{out}");
    if let Some(path) = &a.out {
        std::fs::write(path, &out)?;
    }
    Ok(())
}

fn tempdir() -> Result<String> {
    let dir = std::env::temp_dir().join(format!("skyx-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.to_string_lossy().into_owned())
}
