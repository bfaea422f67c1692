//! Which route a copy takes: the regions of its ends (given, or asked of the buckets), the
//! plan between them, or the provider's own copy (server-side), and the prices the copy is
//! metered with.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use skyx_catalog::Catalog;
use skyx_gateway::{Prediction, Pricing, Replanned, Replanner, Topology, VolumeEstimate};
use skyx_planner::{CostCap, Objective, TransferPlan, TransferRequest, plan_transfer};
use skyx_sky::SkyManifest;
use skyx_store::{ObjectStore, ObjectUrl};

use crate::args::provider::Metering;
use crate::cmd::plan::request_from_flags;
use crate::cmd::transfer::{BadInput, Endpoints, ServerSideArg, TransferArgs, load_sky};

/// The route the copy takes.
pub struct Routing {
    pub topology: Topology,
    pub plan: Option<TransferPlan>,
    pub pricing: Pricing,
    /// The provider copies server-side; no agents run.
    pub server_side: bool,
    /// Plans the route again as a streamed listing refines the volume (a route through
    /// agents that was planned).
    pub replanner: Option<Arc<RoutePlanner>>,
    /// What the copy's figures are: a bill, a rehearsal's prediction, or a local copy.
    pub metering: Metering,
}

/// Each endpoint's region as its store reports it (`aws:REGION`, `gcp:REGION`), for endpoints
/// whose region flag is not given. Failing to ask is not an error: the flags remain.
pub async fn infer_regions(
    args: &TransferArgs,
    ends: &Endpoints,
) -> (Option<String>, Option<String>) {
    let ask = bucket_region;
    if args.sky.is_some() {
        // A sky's stores are emulators: the flags are the regions.
        return (args.src_region.clone(), args.dst_region.clone());
    }
    let src = match &args.src_region {
        Some(r) => Some(r.clone()),
        None => ask(&ends.src_url, &ends.src).await,
    };
    let dst = match &args.dst_region {
        Some(r) => Some(r.clone()),
        None => ask(&ends.dst_url, &ends.dst).await,
    };
    (src, dst)
}

/// The region of the bucket `url` names, as its store reports it (`aws:REGION`,
/// `gcp:REGION`); `None` for stores that do not say, or when asking fails.
pub async fn bucket_region(url: &ObjectUrl, store: &Arc<dyn ObjectStore>) -> Option<String> {
    let cloud = match url.location {
        skyx_store::StoreLocation::S3 { .. } => "aws",
        skyx_store::StoreLocation::Gcs { .. } => "gcp",
        _ => return None,
    };
    match store.bucket_region().await {
        Ok(Some(r)) => Some(format!("{cloud}:{r}")),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not ask the bucket's region; use --src-region/--dst-region");
            None
        }
    }
}

