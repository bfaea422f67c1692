//! `skyx mb URL` and `skyx ls URL`: the store chores a copy needs around it.

use anyhow::{Context, Result};
use clap::Args;
use futures::TryStreamExt;
use std::path::{Path, PathBuf};

use skyx_store::StoreConfig;

use crate::args::ends::{End, EndArgs, Side, resolve};
use crate::cmd::transfer::load_remotes;
use crate::units::format_bytes;

#[derive(Debug, Args)]
pub struct MbArgs {
    /// The bucket or container to create: s3://bucket, gs://bucket, az://account/container,
    /// or REMOTE:bucket.
    pub url: String,
    /// The config file with named remotes (see `skyx cp --help`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// What to list: a bucket, a prefix, or a local directory.
    pub url: String,
    /// Everything below the prefix, not just one level.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// The config file with named remotes (see `skyx cp --help`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The URL and store settings of `text`, which may name a remote.
fn open_end(text: &str, config: Option<&Path>) -> Result<End> {
    let remotes = load_remotes(config)?;
    resolve(text, Side::Src, &EndArgs::default(), &remotes, |_| {
        Ok(StoreConfig::from_env())
    })
}

pub fn mb(args: &MbArgs) -> Result<()> {
    let End { url, settings, .. } = open_end(&args.url, args.config.as_deref())?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = skyx_store::open(&url, &settings)
            .await
            .with_context(|| format!("opening {}", args.url))?;
        store.create_bucket().await?;
        println!("{}", url.location);
        Ok(())
    })
}

pub fn ls(args: &LsArgs) -> Result<()> {
    let End { url, settings, .. } = open_end(&args.url, args.config.as_deref())?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = skyx_store::open(&url, &settings)
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
