//! `skyx catalog`: inspect regions, prices, measured throughput and where the numbers came from.

use std::fmt::Write as _;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use skyx_catalog::{Catalog, Cloud, Continent, location_of};

use crate::args::catalog::CatalogArgs;

#[derive(Debug, Args)]
pub struct CatalogCmd {
    #[command(subcommand)]
    pub what: CatalogWhat,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CatalogWhat {
    /// Regions the planner can use, with location and agent VM price.
    Regions {
        #[arg(long)]
        cloud: Option<String>,
        #[arg(long)]
        continent: Option<String>,
    },
    /// Measured throughput, RTT and egress price between two regions, both directions.
    Pair { src: String, dst: String },
    /// Egress prices and measured throughput from one region to every other, cheapest first.
    Egress { src: String },
    /// VM offers (SkyPilot schema), filtered.
    Vms {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        instance_type: Option<String>,
        #[arg(long)]
        accelerator: Option<String>,
    },
    /// Where each piece of the catalog came from and when it was measured.
    Sources,
}

pub fn run(cmd: &CatalogCmd) -> Result<()> {
    let catalog = cmd.catalog.load()?;
    let out = match &cmd.what {
        CatalogWhat::Regions { cloud, continent } => {
            let cloud: Option<Cloud> = cloud.as_deref().map(str::parse).transpose()?;
            let continent: Option<Continent> = continent.as_deref().map(str::parse).transpose()?;
            regions(&catalog, cloud, continent, cmd.json)
        }
        CatalogWhat::Pair { src, dst } => pair(&catalog, src, dst, cmd.json)?,
        CatalogWhat::Egress { src } => egress(&catalog, src, cmd.json)?,
        CatalogWhat::Vms {
            region,
            instance_type,
            accelerator,
        } => vms(
            &catalog,
            region.as_deref(),
            instance_type.as_deref(),
            accelerator.as_deref(),
            cmd.json,
        )?,
        CatalogWhat::Sources => {
            if cmd.json {
                serde_json::to_string_pretty(catalog.provenance())?
            } else {
                let mut s = String::new();
                for p in catalog.provenance() {
                    let _ = writeln!(s, "{:<14} {} (as of {})", p.what, p.source, p.as_of);
                }
                s
            }
        }
    };
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(())
}

fn regions(
    catalog: &Catalog,
    cloud: Option<Cloud>,
    continent: Option<Continent>,
    as_json: bool,
) -> String {
    let mut rows = Vec::new();
    for r in catalog.regions() {
        let loc = location_of(r);
        if cloud.is_some_and(|c| c != r.cloud()) {
            continue;
        }
        if continent.is_some_and(|c| loc.map(|l| l.continent) != Some(c)) {
            continue;
        }
        let vm = catalog.gateway_vm(r);
        rows.push(json!({
            "region": r.to_string(),
            "cloud": r.cloud().as_str(),
            "country": loc.map(|l| l.country),
            "continent": loc.map(|l| l.continent.as_str()),
            "city": loc.map(|l| l.city),
            "agent_vm": vm.as_ref().map(|v| v.instance_type.clone()),
            "agent_vm_usd_per_hour": vm.as_ref().map(|v| v.price.0),
            "agent_vm_price_source": vm.as_ref().map(|v| serde_json::to_value(&v.source).unwrap_or_default()),
        }));
    }
    if as_json {
        return serde_json::to_string_pretty(&rows).unwrap_or_default();
    }
    let mut s = format!(
        "{:<28} {:<3} {:<14} {:<18} {:<16} {:>8}\n",
        "REGION", "CC", "CONTINENT", "CITY", "AGENT VM", "$/h"
    );
    for r in &rows {
        let estimated = r["agent_vm_price_source"]["kind"] == "estimated_cloud_median";
        let _ = writeln!(
            s,
            "{:<28} {:<3} {:<14} {:<18} {:<16} {:>8.3}{}",
            r["region"].as_str().unwrap_or(""),
            r["country"].as_str().unwrap_or("?"),
            r["continent"].as_str().unwrap_or("?"),
            r["city"].as_str().unwrap_or("?"),
            r["agent_vm"].as_str().unwrap_or("-"),
            r["agent_vm_usd_per_hour"].as_f64().unwrap_or(f64::NAN),
            if estimated { " (estimate)" } else { "" }
        );
    }
    let _ = writeln!(s, "{} regions", rows.len());
    s
}

fn pair(catalog: &Catalog, src: &str, dst: &str, as_json: bool) -> Result<String> {
    let a = catalog.resolve_region(src)?;
    let b = catalog.resolve_region(dst)?;
    let mut dirs = Vec::new();
    for (x, y) in [(&a, &b), (&b, &a)] {
        let t = catalog.throughput(x, y);
        dirs.push(json!({
            "src": x.to_string(),
            "dst": y.to_string(),
            "throughput_gbps": t.map(|t| t.gbps.0),
            "measured_connections": t.map(|t| t.connections),
            "samples": t.map(|t| t.samples),
            "rtt_ms": catalog.rtt(x, y).map(|r| r.0),
            "egress_usd_per_gb": catalog.egress_price(x, y).map(|p| p.0),
        }));
    }
    if as_json {
        return Ok(serde_json::to_string_pretty(&dirs)?);
    }
    let mut s = String::new();
    for d in &dirs {
        let _ = writeln!(
            s,
            "{} -> {}: {} over {} connections, RTT {}, egress {}",
            d["src"].as_str().unwrap_or(""),
            d["dst"].as_str().unwrap_or(""),
            d["throughput_gbps"]
                .as_f64()
                .map_or("not measured".into(), |g| format!("{g:.2} Gbps")),
            d["measured_connections"]
                .as_u64()
                .map_or("?".into(), |c| c.to_string()),
            d["rtt_ms"]
                .as_f64()
                .map_or("not measured".into(), |r| format!("{r:.1} ms")),
            d["egress_usd_per_gb"]
                .as_f64()
                .map_or("not priced".into(), |p| format!("${p:.4}/GB")),
        );
    }
    Ok(s)
}

fn egress(catalog: &Catalog, src: &str, as_json: bool) -> Result<String> {
    let a = catalog.resolve_region(src)?;
    let mut rows: Vec<(String, Option<f64>, Option<f64>)> = catalog
        .regions()
        .iter()
        .filter(|r| **r != a)
        .map(|r| {
            (
                r.to_string(),
                catalog.egress_price(&a, r).map(|p| p.0),
                catalog.throughput(&a, r).map(|t| t.gbps.0),
            )
        })
        .collect();
    rows.sort_by(|x, y| {
        x.1.unwrap_or(f64::INFINITY)
            .total_cmp(&y.1.unwrap_or(f64::INFINITY))
            .then(y.2.unwrap_or(0.0).total_cmp(&x.2.unwrap_or(0.0)))
    });
    if as_json {
        let v: Vec<_> = rows
            .iter()
            .map(|(d, p, t)| json!({"src": a.to_string(), "dst": d, "egress_usd_per_gb": p, "throughput_gbps": t}))
            .collect();
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let mut s = format!(
        "{:<28} {:>10} {:>10}\n",
        format!("FROM {a} TO"),
        "$/GB",
        "Gbps"
    );
    for (d, p, t) in rows {
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>10}",
            d,
            p.map_or("-".into(), |p| format!("{p:.4}")),
            t.map_or("-".into(), |t| format!("{t:.2}"))
        );
    }
    Ok(s)
}