/// Plans the route between the regions given or found (`regions`); with neither known, one
/// local agent pair copies directly.
pub fn plan_routing(
    args: &TransferArgs,
    volume: u64,
    regions: (Option<String>, Option<String>),
    ends: &Endpoints,
) -> Result<Routing> {
    let server_side = &ends.server_side;
    // Between two local paths the "provider's copy" is this process's: nothing a cloud bills.
    let local_ends = ends.src_url.local_path().is_some() && ends.dst_url.local_path().is_some();
    let connections = args.connections;
    let paced = crate::cmd::transfer::bw_limit(args)?.is_some();
    let allowed = match (args.server_side, server_side) {
        (ServerSideArg::Never, _) => false,
        (ServerSideArg::Always, _) if paced => bail!(BadInput(
            "--server-side always cannot keep --bwlimit: the provider copies at its own pace"
                .into()
        )),
        (ServerSideArg::Auto, _) if paced => false,
        (ServerSideArg::Always, Err(why)) => {
            bail!(BadInput(format!("--server-side always: {why}")))
        }
        (_, ok) => ok.is_ok(),
    };
    let metering = args.provider.metering(args.sky.is_some())?;
    let flagged = args.src_region.is_some() || args.dst_region.is_some();
    let regions = match regions {
        // One region found from a bucket, none given: copy directly rather than refuse.
        (Some(r), None) | (None, Some(r)) if !flagged => {
            tracing::warn!(
                "only one endpoint's region is known ({r}); copying directly without a plan \
                 (give --src-region and --dst-region to plan the route)"
            );
            (None, None)
        }
        other => other,
    };
    let (src, dst) = match (&regions.0, &regions.1) {
        (None, None) => {
            if args.route.via != "auto" && args.route.via != "direct" {
                bail!(BadInput(
                    "--via with relays needs --src-region and --dst-region".into()
                ));
            }
            return Ok(Routing {
                topology: Topology::direct("local", "local", connections.unwrap_or(8)),
                plan: None,
                pricing: Pricing::default(),
                // Without regions there is nothing to weigh: the provider's copy moves no byte
                // through us, so it is taken whenever the ends allow it (as rclone does).
                server_side: allowed,
                replanner: None,
                metering: match metering {
                    Metering::Rehearsal if args.sky.is_none() => bail!(BadInput(
                        "--rehearse plays a plan: give --src-region and --dst-region".into()
                    )),
                    // The provider's own copy between cloud stores is real work, unpriced.
                    _ if allowed && !local_ends => Metering::Cloud,
                    _ => Metering::Local,
                },
            });
        }
        (Some(s), Some(d)) => (s, d),
        (Some(known), None) | (None, Some(known)) => bail!(BadInput(format!(
            "only one endpoint's region is known ({known}); give --src-region and --dst-region"
        ))),
    };
    let mut catalog: Catalog = args.catalog.load()?;
    let mut route = args.route.clone();
    if let Some(sky) = load_sky(args)? {
        catalog = sky_catalog(catalog, &sky, args.catalog.throughput_grid.is_some())?;
        // One namespace is one VM: a second agent in a region adds no bandwidth there.
        route.max_vms_per_region = 1;
    }
    let src = catalog.resolve_region(src).context("--src-region")?;
    let dst = catalog.resolve_region(dst).context("--dst-region")?;
    let mut req = request_from_flags(
        src.clone(),
        dst.clone(),
        volume.max(1),
        &args.objective,
        &route,
        &args.constraints,
        &catalog,
    )?;
    // A rehearsal plays agents: the provider's own copy would rehearse nothing.
    req.server_side = allowed && metering != Metering::Rehearsal;
    let mut plan = match plan_transfer(&catalog, &req) {
        Ok(plan) => plan,
        // Agents on this machine follow no plan: one that cannot be made is only not shown.
        Err(e) if metering == Metering::Local && args.server_side != ServerSideArg::Always => {
            eprintln!("skyx: no plan for cloud agents ({e}); agents on this machine copy directly");
            let mut routing = local_pair(
                args,
                Routing {
                    topology: Topology::default(),
                    plan: None,
                    pricing: Pricing::default(),
                    server_side: false,
                    replanner: None,
                    metering,
                },
            )?;
            routing.server_side = allowed;
            if allowed && !local_ends {
                routing.metering = Metering::Cloud;
            }
            return Ok(routing);
        }
        Err(e) => return Err(e.into()),
    };
    if args.server_side == ServerSideArg::Always {
        match plan.server_side.clone() {
            Some(ss) => plan.chosen = ss,
            None => bail!(BadInput(format!(
                "--server-side always: the catalog cannot price a server-side copy from {src} to {dst}"
            ))),
        }
    }
    let server_side = plan.chosen.kind == skyx_planner::RouteKind::ServerSide;
    let max_connections = args.route.max_connections_per_vm;
    let mut routing = routing_from_plan(&catalog, plan, max_connections, connections);
    routing.server_side = server_side;
    if !server_side && metering == Metering::Local {
        return local_pair(args, routing);
    }
    routing.metering = match (server_side, local_ends) {
        (true, true) => Metering::Local,
        // In a sky, the provider's copy is its region's emulated store copying.
        (true, false) if args.sky.is_some() => Metering::Rehearsal,
        (true, false) => Metering::Cloud,
        (false, _) => metering,
    };
    if server_side {
        routing.topology = Topology::default();
        if !local_ends {
            routing.pricing.egress_usd_per_gb.insert(
                (src.to_string(), dst.to_string()),
                catalog.egress_price(&src, &dst).map_or(0.0, |p| p.0),
            );
        }
    } else {
        // Through agents: planned again on the volume still to go as a streamed listing
        // shows more of it (the provider's copy is no longer a choice once agents run).
        req.server_side = false;
        // Planned again, the route stays where the agents' provider launches VMs: a region
        // of another cloud would only answer as one out of capacity.
        if let Some(cloud) = args.provider.provider.only_cloud()
            && req.constraints.allow_clouds.is_empty()
        {
            req.constraints.allow_clouds.push(cloud);
        }
        routing.replanner = Some(Arc::new(RoutePlanner {
            catalog,
            req,
            max_connections,
            connections,
            planned_at: std::time::Instant::now(),
        }));
    }
    Ok(routing)
}

