//! `skyx plan`: show an overlay plan with its predicted time and bill, next to the direct path.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use clap::Args;
use skyx_catalog::{Catalog, Cloud, Continent, EU_COUNTRIES, Gbps, RegionId, UsdPerGb, UsdPerHour};
use skyx_planner::{
    CostCap, ModelSize, Objective, PlannerConfig, RegionConstraints, RouteChoice, RoutePlan,
    TransferPlan, TransferRequest, fastest_within_direct_cost, plan_transfer, to_dot,
};

use crate::args::catalog::CatalogArgs;
use crate::units::{format_bytes, format_duration, parse_bytes, parse_duration_s};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Source region, e.g. aws:us-east-1.
    #[arg(long)]
    pub src: String,
    /// Destination region, e.g. gcp:asia-southeast1-a; several, comma-separated, plan a
    /// broadcast (relays that fork, each byte over each link once).
    #[arg(long)]
    pub dst: String,
    /// Logical (uncompressed) volume: 100GB, 1.5TB, 512GiB, ...
    #[arg(long, default_value = "100GB")]
    pub volume: String,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    #[command(flatten)]
    pub route: RouteArgs,
    #[command(flatten)]
    pub constraints: ConstraintArgs,
    /// Print the plan as one JSON object.
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print a Graphviz picture of the plan.
    #[arg(long)]
    pub dot: bool,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

