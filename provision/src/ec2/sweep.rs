//! Finding and removing what skyx jobs left in an EC2 region: instances and security groups
//! tagged `skyx-job` (one job's, or every job's for `skyx sweep` after a crashed gateway).
//! Instances go first; a group can be deleted only once no VM holds it, so the sweep waits
//! for them to be terminated.

use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, InstanceStateName};

use super::JOB_TAG;

/// What a sweep of one region found and removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Instances terminated.
    pub instances: Vec<String>,
    /// Security groups deleted.
    pub groups: Vec<String>,
    /// Groups that could not be deleted, and why (a VM still shutting down past the wait).
    pub groups_left: Vec<(String, String)>,
}

fn sdk_error<E: std::error::Error + 'static>(e: aws_sdk_ec2::error::SdkError<E>) -> String {
    aws_sdk_ec2::error::DisplayErrorContext(e).to_string()
}

/// The filter for resources tagged with `job`, or with any job.
fn tagged(job: Option<&str>) -> Filter {
    match job {
        Some(job) => Filter::builder()
            .name(format!("tag:{JOB_TAG}"))
            .values(job)
            .build(),
        None => Filter::builder().name("tag-key").values(JOB_TAG).build(),
    }
}

/// Instances tagged with `job` that are not terminated.
pub async fn job_instances(client: &Client, job: &str) -> Result<Vec<String>, String> {
    live_instances(client, Some(job)).await
}

fn gone(state: &InstanceStateName) -> bool {
    matches!(
        state,
        InstanceStateName::Terminated | InstanceStateName::ShuttingDown
    )
}

/// Every instance tagged with `job` (or any job) and its state.
async fn tagged_instances(
    client: &Client,
    job: Option<&str>,
) -> Result<Vec<(String, InstanceStateName)>, String> {
    let mut out = Vec::new();
    let mut pages = client
        .describe_instances()
        .filters(tagged(job))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_error)?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            if let (Some(id), Some(state)) = (i.instance_id(), i.state().and_then(|s| s.name())) {
                out.push((id.to_string(), state.clone()));
            }
        }
    }
    Ok(out)
}

/// Terminates `ids` (none: nothing asked).
pub async fn terminate(client: &Client, ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    client
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map(drop)
        .map_err(sdk_error)
}

/// Security groups tagged with `job` (or any job).
pub async fn tagged_groups(client: &Client, job: Option<&str>) -> Result<Vec<String>, String> {
    let out = client
        .describe_security_groups()
        .filters(tagged(job))
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(out
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect())
}

/// What a sweep of `job` (or of every job) would remove in `client`'s region: live
/// instances and groups.
pub async fn find(client: &Client, job: Option<&str>) -> Result<Swept, String> {
    let instances = live_instances(client, job).await?;
    Ok(Swept {
        instances,
        groups: tagged_groups(client, job).await?,
        groups_left: Vec::new(),
    })
}

/// Instances tagged with `job` (or any job) that are not terminated or shutting down.
async fn live_instances(client: &Client, job: Option<&str>) -> Result<Vec<String>, String> {
    Ok(tagged_instances(client, job)
        .await?
        .into_iter()
        .filter(|(_, state)| !gone(state))
        .map(|(id, _)| id)
        .collect())
}

/// The first half of a sweep: terminates every live instance tagged with `job` (or any job)
/// in `client`'s region. Needs only instance permissions, so a gateway that may not list
/// groups still stops its VMs.
pub async fn terminate_tagged(client: &Client, job: Option<&str>) -> Result<Vec<String>, String> {
    let ids = live_instances(client, job).await?;
    terminate(client, &ids).await?;
    Ok(ids)
}

/// The second half: once no instance tagged with `job` (or any job) holds them, or at
/// `deadline`, deletes the groups tagged likewise. Returns the groups deleted and those
/// left, with why.
pub async fn delete_groups(
    client: &Client,
    job: Option<&str>,
    deadline: Instant,
) -> Result<(Vec<String>, Vec<(String, String)>), String> {
    loop {
        let holding = tagged_instances(client, job)
            .await?
            .into_iter()
            .any(|(_, state)| state != InstanceStateName::Terminated);
        if !holding || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let (mut deleted, mut left) = (Vec::new(), Vec::new());
    for group in tagged_groups(client, job).await? {
        match client.delete_security_group().group_id(&group).send().await {
            Ok(_) => deleted.push(group),
            Err(e) => left.push((group, sdk_error(e))),
        }
    }
    Ok((deleted, left))
}

/// Sweeps `job`'s (or every job's) VMs and groups in every region of `regions` (`us-east-1`)
/// with the standard AWS credentials, through `endpoint` when given: every region's VMs are
/// terminated before any wait, then each region's groups deleted once its VMs are gone (up to
/// `wait`). With `dry_run`, only finds them. A region that fails is reported with its error;
/// the others are swept all the same.
pub async fn sweep_regions(
    regions: &[String],
    endpoint: Option<&str>,
    job: Option<&str>,
    dry_run: bool,
    wait: Duration,
) -> Vec<(String, Result<Swept, String>)> {
    let mut clients = Vec::new();
    for region in regions {
        let client = Client::new(&super::sdk_config(region, endpoint, None).await);
        clients.push((region.clone(), client));
    }
    sweep_with(&clients, job, dry_run, wait).await
}

/// [`sweep_regions`] with the clients made.
pub async fn sweep_with(
    clients: &[(String, Client)],
    job: Option<&str>,
    dry_run: bool,
    wait: Duration,
) -> Vec<(String, Result<Swept, String>)> {
    let mut out = Vec::new();
    for (region, client) in clients {
        let first = if dry_run {
            find(client, job).await
        } else {
            terminate_tagged(client, job).await.map(|instances| Swept {
                instances,
                ..Swept::default()
            })
        };
        out.push((region.clone(), first));
    }
    if dry_run {
        return out;
    }
    let deadline = Instant::now() + wait;
    for ((_, client), (_, result)) in clients.iter().zip(out.iter_mut()) {
        let Ok(swept) = result else { continue };
        match delete_groups(client, job, deadline).await {
            Ok((deleted, left)) => {
                swept.groups = deleted;
                swept.groups_left = left;
            }
            Err(e) => swept.groups_left.push(("(listing)".into(), e)),
        }
    }
    out
}
