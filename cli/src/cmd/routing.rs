//! Which route a copy takes: the regions of its ends (given, or asked of the buckets), the
//! plan between them, or the provider's own copy (server-side), and the prices the copy is
//! metered with.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use skyx_catalog::Catalog;
use skyx_gateway::{Pricing, Topology};
use skyx_planner::{TransferPlan, plan_transfer};
use skyx_sky::SkyManifest;
use skyx_store::{ObjectStore, ObjectUrl};

use crate::cmd::plan::request_from_flags;
use crate::cmd::transfer::{BadInput, Endpoints, ServerSideArg, TransferArgs, load_sky};

/// The route the copy takes.
pub struct Routing {
    pub topology: Topology,
    pub plan: Option<TransferPlan>,
    pub pricing: Pricing,
    /// The provider copies server-side; no agents run.
    pub server_side: bool,
}

/// Each endpoint's region as its store reports it (`aws:REGION`, `gcp:REGION`), for endpoints
/// whose region flag is not given. Failing to ask is not an error: the flags remain.
pub async fn infer_regions(
    args: &TransferArgs,
    ends: &Endpoints,
) -> (Option<String>, Option<String>) {
    async fn ask(url: &ObjectUrl, store: &Arc<dyn ObjectStore>) -> Option<String> {
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

/// Plans the route between the regions given or found (`regions`); with neither known, one
/// local agent pair copies directly.
pub fn plan_routing(
    args: &TransferArgs,
    volume: u64,
    regions: (Option<String>, Option<String>),
    server_side: &Result<(), String>,
) -> Result<Routing> {
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
    req.server_side = allowed;
    let mut plan = plan_transfer(&catalog, &req)?;
    if args.server_side == ServerSideArg::Always {
        match plan.server_side.clone() {
            Some(ss) => plan.chosen = ss,
            None => bail!(BadInput(format!(
                "--server-side always: the catalog cannot price a server-side copy from {src} to {dst}"
            ))),
        }
    }
    let server_side = plan.chosen.kind == skyx_planner::RouteKind::ServerSide;
    let mut routing = routing_from_plan(
        &catalog,
        plan,
        args.route.max_connections_per_vm,
        connections,
    );
    routing.server_side = server_side;
    if server_side {
        routing.topology = Topology::default();
        routing.pricing.egress_usd_per_gb.insert(
            (src.to_string(), dst.to_string()),
            catalog.egress_price(&src, &dst).map_or(0.0, |p| p.0),
        );
    }
    Ok(routing)
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
