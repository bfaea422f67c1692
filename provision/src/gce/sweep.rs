//! Finding and deleting what a job left on GCE: its VMs (by the `skyx-job` label, across every
//! zone of the project) and its firewall rules (by name and description). A sweep does not
//! depend on the gateway that launched them: `skyx sweep --provider gcp` runs it from anywhere
//! with the project's credentials.

use serde_json::Value;

use super::JOB_LABEL;
use super::api::{ApiError, Compute};

/// What a sweep found and deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// `zone/name` of every VM deleted (or, in a dry run, that would be).
    pub instances: Vec<String>,
    /// Firewall rules deleted (or that would be).
    pub rules: Vec<String>,
}

/// Every VM labelled with `label` (any skyx job's when `None`), as `(zone, name)`.
pub async fn labelled(
    compute: &Compute,
    label: Option<&str>,
) -> Result<Vec<(String, String)>, ApiError> {
    let filter = match label {
        Some(l) => format!("labels.{JOB_LABEL} = \"{l}\""),
        None => format!("labels.{JOB_LABEL}:*"),
    };
    let mut found = Vec::new();
    for page in pages(compute, "aggregated/instances", &filter).await? {
        for (scope, list) in page["items"].as_object().into_iter().flatten() {
            let zone = scope.trim_start_matches("zones/");
            for vm in list["instances"].as_array().into_iter().flatten() {
                if let Some(name) = vm["name"].as_str() {
                    found.push((zone.to_string(), name.to_string()));
                }
            }
        }
    }
    Ok(found)
}

/// Every page of the list at `path` that `filter` selects.
async fn pages(compute: &Compute, path: &str, filter: &str) -> Result<Vec<Value>, ApiError> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let mut query = vec![("filter", filter)];
        if !token.is_empty() {
            query.push(("pageToken", token.as_str()));
        }
        let page = compute.get(path, &query).await?;
        let next = page["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        pages.push(page);
        if next.is_empty() {
            return Ok(pages);
        }
        token = next;
    }
}

/// The firewall rules of `label`'s job (any skyx job's when `None`): named `skyx-LABEL-…` and
/// described as a skyx job's, so a user's own rule that happens to start with `skyx-` stays.
pub async fn rules(compute: &Compute, label: Option<&str>) -> Result<Vec<String>, ApiError> {
    let filter = match label {
        // Exactly the job's rules: `--job cp` must not match another job's `skyx-cp-x-gw`.
        Some(l) => format!("name eq skyx-{l}-(gw|peers|deny)"),
        None => "name eq skyx-.*".to_string(),
    };
    let mut found = Vec::new();
    for page in pages(compute, "global/firewalls", &filter).await? {
        for rule in page["items"].as_array().into_iter().flatten() {
            let ours = rule["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("skyx job "));
            if let (Some(name), true) = (rule["name"].as_str(), ours) {
                found.push(name.to_string());
            }
        }
    }
    Ok(found)
}

/// Deletes one VM and waits for it to be gone; one already gone is fine.
pub async fn delete_instance(compute: &Compute, zone: &str, name: &str) -> Result<(), ApiError> {
    delete(
        compute,
        &format!("zones/{zone}/instances/{name}"),
        "instances.delete",
    )
    .await
}

async fn delete(compute: &Compute, path: &str, call: &str) -> Result<(), ApiError> {
    match compute.delete(path).await {
        Ok(op) => match compute.wait(&op, call).await {
            // Deleted by someone else meanwhile (its own maximum run, another sweep).
            Err(ApiError::Operation { code, .. }) if code == "RESOURCE_NOT_FOUND" => Ok(()),
            done => done,
        },
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes every VM and rule of `label`'s job (any skyx job's when `None`), VMs first (a rule
/// deleted first would cut a running agent off its peers, not stop it). In a dry run, only
/// says what it would delete. Every VM is tried; the first error is returned after.
pub async fn sweep(compute: &Compute, label: Option<&str>, dry_run: bool) -> Result<Swept, String> {
    let text = |e: ApiError| e.to_string();
    let mut swept = Swept::default();
    let mut failed = Vec::new();
    for (zone, name) in labelled(compute, label).await.map_err(text)? {
        if !dry_run && let Err(e) = delete_instance(compute, &zone, &name).await {
            failed.push(e.to_string());
            continue;
        }
        swept.instances.push(format!("{zone}/{name}"));
    }
    for name in rules(compute, label).await.map_err(text)? {
        if !dry_run
            && let Err(e) = delete(
                compute,
                &format!("global/firewalls/{name}"),
                "firewalls.delete",
            )
            .await
        {
            failed.push(e.to_string());
            continue;
        }
        swept.rules.push(name);
    }
    match failed.is_empty() {
        true => Ok(swept),
        false => Err(failed.join("; ")),
    }
}
