//! `skyx check SRC DST`: whether two trees hold the same objects (sizes, then the best common
//! checksum, or the bytes themselves with `--download`), as `rclone check` reports it.

use anyhow::{Context, Result};
use clap::Args;
use skyx_gateway::{CheckOptions, Outcome, check};
use skyx_store::StoreConfig;

use crate::args::ends::{EndArgs, Side, resolve};
use crate::args::select::SelectArgs;
use crate::cmd::transfer::load_remotes;
use crate::error::TreesDiffer;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The source tree: s3://, gs://, az://, REMOTE:path or a local path.
    pub src: String,
    /// The tree to compare with it.
    pub dst: String,
    /// Compare the bytes, reading both ends (needs no common checksum; costs a full read).
    #[arg(long)]
    pub download: bool,
    /// Only check that the source's objects are at the destination; ignore extra ones there.
    #[arg(long)]
    pub one_way: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub ends: EndArgs,
}

pub fn run(args: &CheckArgs) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

async fn run_async(args: &CheckArgs) -> Result<()> {
    let remotes = load_remotes(args.ends.config.as_deref())?;
    let env = |_: &skyx_store::ObjectUrl| Ok(StoreConfig::from_env());
    let src = resolve(&args.src, Side::Src, &args.ends, &remotes, env)?;
    let dst = resolve(&args.dst, Side::Dst, &args.ends, &remotes, env)?;
    let src_store = skyx_store::open(&src.url, &src.settings)
        .await
        .with_context(|| format!("opening {}", args.src))?;
    let dst_store = skyx_store::open(&dst.url, &dst.settings)
        .await
        .with_context(|| format!("opening {}", args.dst))?;
    let filter = args.select.object_filter(std::time::SystemTime::now())?;
    let options = CheckOptions {
        download: args.download,
        one_way: args.one_way,
    };
    let report = check(
        src_store.as_ref(),
        &src.url,
        dst_store.as_ref(),
        &dst.url,
        &filter,
        options,
    )
    .await?;
    let counts = report.counts();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["counts"] = serde_json::to_value(&counts)?;
        v["match"] = report.matches().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        // rclone's markers: `*` differ, `-` only in the source, `+` only at the destination,
        // `?` not comparable, `!` error.
        for (key, outcome) in &report.objects {
            let key = key.escape_debug();
            match outcome {
                Outcome::Identical { .. } => {}
                Outcome::Differ { why } => println!("* {key}: {why}"),
                Outcome::MissingAtDestination => println!("- {key}: not at the destination"),
                Outcome::ExtraAtDestination => println!("+ {key}: only at the destination"),
                Outcome::NotComparable { why } => println!("? {key}: {why}"),
                Outcome::Error { why } => println!("! {key}: {why}"),
            }
        }
        for s in &report.skipped {
            println!("! {}: {}", s.src_key.escape_debug(), s.why);
        }
        let summary: Vec<String> = counts
            .iter()
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect();
        println!(
            "{}: {}",
            if report.matches() {
                "Same"
            } else {
                "Different"
            },
            if summary.is_empty() {
                "no objects".to_string()
            } else {
                summary.join(", ")
            }
        );
    }
    if report.matches() {
        Ok(())
    } else {
        let total = report.objects.len() + report.skipped.len();
        let differ = total - counts.get("identical").copied().unwrap_or(0);
        Err(TreesDiffer { differ, total }.into())
    }
}