/// What to optimise. With no mode flag: the fastest plan that costs no more than a plain direct
/// copy (direct link, one VM per end).
#[derive(Debug, Args)]
pub struct ObjectiveArgs {
    /// Cheapest plan that reaches --throughput-floor.
    #[arg(long, requires = "throughput_floor", conflicts_with_all = ["max_throughput", "deadline"])]
    pub min_cost: bool,
    /// Throughput floor in Gbps of logical data (implies --min-cost).
    #[arg(long, value_name = "GBPS")]
    pub throughput_floor: Option<f64>,
    /// Fastest plan within --cost-cap.
    #[arg(long, requires = "cost_cap", conflicts_with = "deadline")]
    pub max_throughput: bool,
    /// Cost ceiling: total dollars (25) or dollars per GB (0.05/GB) (implies --max-throughput).
    #[arg(long, value_name = "USD|USD/GB", conflicts_with = "throughput_floor")]
    pub cost_cap: Option<String>,
    /// Cheapest plan that moves the whole volume within this time (30m, 1h30m, 90s).
    #[arg(long, value_name = "DURATION", conflicts_with = "throughput_floor")]
    pub deadline: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RouteArgs {
    /// Routing: auto (overlay), direct, or a comma-separated relay chain R1,R2.
    #[arg(long, default_value = "auto")]
    pub via: String,
    /// Expected compression ratio (logical bytes per wire byte, ≥ 1).
    #[arg(long, default_value_t = 1.0)]
    pub compression_ratio: f64,
    /// Most agent VMs in one region.
    #[arg(long, default_value_t = PlannerConfig::default().max_vms_per_region,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_vms_per_region: u32,
    /// Most data connections per VM.
    #[arg(long, default_value_t = PlannerConfig::default().max_connections_per_vm,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_vm: u32,
    /// Hourly price for every agent VM, replacing the catalog (spot or negotiated prices).
    #[arg(long, value_name = "USD")]
    pub vm_price_per_hour: Option<f64>,
    /// Time each agent VM is billed beyond the transfer (boot and the clouds' one-minute
    /// minimum): what keeps a small copy from starting VMs it cannot pay back. [default: the
    /// planner's, 60s]
    #[arg(long, value_name = "DURATION")]
    pub vm_overhead: Option<String>,
    /// Relay candidates for the overlay model: a number, or `all` for every allowed region.
    /// [default: the planner's, 16]
    #[arg(long)]
    pub relay_candidates: Option<String>,
}

/// Where data may go. `--only-X` flags are allow lists, `--deny-X` flags deny lists; each takes
/// comma-separated values and may repeat. A relay must satisfy them as much as the endpoints.
#[derive(Debug, Args, Default)]
pub struct ConstraintArgs {
    /// Only these regions.
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub only_region: Vec<String>,
    /// Never these regions.
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub deny_region: Vec<String>,
    /// Only these clouds (aws, azure, gcp).
    #[arg(long, value_delimiter = ',', value_name = "CLOUD")]
    pub only_cloud: Vec<String>,
    /// Never these clouds.
    #[arg(long, value_delimiter = ',', value_name = "CLOUD")]
    pub deny_cloud: Vec<String>,
    /// Only these countries (ISO codes such as DE, FR; `eu` = the EU member states).
    #[arg(long, value_delimiter = ',', value_name = "COUNTRY")]
    pub only_country: Vec<String>,
    /// Never these countries.
    #[arg(long, value_delimiter = ',', value_name = "COUNTRY")]
    pub deny_country: Vec<String>,
    /// Only these continents (africa, asia, europe, north-america, oceania, south-america).
    #[arg(long, value_delimiter = ',', value_name = "CONTINENT")]
    pub only_continent: Vec<String>,
    /// Never these continents.
    #[arg(long, value_delimiter = ',', value_name = "CONTINENT")]
    pub deny_continent: Vec<String>,
}

fn countries(values: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for v in values {
        let v = v.trim();
        if v.eq_ignore_ascii_case("eu") {
            out.extend(EU_COUNTRIES.iter().map(|c| c.to_string()));
        } else if v.len() == 2 && v.chars().all(|c| c.is_ascii_alphabetic()) {
            out.push(v.to_ascii_uppercase());
        } else {
            bail!("country '{v}' is not a two-letter ISO code (or `eu`)");
        }
    }
    Ok(out)
}

impl ConstraintArgs {
    pub fn to_constraints(&self, catalog: &Catalog) -> Result<RegionConstraints> {
        let regions = |v: &[String]| -> Result<Vec<RegionId>> {
            v.iter().map(|r| Ok(catalog.resolve_region(r)?)).collect()
        };
        let clouds = |v: &[String]| -> Result<Vec<Cloud>> {
            v.iter().map(|c| Ok(c.parse::<Cloud>()?)).collect()
        };
        let continents = |v: &[String]| -> Result<Vec<Continent>> {
            v.iter().map(|c| Ok(c.parse::<Continent>()?)).collect()
        };
        Ok(RegionConstraints {
            allow_regions: regions(&self.only_region)?,
            deny_regions: regions(&self.deny_region)?,
            allow_clouds: clouds(&self.only_cloud)?,
            deny_clouds: clouds(&self.deny_cloud)?,
            allow_countries: countries(&self.only_country)?,
            deny_countries: countries(&self.deny_country)?,
            allow_continents: continents(&self.only_continent)?,
            deny_continents: continents(&self.deny_continent)?,
        })
    }
}

fn parse_cost_cap(text: &str) -> Result<CostCap> {
    let t = text.trim().trim_start_matches('$');
    let lower = t.to_ascii_lowercase();
    let (num, per_gb) = match lower.strip_suffix("/gb") {
        Some(n) => (n.trim().trim_start_matches('$').to_string(), true),
        None => (lower.clone(), false),
    };
    let v: f64 = num.parse().with_context(|| {
        format!("--cost-cap '{text}': expected dollars (25) or dollars per GB (0.05/GB)")
    })?;
    Ok(if per_gb {
        CostCap::PerGb(UsdPerGb(v))
    } else {
        CostCap::TotalUsd(v)
    })
}

impl RouteArgs {
    /// `--via`, checked: a relay chain names each relay once, neither end, and no empty name.
    pub fn to_route(
        &self,
        catalog: &Catalog,
        src: &RegionId,
        dst: &RegionId,
    ) -> Result<RouteChoice> {
        let chain = match self.via.trim() {
            "auto" => return Ok(RouteChoice::Auto),
            "direct" => return Ok(RouteChoice::Direct),
            "" => bail!(crate::error::BadInput(
                "--via '': expected auto, direct, or relay regions R1,R2".into()
            )),
            chain => chain,
        };
        let mut relays: Vec<RegionId> = Vec::new();
        for name in chain.split(',').map(str::trim) {
            if name.is_empty() {
                bail!(crate::error::BadInput(format!(
                    "--via {chain}: an empty region name in the chain"
                )));
            }
            let r = catalog
                .resolve_region(name)
                .with_context(|| format!("--via {chain}"))?;
            let why = if &r == src {
                Some("is the source")
            } else if &r == dst {
                Some("is the destination")
            } else if relays.contains(&r) {
                Some("appears twice (a route visits each relay once)")
            } else {
                None
            };
            if let Some(why) = why {
                bail!(crate::error::BadInput(format!(
                    "--via {chain}: {r} {why}; relays are regions between the two ends"
                )));
            }
            relays.push(r);
        }
        Ok(RouteChoice::Via(relays))
    }
}

/// Builds the planner request from the flags of `plan`.
pub fn build_request(args: &PlanArgs, catalog: &Catalog) -> Result<TransferRequest> {
    let src = catalog.resolve_region(&args.src).context("--src")?;
    let dst = catalog.resolve_region(&args.dst).context("--dst")?;
    let volume = parse_bytes(&args.volume).context("--volume")?;
    request_from_flags(
        src,
        dst,
        volume,
        &args.objective,
        &args.route,
        &args.constraints,
        catalog,
    )
}

/// Builds a planner request from the planning flags `plan`, `cp` and `sync` share.
pub fn request_from_flags(
    src: RegionId,
    dst: RegionId,
    volume: u64,
    o: &ObjectiveArgs,
    route: &RouteArgs,
    constraints: &ConstraintArgs,
    catalog: &Catalog,
) -> Result<TransferRequest> {
    let objective = if let Some(floor) = o.throughput_floor {
        Objective::MinCost {
            throughput_floor: Gbps(floor),
        }
    } else if let Some(cap) = &o.cost_cap {
        Objective::MaxThroughput {
            cost_cap: parse_cost_cap(cap)?,
        }
    } else if let Some(d) = &o.deadline {
        Objective::Deadline {
            seconds: parse_duration_s(d).context("--deadline")?,
        }
    } else {
        // Placeholder; replaced by the plain direct copy's cost below.
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(1.0),
        }
    };
    let mut req = TransferRequest::new(src, dst, volume, objective);
    req.compression_ratio = route.compression_ratio;
    req.constraints = constraints.to_constraints(catalog)?;
    req.route = route.to_route(catalog, &req.src, &req.dst)?;
    req.config.max_vms_per_region = route.max_vms_per_region;
    req.config.max_connections_per_vm = route.max_connections_per_vm;
    req.config.vm_price_override = route.vm_price_per_hour.map(UsdPerHour);
    if let Some(overhead) = &route.vm_overhead {
        req.config.vm_overhead_s = parse_duration_s(overhead).context("--vm-overhead")?;
    }
    req.config.max_relay_candidates = match route.relay_candidates.as_deref() {
        None => PlannerConfig::default().max_relay_candidates,
        Some("all") => None,
        Some(n) => Some(
            n.parse()
                .with_context(|| format!("--relay-candidates '{n}': expected a number or `all`"))?,
        ),
    };
    if o.throughput_floor.is_none() && o.cost_cap.is_none() && o.deadline.is_none() {
        fastest_within_direct_cost(catalog, &mut req)?;
    }
    Ok(req)
}

