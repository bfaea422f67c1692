//! `skyx mb URL` and `skyx ls URL`: the store chores a copy needs around it.

use anyhow::{Context, Result};
use clap::Args;
use futures::TryStreamExt;
use skyx_store::{ObjectUrl, StoreConfig};

use crate::error::BadInput;
use crate::units::format_bytes;

#[derive(Debug, Args)]
pub struct MbArgs {
    /// The bucket or container to create: s3://bucket, gs://bucket, az://account/container.
    pub url: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// What to list: a bucket, a prefix, or a local directory.
    pub url: String,
    /// Everything below the prefix, not just one level.
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

pub fn mb(args: &MbArgs) -> Result<()> {
    let url = ObjectUrl::parse(&args.url).map_err(|e| BadInput(e.to_string()))?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = skyx_store::open(&url, &StoreConfig::from_env())
            .await
            .with_context(|| format!("opening {}", args.url))?;
        store.create_bucket().await?;
        println!("{}", url.location);
        Ok(())
    })
}

pub fn ls(args: &LsArgs) -> Result<()> {
    let url = ObjectUrl::parse(&args.url).map_err(|e| BadInput(e.to_string()))?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = skyx_store::open(&url, &StoreConfig::from_env())
            .await
            .with_context(|| format!("opening {}", args.url))?;
        let base = url.key.trim_end_matches('/');
        let prefix = if base.is_empty() {
            String::new()
        } else {
            format!("{base}/")
        };
        if args.recursive {
            let mut listing = store.list(&prefix);
            while let Some(o) = listing.try_next().await? {
                println!("{:>12}  {}", format_bytes(o.size as f64), o.key);
            }
        } else {
            let level = store.list_with_delimiter(&prefix).await?;
            for p in level.common_prefixes {
                println!("{:>12}  {p}", "DIR");
            }
            for o in level.objects {
                println!("{:>12}  {}", format_bytes(o.size as f64), o.key);
            }
        }
        Ok(())
    })
}
