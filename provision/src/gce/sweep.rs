//! Finding and deleting what a job left on GCE: its VMs (by the `skyx-job` label, across every
//! zone of the project) and its firewall rules (by name and description). A sweep does not
//! depend on the gateway that launched them: `skyx sweep --provider gcp` runs it from anywhere
//! with the project's credentials.

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

/// The value of the `skyx-job` label (and the network tag and name prefix) of `job`: GCE's
/// label values and names allow lowercase letters, digits and `-` (names must start with a
/// letter, end with a letter or digit, and hold at most 63 characters). A job name that does
/// not fit as it is keeps its first part and gains a hash of the whole, so two jobs never
/// share a label.
pub fn job_label(job: &str) -> String {
    let mut slug: String = job
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let fits = !slug.is_empty() && slug == job && slug.len() <= 40 && !slug.ends_with('-');
    if !fits {
        // FNV-1a: stable across builds and machines (a sweep elsewhere finds the same label).
        let hash = job.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        slug.truncate(30);
        slug = format!("{}-{:08x}", slug.trim_end_matches('-'), hash as u32);
    }
    slug
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
    let mut token = String::new();
    loop {
        let mut query = vec![("filter", filter.as_str())];
        if !token.is_empty() {
            query.push(("pageToken", token.as_str()));
        }
        let page = compute.get("aggregated/instances", &query).await?;
        for (scope, list) in page["items"].as_object().into_iter().flatten() {
            let zone = scope.trim_start_matches("zones/");
            for vm in list["instances"].as_array().into_iter().flatten() {
                if let Some(name) = vm["name"].as_str() {
                    found.push((zone.to_string(), name.to_string()));
                }
            }
        }
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_string(),
            _ => return Ok(found),
        }
    }
}

/// The firewall rules of `label`'s job (any skyx job's when `None`): named `skyx-LABEL-…` and
/// described as a skyx job's, so a user's own rule that happens to start with `skyx-` stays.
pub async fn rules(compute: &Compute, label: Option<&str>) -> Result<Vec<String>, ApiError> {
    let filter = match label {
        Some(l) => format!("name eq skyx-{l}-.*"),
        None => "name eq skyx-.*".to_string(),
    };
    let mut found = Vec::new();
    let mut token = String::new();
    loop {
        let mut query = vec![("filter", filter.as_str())];
        if !token.is_empty() {
            query.push(("pageToken", token.as_str()));
        }
        let page = compute.get("global/firewalls", &query).await?;
        for rule in page["items"].as_array().into_iter().flatten() {
            let ours = rule["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("skyx job "));
            if let (Some(name), true) = (rule["name"].as_str(), ours) {
                found.push(name.to_string());
            }
        }
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_string(),
            _ => return Ok(found),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_gce_and_never_collide() {
        assert_eq!(job_label("cp-data-1a2b-18c"), "cp-data-1a2b-18c");
        let odd = job_label("cp-My_Bucket/with.dots-1a2b-18c0000");
        assert!(
            odd.len() <= 40 && odd.starts_with("cp-my-bucket-with-dots"),
            "{odd}"
        );
        let long = "run-".to_string() + &"x".repeat(80);
        let other = "run-".to_string() + &"x".repeat(79) + "y";
        assert_ne!(job_label(&long), job_label(&other));
        for label in [odd, job_label(&long), job_label("A-")] {
            assert!(
                label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{label}"
            );
            assert!(!label.ends_with('-'), "{label}");
        }
    }
}
