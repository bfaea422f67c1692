//! `skyx sweep`: finds and removes what skyx jobs left in a cloud (agent VMs, and the jobs'
//! security groups on EC2, firewall rules on GCE, resource groups on Azure, all tagged or
//! labelled `skyx-job`), for a gateway that crashed or was killed before its own sweep. One job's (`--job`, the tag a copy
//! prints when it starts) or, said explicitly, every job's, which also stops jobs still running.

use anyhow::{Result, bail};
use clap::Args;
use skyx_provision::ec2::{self, Swept};

use crate::args::azure::AzureApiArgs;
use crate::args::catalog::CatalogArgs;
use crate::args::gce::GceApiArgs;
use crate::args::provider::ProviderKind;
use crate::error::BadInput;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The cloud to sweep (`aws`, `gcp`, `azure`; local agents die with their gateway).
    #[arg(long, value_enum)]
    pub provider: ProviderKind,
    /// EC2: regions to sweep (`aws:us-east-1,aws:eu-west-1`); default: every AWS region the
    /// catalog knows. (GCE is swept in every zone of the project at once.)
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub region: Vec<String>,
    /// Only this job's VMs and groups (its `skyx-job` tag value).
    #[arg(long, value_name = "JOB", conflicts_with = "all_jobs")]
    pub job: Option<String>,
    /// Every skyx job's VMs and groups, including those of jobs still running.
    #[arg(long)]
    pub all_jobs: bool,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// An EC2-compatible endpoint instead of AWS (moto's server in tests).
    #[arg(long, env = "SKYX_EC2_ENDPOINT", value_name = "URL")]
    pub ec2_endpoint: Option<String>,
    #[command(flatten)]
    pub gce: GceApiArgs,
    #[command(flatten)]
    pub azure: AzureApiArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

pub fn run(args: &SweepArgs) -> Result<()> {
    if args.provider == ProviderKind::Local {
        bail!(BadInput(
            "--provider local: nothing to sweep (local agents die with their gateway, or after their idle timeout)".into()
        ));
    }
    if args.provider == ProviderKind::Cloud {
        bail!(BadInput(
            "--provider cloud: sweep each cloud the job used, --provider aws, gcp and azure in turn".into()
        ));
    }
    if args.job.is_none() && !args.all_jobs {
        bail!(BadInput(
            "name what to sweep: --job JOB (the skyx-job tag a copy prints when it starts) or --all-jobs (also stops jobs still running)".into()
        ));
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if args.provider == ProviderKind::Gcp {
        return runtime.block_on(sweep_gce(args));
    }
    if args.provider == ProviderKind::Azure {
        return runtime.block_on(sweep_azure(args));
    }
    let regions = regions(args)?;
    runtime.block_on(sweep(args, &regions))
}

/// The jobs' resource groups of the subscription, and everything in them.
async fn sweep_azure(args: &SweepArgs) -> Result<()> {
    let arm = args.azure.arm()?;
    let label = args.job.as_deref().map(skyx_provision::job_label);
    let groups = skyx_provision::azure::sweep(&arm, label.as_deref(), args.dry_run)
        .await
        .map_err(|e| anyhow::anyhow!("could not sweep Azure: {e}; its VMs may still run"))?;
    for group in &groups {
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        println!("azure: {verb} resource group {group} (its VMs, disks, addresses, networks)");
    }
    println!(
        "{} {} resource groups",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        groups.len()
    );
    Ok(())
}

/// Every zone of the project: its VMs by label, then the jobs' firewall rules.
async fn sweep_gce(args: &SweepArgs) -> Result<()> {
    let compute = args.gce.compute()?;
    let label = args.job.as_deref().map(skyx_provision::job_label);
    let swept = skyx_provision::gce::sweep(&compute, label.as_deref(), args.dry_run)
        .await
        .map_err(|e| anyhow::anyhow!("could not sweep GCE: {e}; its VMs may still run"))?;
    let (vm, rule) = if args.dry_run {
        ("would delete", "would delete")
    } else {
        ("deleted", "deleted")
    };
    for id in &swept.instances {
        println!("gcp: {vm} VM {id}");
    }
    for name in &swept.rules {
        println!("gcp: {rule} firewall rule {name}");
    }
    println!(
        "{} {} VMs and {} firewall rules",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        swept.instances.len(),
        swept.rules.len()
    );
    Ok(())
}

/// The AWS regions to sweep (`us-east-1`).
fn regions(args: &SweepArgs) -> Result<Vec<String>> {
    if args.region.is_empty() {
        let catalog = args.catalog.load()?;
        return Ok(catalog
            .regions()
            .iter()
            .filter(|r| r.to_string().starts_with("aws:"))
            .map(|r| r.name().to_string())
            .collect());
    }
    args.region
        .iter()
        .map(|r| match r.trim().strip_prefix("aws:") {
            Some(name) if !name.is_empty() => Ok(name.to_string()),
            _ => Err(BadInput(format!(
                "--region {r}: --provider aws sweeps aws: regions (aws:us-east-1)"
            ))
            .into()),
        })
        .collect()
}

async fn sweep(args: &SweepArgs, regions: &[String]) -> Result<()> {
    let job = args.job.as_deref();
    let mut failed = Vec::new();
    let mut total = Swept::default();
    let results = ec2::sweep_regions(
        regions,
        args.ec2_endpoint.as_deref(),
        job,
        args.dry_run,
        ec2::SWEEP_WAIT,
    )
    .await;
    for (region, result) in results {
        match result {
            Ok(swept) => {
                report(&region, &swept, args.dry_run);
                total.instances.extend(swept.instances);
                total.groups.extend(swept.groups);
                total.groups_left.extend(swept.groups_left);
            }
            Err(e) => {
                eprintln!("aws:{region}: could not sweep: {e}");
                failed.push(region);
            }
        }
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{verb} {} VMs and {} security groups in {} regions{}",
        total.instances.len(),
        total.groups.len(),
        regions.len() - failed.len(),
        if total.groups_left.is_empty() {
            String::new()
        } else {
            format!(
                "; {} groups stay (VMs still shutting down): sweep again in a few minutes",
                total.groups_left.len()
            )
        }
    );
    if !failed.is_empty() {
        bail!(
            "{} regions could not be swept ({}); their VMs may still run",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn report(region: &str, swept: &Swept, dry_run: bool) {
    let (vm, group) = if dry_run {
        ("would terminate", "would delete")
    } else {
        ("terminated", "deleted")
    };
    for id in &swept.instances {
        println!("aws:{region}: {vm} VM {id}");
    }
    for id in &swept.groups {
        println!("aws:{region}: {group} security group {id}");
    }
    for (id, why) in &swept.groups_left {
        println!("aws:{region}: security group {id} stays: {why}");
    }
}
