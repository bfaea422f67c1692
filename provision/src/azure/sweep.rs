//! Finding and deleting what a job left on Azure: its resource group (tagged `skyx-job`), and
//! with it every VM, disk, NIC, address, network and security group of the job. A sweep does
//! not depend on the gateway that made them: `skyx sweep --provider azure` runs it from
//! anywhere with the subscription's credentials.

use super::JOB_TAG;
use super::arm::{Arm, RESOURCES_API};

/// The resource groups of `label`'s job (any skyx job's when `None`).
pub async fn groups(arm: &Arm, label: Option<&str>) -> Result<Vec<String>, String> {
    let filter = match label {
        Some(l) => format!("tagName eq '{JOB_TAG}' and tagValue eq '{l}'"),
        None => format!("tagName eq '{JOB_TAG}'"),
    };
    let encoded: String =
        percent_encoding::utf8_percent_encode(&filter, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let mut page = arm
        .get(&format!("/resourcegroups?$filter={encoded}"), RESOURCES_API)
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    loop {
        found.extend(
            page["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["name"].as_str().map(str::to_string)),
        );
        let Some(next) = page["nextLink"].as_str().filter(|l| !l.is_empty()) else {
            return Ok(found);
        };
        page = arm.get_url(next).await.map_err(|e| e.to_string())?;
    }
}

/// Deletes the resource groups of `label`'s job (any skyx job's when `None`), each waited for;
/// in a dry run, only names them. Every group is tried; the errors are returned after.
pub async fn sweep(arm: &Arm, label: Option<&str>, dry_run: bool) -> Result<Vec<String>, String> {
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for group in groups(arm, label).await? {
        if !dry_run
            && let Err(e) = arm
                .delete(&format!("/resourcegroups/{group}"), RESOURCES_API)
                .await
        {
            failed.push(e.to_string());
            continue;
        }
        deleted.push(group);
    }
    match failed.is_empty() {
        true => Ok(deleted),
        false => Err(failed.join("; ")),
    }
}