fn vms(
    catalog: &Catalog,
    region: Option<&str>,
    instance_type: Option<&str>,
    accelerator: Option<&str>,
    as_json: bool,
) -> Result<String> {
    let offers: Vec<_> = catalog
        .vm_prices()
        .offers()
        .iter()
        .filter(|o| {
            region.is_none_or(|r| {
                o.region == r || o.zone == r || format!("{}:{}", o.cloud, o.region) == r
            })
        })
        .filter(|o| instance_type.is_none_or(|t| o.instance_type.eq_ignore_ascii_case(t)))
        .filter(|o| {
            accelerator.is_none_or(|a| {
                o.accelerator
                    .as_ref()
                    .is_some_and(|(n, _)| n.eq_ignore_ascii_case(a))
            })
        })
        .collect();
    if as_json {
        return Ok(serde_json::to_string_pretty(&offers)?);
    }
    let mut s = format!(
        "{:<6} {:<26} {:<16} {:<24} {:>10} {:>10}\n",
        "CLOUD", "INSTANCE TYPE", "ACCELERATOR", "REGION/ZONE", "$/h", "SPOT $/h"
    );
    for o in &offers {
        let _ = writeln!(
            s,
            "{:<6} {:<26} {:<16} {:<24} {:>10} {:>10}",
            o.cloud.as_str(),
            if o.instance_type.is_empty() {
                "(accelerator)"
            } else {
                &o.instance_type
            },
            o.accelerator
                .as_ref()
                .map_or("-".into(), |(n, c)| format!("{c}x {n}")),
            if o.zone.is_empty() {
                o.region.clone()
            } else {
                format!("{}/{}", o.region, o.zone)
            },
            o.price.map_or("-".into(), |p| format!("{:.4}", p.0)),
            o.spot_price.map_or("-".into(), |p| format!("{:.4}", p.0)),
        );
    }
    let _ = writeln!(s, "{} offers", offers.len());
    Ok(s)
}
