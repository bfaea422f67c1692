//! `skyx sync SRC DST [--delete]`: make the destination prefix hold what the source prefix
//! holds, copying only objects missing or different there.

use anyhow::Result;
use clap::Args;
use skyx_gateway::{
    Compare, RecordedTimes, SyncRules, attach_properties, complete_checksums,
    complete_recorded_times, delete_extraneous, list_destination, plan_sync, settle_markers,
};

use crate::cmd::execute::{Sources, execute};
use crate::cmd::routing::plan_routing;
use crate::cmd::transfer::{
    BadInput, TransferArgs, check_failures, check_skipped, metadata_policy, open_endpoints,
    select_sources, warn_skipped,
};
use crate::render::copy::render_report;
use crate::units::format_bytes;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Source prefix (directory): s3://, gs://, az://, or a local path.
    pub src: String,
    /// Destination prefix.
    pub dst: String,
    /// Also delete destination objects the source does not have (after a fully successful
    /// copy; objects the filters leave out are never deleted).
    #[arg(long)]
    pub delete: bool,
    /// Delete nothing if the sync would delete more than N objects (and say so, exit 1).
    #[arg(long, value_name = "N", requires = "delete")]
    pub max_delete: Option<usize>,
    /// An object is in place when the sizes match (no checksum or time compared).
    #[arg(long, conflicts_with = "checksum")]
    pub size_only: bool,
    /// An object is in place when size and checksum match; an object whose two ends share no
    /// checksum is an error (local files are read to hash them).
    #[arg(long)]
    pub checksum: bool,
    /// Leave objects whose destination is newer than the source.
    #[arg(long)]
    pub update: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

pub fn run(args: &SyncArgs) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

async fn run_async(args: &SyncArgs) -> Result<()> {
    let t = &args.transfer;
    let ends = open_endpoints(t, &args.src, &args.dst).await?;
    let (mut listing, filter) = select_sources(t, &ends, true).await?;
    if args.delete && listing.source_is_object {
        // Mirroring one object would delete everything else under the destination prefix.
        return Err(BadInput(format!(
            "sync --delete needs a prefix (directory) as its source, and {} is a single object \
             (copy one object with skyx cp)",
            ends.src_url
        ))
        .into());
    }
    warn_skipped(&ends.src_url, &listing.skipped);
    let mut existing = list_destination(ends.dst.as_ref(), &ends.dst_url).await?;
    let rules = SyncRules {
        compare: if args.size_only {
            Compare::SizeOnly
        } else if args.checksum {
            Compare::Checksum
        } else {
            Compare::Default
        },
        update: args.update,
        no_clobber: t.select.no_clobber,
    };
    if rules.compare == Compare::Checksum {
        complete_checksums(
            ends.src.as_ref(),
            &mut listing.items,
            ends.dst.as_ref(),
            &mut existing,
        )
        .await?;
    }
    // Without --update or --no-clobber (which decide by the stores' own times, or not at
    // all), the times the destination recorded decide what checksums cannot.
    let recorded = if rules.compare == Compare::Default && !rules.update && !rules.no_clobber {
        complete_recorded_times(
            ends.src.as_ref(),
            &mut listing.items,
            ends.dst.as_ref(),
            &existing,
        )
        .await
    } else {
        RecordedTimes::new()
    };
    let mut plan = plan_sync(
        std::mem::take(&mut listing.items),
        &existing,
        &recorded,
        &ends.dst_url.key,
        &filter,
        &rules,
        args.delete,
    )
    .map_err(|e| BadInput(e.to_string()))?;
    settle_markers(ends.dst.as_ref(), &mut plan).await;
    let volume: u64 = plan.copy.iter().map(|i| i.size).sum();
    if t.dry_run {
        if t.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "copy": plan.copy.iter().map(|i| serde_json::json!({"src": i.src_key, "dst": i.dst_key, "size": i.size})).collect::<Vec<_>>(),
                    "unchanged": plan.unchanged,
                    "delete": plan.delete,
                    "skipped": listing.skipped.iter().map(|s| serde_json::json!({"src": s.src_key, "why": s.why})).collect::<Vec<_>>(),
                }))?
            );
        } else {
            println!(
                "Would copy {} objects ({}), leave {} unchanged, delete {}",
                plan.copy.len(),
                format_bytes(volume as f64),
                plan.unchanged,
                plan.delete.len()
            );
            for i in &plan.copy {
                println!(
                    "  copy   {} -> {}",
                    crate::render::terminal_safe(&i.src_key),
                    crate::render::terminal_safe(&i.dst_key)
                );
            }
            for k in &plan.delete {
                println!("  delete {}", crate::render::terminal_safe(k));
            }
        }
        return check_skipped(&listing.skipped);
    }
    let copied = if plan.copy.is_empty() {
        None
    } else {
        let regions = crate::cmd::routing::infer_regions(t, &ends).await;
        let routing = plan_routing(t, volume, regions, &ends.server_side)?;
        let mut items = plan.copy.clone();
        attach_properties(ends.src.as_ref(), &mut items, &metadata_policy(t)?).await;
        let report = execute(t, &ends, Sources::Listed(items), &routing).await?;
        Some((report, routing))
    };
    // A skipped object is a copy that did not happen: the destination is not a full mirror.
    let copy_failed = !listing.skipped.is_empty()
        || copied
            .as_ref()
            .is_some_and(|(r, _)| !r.objects_failed.is_empty());
    // --max-delete: more deletions than allowed means none at all.
    let too_many = args.max_delete.filter(|&max| plan.delete.len() > max);
    let deletions = delete_extraneous(
        ends.dst.as_ref(),
        &plan.delete,
        !copy_failed && too_many.is_none(),
    )
    .await;
    let deleted = deletions.deleted;
    let delete_errors: Vec<String> = deletions
        .failed
        .iter()
        .map(|(k, why)| format!("{k}: {why}"))
        .collect();
    if t.json {
        let mut v = match &copied {
            Some((report, routing)) => {
                serde_json::from_str(&render_report(report, routing, true)?)?
            }
            None => serde_json::json!({}),
        };
        v["unchanged"] = plan.unchanged.into();
        v["deleted"] = deleted.len().into();
        v["delete_errors"] = delete_errors.clone().into();
        v["deletions_held_back"] = (deletions.held_back || too_many.is_some()).into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some((report, routing)) = &copied {
            print!("{}", render_report(report, routing, false)?);
        } else {
            println!("Nothing to copy.");
        }
        println!(
            "{} objects unchanged, {} deleted{}",
            plan.unchanged,
            deleted.len(),
            match too_many {
                Some(max) => format!(
                    " (deletions skipped: {} to delete is more than --max-delete {max})",
                    plan.delete.len()
                ),
                None if deletions.held_back => {
                    " (deletions skipped: some objects were not copied)".to_string()
                }
                None => String::new(),
            }
        );
        for e in &delete_errors {
            println!(
                "  delete failed: {}",
                crate::render::terminal_safe(&e.to_string())
            );
        }
    }
    if let Some((report, _)) = &copied {
        check_failures(report)?;
    }
    check_skipped(&listing.skipped)?;
    if let Some(max) = too_many {
        return Err(crate::error::TooManyDeletions {
            max,
            would: plan.delete.len(),
        }
        .into());
    }
    if !delete_errors.is_empty() {
        return Err(crate::error::PartialFailure {
            failed: delete_errors.len(),
            total: plan.delete.len() as u64,
        }
        .into());
    }
    Ok(())
}