pub fn run(args: &PlanArgs) -> Result<()> {
    let catalog = args.catalog.load()?;
    let req = build_request(args, &catalog)?;
    let plan = plan_transfer(&catalog, &req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else if args.dot {
        print!("{}", to_dot(&plan.chosen, &plan.src, &plan.dst));
    } else {
        print!("{}", render(&plan, &catalog));
    }
    Ok(())
}

pub(crate) fn describe_objective(o: &Objective) -> String {
    match o {
        Objective::MinCost { throughput_floor } => {
            format!("cheapest plan at ≥ {:.2} Gbps", throughput_floor.0)
        }
        Objective::Deadline { seconds } => {
            format!(
                "cheapest plan finishing within {}",
                format_duration(*seconds)
            )
        }
        Objective::MaxThroughput {
            cost_cap: CostCap::TotalUsd(v),
        } => {
            format!("fastest plan costing ≤ ${v:.2}")
        }
        Objective::MaxThroughput {
            cost_cap: CostCap::PerGb(p),
        } => {
            format!("fastest plan costing ≤ ${:.4}/GB", p.0)
        }
    }
}

fn row(label: &str, p: &RoutePlan) -> String {
    format!(
        "  {label:<30} {:>9.2} Gbps  {:>10}  {:>10}  (egress ${:.2}, VMs ${:.2})\n",
        p.throughput_gbps,
        format_duration(p.time_s),
        format!("${:.2}", p.cost_usd.total),
        p.cost_usd.egress,
        p.cost_usd.vm
    )
}

/// The human-readable report.
pub fn render(plan: &TransferPlan, catalog: &Catalog) -> String {
    let c = &plan.chosen;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan: {} -> {}, {} (compression {:.2}x, {})",
        plan.src,
        plan.dst,
        format_bytes(plan.volume_bytes as f64),
        plan.compression_ratio,
        describe_objective(&plan.objective)
    );
    let relays = c.relays(&plan.src, &plan.dst);
    let _ = writeln!(
        out,
        "\nRoute ({}{})",
        match c.kind {
            skyx_planner::RouteKind::Overlay => "overlay",
            skyx_planner::RouteKind::Direct => "direct",
            skyx_planner::RouteKind::SingleRelay => "single relay",
            skyx_planner::RouteKind::Via => "given relays",
            skyx_planner::RouteKind::ServerSide => "server-side",
        },
        if relays.is_empty() {
            String::new()
        } else {
            format!(
                ", relays: {}",
                relays
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    for p in &c.paths {
        let hops: Vec<String> = p.regions.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(out, "  {:>7.2} Gbps  {}", p.gbps, hops.join(" -> "));
    }
    let _ = writeln!(out, "\nHops (wire)");
    for e in &c.edges {
        let rtt = catalog
            .rtt(&e.src, &e.dst)
            .map(|r| format!("{:.0} ms", r.0))
            .unwrap_or_else(|| "? ms".into());
        let _ = writeln!(
            out,
            "  {:<28} -> {:<28} {:>7.2} Gbps {:>4} conns {:>7} ${:.3}/GB {:>10} ${:>8.2}",
            e.src.to_string(),
            e.dst.to_string(),
            e.gbps,
            e.connections,
            rtt,
            e.usd_per_gb,
            format_bytes(e.gb * 1e9),
            e.egress_usd
        );
    }
    let _ = writeln!(out, "\nAgent VMs");
    for (region, vms) in &c.vm_details {
        let vm_type = catalog
            .gateway_vm(region)
            .map(|g| g.instance_type)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<28} {:>2} x {:<16} ${:.3}/h  ({})",
            region.to_string(),
            vms.count,
            vm_type,
            vms.instance_type_price_per_hour,
            vms.price_source
        );
    }
    let _ = writeln!(
        out,
        "\nPredicted: {} at {:.2} Gbps ({:.2} Gbps on the wire); ${:.2} = egress ${:.2} + VMs ${:.2}",
        format_duration(c.time_s),
        c.throughput_gbps,
        c.wire_gbps,
        c.cost_usd.total,
        c.cost_usd.egress,
        c.cost_usd.vm
    );
    let _ = writeln!(
        out,
        "\nCompared under the same objective\n{:<32} {:>14} {:>11} {:>11}",
        "", "throughput", "time", "cost"
    );
    out.push_str(&row("this plan", c));
    match (&plan.direct, &plan.direct_infeasible) {
        (Some(d), _) => out.push_str(&row("direct", d)),
        (None, Some(why)) => {
            let _ = writeln!(out, "  {:<30} not feasible: {why}", "direct");
        }
        (None, None) => {}
    }
    if let Some(r) = &plan.best_single_relay {
        let via = r.relays(&plan.src, &plan.dst);
        let label = format!(
            "via {}",
            via.first().map(|r| r.to_string()).unwrap_or_default()
        );
        out.push_str(&row(&label, r));
    }
    if let Some(d) = &plan.direct {
        let _ = writeln!(
            out,
            "\n  vs direct: {:.2}x the throughput at {:.2}x the cost",
            c.throughput_gbps / d.throughput_gbps,
            c.cost_usd.total / d.cost_usd.total
        );
    }
    model_and_notes(&mut out, &plan.model, &plan.notes);
    out
}

/// The report's last lines: the size of the model solved, and the notes.
pub(crate) fn model_and_notes(out: &mut String, model: &ModelSize, notes: &[String]) {
    let _ = writeln!(
        out,
        "\nModel: {} allowed regions, {} considered, {} links",
        model.regions_allowed, model.regions_considered, model.links_considered
    );
    for note in notes {
        let _ = writeln!(out, "note: {note}");
    }
}
