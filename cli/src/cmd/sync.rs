//! `skyx sync SRC DST [--delete]`: make the destination prefix hold what the source prefix
//! holds, copying only objects missing or different there.
//!
//! Both listings stream: they are sorted by destination key (on disk past a run held in
//! memory) and merged, and the objects to copy stream into the copy as they are decided. The
//! route is planned on what the first decisions copy (an estimate, said so, when the sync
//! goes on past them); deletions wait, on disk, for every copy to have happened.

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use skyx_gateway::{
    Compare, CopyItems, CopySources, Decision, Decisions, Look, StreamedSync, SyncRules, SyncTally,
    Tally, copies, delete_extraneous, items_of, list_copy_streaming, list_destination_streaming,
    list_files_from, look_at, sync_decisions,
};

use clap::Args;

use crate::cmd::execute::{Sources, execute, with_copy_properties};
use crate::cmd::routing::plan_routing;
use crate::cmd::transfer::{
    BadInput, Endpoints, TransferArgs, check_failures, check_skipped, open_endpoints, state_dir,
    warn_skipped,
};
use crate::render::copy::render_report;
use crate::units::format_bytes;

/// Deletions sent to the store per batch read back from disk.
const DELETE_BATCH: usize = 10_000;

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

/// The source objects a sync considers (filtered, with destination keys), streaming, with
/// what the listing leaves out (complete once the items have ended), and whether the source
/// named one object rather than a prefix.
async fn source_items(
    t: &TransferArgs,
    ends: &Endpoints,
    filter: &skyx_gateway::ObjectFilter,
) -> Result<(CopyItems, Arc<Mutex<Tally>>, bool)> {
    let listed = |l: skyx_gateway::Listing| {
        let tally = Tally {
            skipped: l.skipped,
            filtered_out: l.filtered_out,
        };
        (
            items_of(l.items),
            Arc::new(Mutex::new(tally)),
            l.source_is_object,
        )
    };
    if let Some(names) = t.select.names()? {
        let listing = list_files_from(
            ends.src.as_ref(),
            &ends.src_url,
            &ends.dst_url,
            &names,
            filter,
        )
        .await?;
        return Ok(listed(listing));
    }
    let sources = list_copy_streaming(
        ends.src.clone(),
        &ends.src_url,
        &ends.dst_url,
        filter,
        Look::default(),
    )
    .await?;
    Ok(match sources {
        CopySources::Listed(listing) => listed(listing),
        CopySources::Streaming { items, tally, .. } => (items, tally, false),
    })
}

async fn run_async(args: &SyncArgs) -> Result<()> {
    let t = &args.transfer;
    let ends = open_endpoints(t, &args.src, &args.dst).await?;
    let filter = t.select.object_filter(std::time::SystemTime::now())?;
    let (source, source_tally, source_is_object) = source_items(t, &ends, &filter).await?;
    if args.delete && source_is_object {
        // Mirroring one object would delete everything else under the destination prefix.
        return Err(BadInput(format!(
            "sync --delete needs a prefix (directory) as its source, and {} is a single object \
             (copy one object with skyx cp)",
            ends.src_url
        ))
        .into());
    }
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
    let spill_dir = state_dir(t).join("tmp");
    let mut how = StreamedSync::new(rules, &ends.dst_url.key, filter, spill_dir.clone());
    how.delete = args.delete;
    how.src_prefix = ends.src_url.key.clone();
    let destination = list_destination_streaming(ends.dst.clone(), &ends.dst_url.key);
    let decisions = sync_decisions(ends.src.clone(), ends.dst.clone(), source, destination, how);
    let tally = Arc::new(Mutex::new(SyncTally::new(spill_dir)));
    if t.dry_run {
        let skipped = dry_run(t, decisions, &tally, &source_tally).await?;
        warn_skipped(&ends.src_url, &skipped);
        return check_skipped(&skipped);
    }
    let looked = look_at(copies(decisions, tally.clone()), Look::default()).await?;
    let copied = if looked.ended && looked.items.is_empty() {
        None
    } else {
        let volume: u64 = looked.items.iter().map(|i| i.size).sum();
        if !looked.ended {
            eprintln!(
                "skyx: the sync goes on deciding while the copy runs; the route is planned on the {} objects ({}) decided so far",
                looked.items.len(),
                format_bytes(volume as f64)
            );
        }
        let regions = crate::cmd::routing::infer_regions(t, &ends).await;
        let routing = plan_routing(t, volume, regions, &ends)?;
        let items = futures::StreamExt::boxed(futures::StreamExt::chain(
            items_of(looked.items),
            looked.rest,
        ));
        let items = with_copy_properties(t, &ends, &routing, items)?;
        let sources = Sources {
            items,
            bytes_so_far: volume,
            still_listing: !looked.ended,
            // What a sync copies is decided against the destination as both listings go.
            volume: None,
        };
        let report = execute(t, &ends, sources, &routing).await?;
        Some((report, routing))
    };
    let tally = finished(&tally);
    let skipped = std::mem::take(&mut source_tally.lock().expect("tally").skipped);
    warn_skipped(&ends.src_url, &skipped);
    // A skipped object is a copy that did not happen: the destination is not a full mirror.
    let copy_failed = !skipped.is_empty()
        || copied
            .as_ref()
            .is_some_and(|(r, _)| !r.objects_failed.is_empty());
    // --max-delete: more deletions than allowed means none at all.
    let to_delete = tally.delete.len();
    let too_many = args.max_delete.filter(|&max| to_delete > max);
    let allowed = !copy_failed && too_many.is_none();
    let (mut deleted, mut delete_errors) = (0usize, Vec::new());
    let mut held_back = false;
    for keys in tally.delete.batches(DELETE_BATCH)? {
        let done = delete_extraneous(ends.dst.as_ref(), &keys?, allowed).await;
        deleted += done.deleted.len();
        held_back |= done.held_back;
        delete_errors.extend(done.failed.iter().map(|(k, why)| format!("{k}: {why}")));
    }
    if t.json {
        let mut v = match &copied {
            Some((report, routing)) => {
                serde_json::from_str(&render_report(report, routing, true)?)?
            }
            None => serde_json::json!({}),
        };
        v["unchanged"] = tally.unchanged.into();
        v["deleted"] = deleted.into();
        v["delete_errors"] = delete_errors.clone().into();
        v["deletions_held_back"] = (held_back || too_many.is_some()).into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some((report, routing)) = &copied {
            print!("{}", render_report(report, routing, false)?);
        } else {
            println!("Nothing to copy.");
        }
        println!(
            "{} objects unchanged, {} deleted{}",
            tally.unchanged,
            deleted,
            match too_many {
                Some(max) => format!(
                    " (deletions skipped: {to_delete} to delete is more than --max-delete {max})"
                ),
                None if held_back =>
                    " (deletions skipped: some objects were not copied)".to_string(),
                None => String::new(),
            }
        );
        for e in &delete_errors {
            println!("  delete failed: {}", crate::render::terminal_safe(e));
        }
    }
    if let Some((report, _)) = &copied {
        check_failures(report)?;
    }
    check_skipped(&skipped)?;
    if let Some(max) = too_many {
        return Err(crate::error::TooManyDeletions {
            max,
            would: to_delete,
        }
        .into());
    }
    if !delete_errors.is_empty() {
        return Err(crate::error::PartialFailure {
            failed: delete_errors.len(),
            total: to_delete as u64,
        }
        .into());
    }
    Ok(())
}