/// A planned route that agents on this machine do not follow: one source and one sink agent
/// copy directly, the plan kept to show what cloud agents would do. Relays asked for by name
/// are refused rather than dropped.
fn local_pair(args: &TransferArgs, planned: Routing) -> Result<Routing> {
    if args.route.via != "auto" && args.route.via != "direct" {
        bail!(BadInput(format!(
            "--via {} asks for relays, and agents on this machine copy directly: add --rehearse to play the route here (costs shown as predictions), or run it on VMs (--provider aws|gcp|azure)",
            args.route.via
        )));
    }
    Ok(Routing {
        topology: Topology::direct("local", "local", args.connections.unwrap_or(8)),
        plan: planned.plan,
        pricing: Pricing::default(),
        server_side: false,
        replanner: None,
        metering: Metering::Local,
    })
}

/// What planning a copy's route takes besides its volume, kept to plan it again on a refined
/// volume (`skyx_gateway::Replanner`).
#[derive(Debug)]
pub struct RoutePlanner {
    catalog: Catalog,
    /// The first plan's request.
    req: TransferRequest,
    max_connections: u32,
    connections: Option<u32>,
    planned_at: std::time::Instant,
}

impl RoutePlanner {
    /// The request for the volume still to go: a deadline counts from the first plan, and a
    /// total cost cap is shared by the bytes listed (what is to go gets its share).
    fn request_for(&self, estimate: &VolumeEstimate) -> TransferRequest {
        let mut req = self.req.clone();
        let to_go = estimate.to_go().max(1);
        req.volume_bytes = to_go;
        match &mut req.objective {
            Objective::Deadline { seconds } => {
                *seconds = (*seconds - self.planned_at.elapsed().as_secs_f64()).max(1.0);
            }
            Objective::MaxThroughput {
                cost_cap: CostCap::TotalUsd(cap),
            } => *cap *= to_go as f64 / estimate.listed_bytes.max(1) as f64,
            _ => {}
        }
        req
    }
}

impl Replanner for RoutePlanner {
    fn replan(&self, estimate: &VolumeEstimate, refused: &[String]) -> Option<Replanned> {
        let mut req = self.request_for(estimate);
        for region in refused {
            match region.parse() {
                Ok(id) => req.constraints.deny_regions.push(id),
                Err(e) => {
                    tracing::warn!(%region, error = %e, "a refused region not in the catalog")
                }
            }
        }
        let plan = match plan_transfer(&self.catalog, &req) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(error = %e, "planning again failed");
                return None;
            }
        };
        let summary = plan_line(&plan.chosen, req.volume_bytes);
        let prediction = Some(prediction(&plan.chosen));
        let routing =
            routing_from_plan(&self.catalog, plan, self.max_connections, self.connections);
        Some(Replanned {
            topology: routing.topology,
            pricing: routing.pricing,
            summary,
            prediction,
        })
    }
}

/// What the planner predicts for `plan`.
pub fn prediction(plan: &skyx_planner::RoutePlan) -> Prediction {
    Prediction {
        time_s: plan.time_s,
        throughput_gbps: plan.throughput_gbps,
        cost_usd: plan.cost_usd.total,
        egress_usd: plan.cost_usd.egress,
        vm_usd: plan.cost_usd.vm,
    }
}