/// A sync's tally once its decisions have all been taken (left empty behind).
fn finished(tally: &Mutex<SyncTally>) -> SyncTally {
    std::mem::replace(
        &mut *tally.lock().expect("sync tally"),
        SyncTally::new(std::path::PathBuf::new()),
    )
}

/// One copy of a dry run: a line, or an element of the JSON `copy` array.
fn dry_run_line(
    out: &mut impl Write,
    t: &TransferArgs,
    first: bool,
    d: &skyx_gateway::CopyItem,
) -> Result<()> {
    if t.json {
        let v = serde_json::json!({"src": d.src_key, "dst": d.dst_key, "size": d.size});
        write!(out, "{}{}", if first { "" } else { "," }, v)?;
    } else {
        writeln!(
            out,
            "  copy   {} -> {}",
            crate::render::terminal_safe(&d.src_key),
            crate::render::terminal_safe(&d.dst_key)
        )?;
    }
    Ok(())
}

/// `sync --dry-run`: says what the sync would do as it is decided (copies as they come,
/// deletions and the totals at the end), holding no list of objects; gives back what the
/// listing skipped.
async fn dry_run(
    t: &TransferArgs,
    mut decisions: Decisions,
    tally: &Mutex<SyncTally>,
    source_tally: &Mutex<Tally>,
) -> Result<Vec<skyx_gateway::SkippedObject>> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if t.json {
        write!(out, "{{\"copy\":[")?;
    }
    let (mut copied, mut bytes) = (0usize, 0u64);
    while let Some(d) = futures::TryStreamExt::try_next(&mut decisions).await? {
        if let Decision::Copy(item) = &d {
            dry_run_line(&mut out, t, copied == 0, item)?;
            copied += 1;
            bytes += item.size;
        }
        tally.lock().expect("sync tally").take(d)?;
    }
    let tally = finished(tally);
    let (unchanged, to_delete) = (tally.unchanged, tally.delete.len());
    if t.json {
        write!(out, "],\"unchanged\":{unchanged},\"delete\":[")?;
    }
    let mut first = true;
    for keys in tally.delete.batches(DELETE_BATCH)? {
        for k in keys? {
            if t.json {
                write!(
                    out,
                    "{}{}",
                    if first { "" } else { "," },
                    serde_json::Value::from(k)
                )?;
            } else {
                writeln!(out, "  delete {}", crate::render::terminal_safe(&k))?;
            }
            first = false;
        }
    }
    let skipped = std::mem::take(&mut source_tally.lock().expect("tally").skipped);
    if t.json {
        let skipped: Vec<_> = skipped
            .iter()
            .map(|s| serde_json::json!({"src": s.src_key, "why": s.why}))
            .collect();
        writeln!(out, "],\"skipped\":{}}}", serde_json::Value::from(skipped))?;
    } else {
        writeln!(
            out,
            "Would copy {copied} objects ({}), leave {unchanged} unchanged, delete {to_delete}",
            format_bytes(bytes as f64),
        )?;
    }
    out.flush()?;
    Ok(skipped)
}