/// A plan in a line: its paths, VMs, predicted time and cost for `volume` bytes.
pub fn plan_line(plan: &skyx_planner::RoutePlan, volume: u64) -> String {
    let paths = plan
        .paths
        .iter()
        .map(|p| {
            p.regions
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{paths} with {} VMs for {}: {:.0} s, ${:.2}",
        plan.vms.values().sum::<u32>(),
        crate::units::format_bytes(volume as f64),
        plan.time_s,
        plan.cost_usd.total
    )
}

/// The agents, routes and prices that carry out `plan`.
pub fn routing_from_plan(
    catalog: &Catalog,
    plan: TransferPlan,
    max_connections_per_vm: u32,
    connections: Option<u32>,
) -> Routing {
    let mut topology = Topology::from_plan(&plan.chosen, max_connections_per_vm);
    if let Some(n) = connections {
        topology = topology.with_connections(n);
    }
    let pricing = Pricing::for_plan(catalog, &plan, &topology);
    Routing {
        topology,
        plan: Some(plan),
        pricing,
        server_side: false,
        replanner: None,
        metering: Metering::Cloud,
    }
}

/// The planner's catalog for a sky: the sky's links (its shaped grid, unless the user gave a
/// grid, e.g. one `skyx bench paths` measured in the sky) and VM caps scaled like the links.
pub fn sky_catalog(catalog: Catalog, sky: &SkyManifest, user_grid: bool) -> Result<Catalog> {
    let mut catalog = catalog.with_vm_network_scale(
        sky.spec.scale,
        skyx_catalog::Provenance {
            what: "vm network caps",
            source: format!("scaled × {} for sky {:?}", sky.spec.scale, sky.spec.name),
            as_of: "now".into(),
        },
    );
    if !user_grid {
        let path = sky.grid_path();
        let text = crate::files::read_text(&path, "the sky's grid", crate::files::CATALOG_CAP)
            .with_context(|| format!("reading the sky's grid {}", path.display()))?;
        let grid =
            skyx_catalog::ThroughputGrid::from_csv(text.as_bytes(), &path.display().to_string())?;
        catalog = catalog.with_throughput_grid(
            grid,
            skyx_catalog::Provenance {
                what: "throughput",
                source: format!("sky {:?} shaping ({})", sky.spec.name, path.display()),
                as_of: "now".into(),
            },
        );
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner(objective: Objective) -> RoutePlanner {
        let catalog = Catalog::builtin();
        let src = catalog.resolve_region("aws:us-east-1").unwrap();
        let dst = catalog.resolve_region("aws:eu-west-1").unwrap();
        RoutePlanner {
            req: TransferRequest::new(src, dst, 10_000_000_000, objective),
            catalog,
            max_connections: 64,
            connections: None,
            planned_at: std::time::Instant::now() - std::time::Duration::from_secs(600),
        }
    }

    fn estimate(listed: u64, landed: u64) -> VolumeEstimate {
        VolumeEstimate {
            listed_objects: 1,
            listed_bytes: listed,
            listing_ended: false,
            landed_bytes: landed,
        }
    }

    #[test]
    fn a_refined_plan_is_for_the_bytes_to_go_within_what_is_left_of_the_bounds() {
        // A deadline counts from the first plan: ten minutes of an hour are gone.
        let p = planner(Objective::Deadline { seconds: 3600.0 });
        let req = p.request_for(&estimate(40_000_000_000, 10_000_000_000));
        assert_eq!(req.volume_bytes, 30_000_000_000);
        let Objective::Deadline { seconds } = req.objective else {
            panic!("{:?}", req.objective)
        };
        assert!((2990.0..=3000.0).contains(&seconds), "{seconds}");
        // A total cost cap is shared by the bytes listed: three quarters are still to go.
        let p = planner(Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(100.0),
        });
        let req = p.request_for(&estimate(40_000_000_000, 10_000_000_000));
        assert_eq!(
            req.objective,
            Objective::MaxThroughput {
                cost_cap: CostCap::TotalUsd(75.0)
            }
        );
        // Planned again, it plans: a plan for the new volume, with its topology and prices.
        let again = p.replan(&estimate(40_000_000_000, 0), &[]).unwrap();
        assert!(!again.topology.routes.is_empty());
        assert!(again.summary.contains("aws:us-east-1"), "{}", again.summary);
    }

    #[test]
    fn a_plan_made_around_refused_regions_goes_through_none_of_them() {
        let p = planner(Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(1e6),
        });
        let relays = |plan: &Replanned| -> Vec<String> {
            let ends = ["aws:us-east-1", "aws:eu-west-1"];
            (plan.topology.agents.iter())
                .map(|a| a.region.clone())
                .filter(|r| !ends.contains(&r.as_str()))
                .collect()
        };
        let first = p.replan(&estimate(10_000_000_000, 0), &[]).unwrap();
        let refused = relays(&first);
        assert!(
            !refused.is_empty(),
            "the fastest plan has relays: {}",
            first.summary
        );
        let around = p.replan(&estimate(10_000_000_000, 0), &refused).unwrap();
        assert!(
            relays(&around).iter().all(|r| !refused.contains(r)),
            "{refused:?} in {}",
            around.summary
        );
        // An end's own region cannot be planned around.
        assert!(
            p.replan(&estimate(1, 0), &["aws:eu-west-1".into()])
                .is_none()
        );
    }
}
