//! The Ray cluster a stage is given when the user has none in its region: its name, and its
//! configuration for Ray's cluster launcher (`ray up`), whose own AWS, GCP and Azure node
//! providers make the machines. Pure: what the config says, not how it is brought up
//! (`super::launch`).
//!
//! One cluster per stage, of one node: the instance the plan chose, as the head, with the
//! resources the stage's job asks for. The head's dashboard (and so its Jobs API, which has no
//! authentication) listens on the node's loopback only; skyx reaches it through `ray dashboard`'s
//! SSH tunnel. skyx itself reaches the node as a file mount of the local program.

use serde_json::{Value, json};
use skyx_catalog::{Cloud, RegionId};

use super::jobs::{StageResources, fnv1a};

/// Where a launched node holds skyx (the file mount's target; Ray's default SSH user is
/// `ubuntu` on the images it picks by default on every cloud).
pub const NODE_SKYX: &str = "~/skyx";
/// The node type of the cluster's one node. Underscores: GCP labels take no dots.
const NODE_TYPE: &str = "skyx_head";

/// What a launched cluster is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// `cluster_name` ([`cluster_name`]).
    pub name: String,
    pub region: RegionId,
    /// The instance type the plan chose.
    pub instance: String,
    /// What the stage's job asks for (the node offers exactly this).
    pub resources: StageResources,
    /// Ray's version on this machine: the nodes install the same one (`ray up` and the cluster's
    /// autoscaler must agree).
    pub ray_version: String,
    /// The skyx program to mount on the node: a Linux x86_64 build.
    pub skyx: String,
    /// Where the node has it ([`NODE_SKYX`] unless the user says).
    pub node_skyx: String,
    /// GCP: the project the node is made in (required there).
    pub gcp_project: Option<String>,
    /// Azure: the subscription (Ray's default: the Azure CLI's).
    pub azure_subscription: Option<String>,
}

/// A cluster name unique to the pipeline, stage and placement, and the same when the run is
/// resumed (so `ray up` finds the cluster a killed gateway left, and its job is followed). Fit
/// for every cloud's resource names: lowercase letters, digits and `-`, short.
pub fn cluster_name(pipeline: &str, stage: &str, placement: &str) -> String {
    let mut clean: String = stage
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(16)
        .collect();
    clean = clean.trim_matches('-').to_string();
    let hash = fnv1a(&format!("{pipeline}\n{stage}\n{placement}")) as u32;
    if clean.is_empty() {
        format!("skyx-{hash:08x}")
    } else {
        format!("skyx-{clean}-{hash:08x}")
    }
}

/// Why there is no config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// A setting the cluster needs is missing.
    #[error("{0}")]
    Setting(String),
    /// Ray's launcher cannot make the node there (the stage can go elsewhere).
    #[error("{0}")]
    NotOffered(String),
}

/// The regions Ray 2.60's AWS provider has a default image for (`DEFAULT_AMI` in
/// `ray/autoscaler/_private/aws/config.py`); anywhere else `ray up` needs an `ImageId`.
const AWS_DEFAULT_AMI_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "sa-east-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
];

/// The cluster's configuration for `ray up` (JSON, which YAML readers take as it is).
pub fn cluster_config(spec: &ClusterSpec) -> Result<Value, ClusterError> {
    let gpus = spec.resources.gpus.unwrap_or(0.0);
    let (provider, node_config, setup, head_setup) = match spec.region.cloud() {
        Cloud::Aws => aws(spec)?,
        Cloud::Gcp => gcp(spec, gpus > 0.0)?,
        Cloud::Azure => azure(spec),
    };
    let mut resources = serde_json::Map::new();
    if let Some(cpus) = spec.resources.cpus {
        resources.insert("CPU".into(), json!(cpus.floor() as u64));
    }
    if gpus > 0.0 {
        resources.insert("GPU".into(), json!(gpus.ceil() as u64));
    }
    let mut setup_commands = setup;
    setup_commands.push(format!(
        "pip install -U \"ray[default]=={}\"",
        spec.ray_version
    ));
    setup_commands.push(format!("chmod +x {}", shell_word(&spec.node_skyx)));
    Ok(json!({
        "cluster_name": spec.name,
        "max_workers": 0,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": provider,
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            NODE_TYPE: {
                "min_workers": 0,
                "max_workers": 0,
                "resources": resources,
                "node_config": node_config,
            }
        },
        "head_node_type": NODE_TYPE,
        "file_mounts": {spec.node_skyx.clone(): spec.skyx},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": false,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": setup_commands,
        "head_setup_commands": head_setup,
        "worker_setup_commands": [],
        // The dashboard on loopback: its Jobs API runs any command for whoever reaches it.
        "head_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --head --port=6379 --object-manager-port=8076 \
             --autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1 \
             --disable-usage-stats",
        ],
        "worker_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076",
        ],
    }))
}

type CloudParts = (Value, Value, Vec<String>, Vec<String>);

/// Ray's AWS provider picks its Deep Learning AMI for the region when no `ImageId` is given.
fn aws(spec: &ClusterSpec) -> Result<CloudParts, ClusterError> {
    let region = spec.region.name();
    if !AWS_DEFAULT_AMI_REGIONS.contains(&region) {
        return Err(ClusterError::NotOffered(format!(
            "Ray's launcher has no default image for {region}"
        )));
    }
    Ok((
        json!({"type": "aws", "region": spec.region.name(), "cache_stopped_nodes": false}),
        json!({
            "InstanceType": spec.instance,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 100}}],
        }),
        vec![
            "(stat $HOME/anaconda3/envs/tensorflow2_p310/ &> /dev/null && echo 'export \
             PATH=\"$HOME/anaconda3/envs/tensorflow2_p310/bin:$PATH\"' >> ~/.bashrc) || true"
                .into(),
        ],
        vec!["pip install 'boto3>=1.4.8'".into()],
    ))
}

/// In the catalog's zone (GCP regions are zones there).
fn gcp(spec: &ClusterSpec, gpu: bool) -> Result<CloudParts, ClusterError> {
    let project = spec
        .gcp_project
        .as_deref()
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| {
            ClusterError::Setting(
                "a Ray cluster in GCP needs the project to make it in (--gcp-project)".into(),
            )
        })?;
    let region = spec.region.region_name();
    let zone = spec.region.name();
    if region == zone {
        return Err(ClusterError::Setting(format!(
            "a Ray cluster in GCP goes in a zone, and {} names none",
            spec.region
        )));
    }
    let mut node = json!({
        "machineType": spec.instance,
        "disks": [{
            "boot": true,
            "autoDelete": true,
            "type": "PERSISTENT",
            "initializeParams": {
                "diskSizeGb": 100,
                "sourceImage":
                    "projects/deeplearning-platform-release/global/images/family/common-cpu",
            },
        }],
    });
    if gpu {
        // GPU machines cannot live-migrate; the image installs the driver when asked.
        // (An object, as Compute Engine's API has it; Ray's own examples' list is refused.)
        node["scheduling"] = json!({"onHostMaintenance": "TERMINATE"});
        node["metadata"] = json!({"items": [{"key": "install-nvidia-driver", "value": "True"}]});
    }
    Ok((
        json!({
            "type": "gcp",
            "region": region,
            "availability_zone": zone,
            "project_id": project,
        }),
        node,
        vec![
            "(stat /opt/conda/bin/ &> /dev/null && echo 'export PATH=\"/opt/conda/bin:$PATH\"' \
             >> ~/.bashrc) || true"
                .into(),
        ],
        vec!["pip install google-api-python-client==1.7.8".into()],
    ))
}

/// A resource group of the cluster's own, so `ray down` and a sweep of it leave nothing.
fn azure(spec: &ClusterSpec) -> CloudParts {
    let mut provider = json!({
        "type": "azure",
        "location": spec.region.name(),
        "resource_group": format!("{}-rg", spec.name),
        "cache_stopped_nodes": false,
    });
    if let Some(subscription) = &spec.azure_subscription {
        provider["subscription_id"] = json!(subscription);
    }
    (
        provider,
        json!({"azure_arm_parameters": {
            "vmSize": spec.instance,
            "imagePublisher": "microsoft-dsvm",
            "imageOffer": "ubuntu-2204",
            "imageSku": "2204-gen2",
            "imageVersion": "latest",
        }}),
        vec![
            "(which conda && echo 'eval \"$(conda shell.bash hook)\"' >> ~/.bashrc) || true".into(),
            "conda tos accept || true".into(),
            "conda create -n ray-env python=3.10 -y".into(),
            "conda activate ray-env && echo 'conda activate ray-env' >> ~/.bashrc".into(),
        ],
        vec![
            "pip install -U azure-core==1.35.0 azure-identity==1.23.1 azure-mgmt-compute==35.0.0 \
             azure-mgmt-network==29.0.0 azure-mgmt-resource==24.0.0 azure-common==1.1.28 \
             msrest==0.7.1 msrestazure==0.6.4.post1"
                .into(),
        ],
    )
}

/// `word` quoted for `sh` (Ray runs a job's entrypoint with `shell=True`; `ray up` its setup commands), a leading `~/` left to
/// the shell.
pub(super) fn shell_word(word: &str) -> String {
    if let Some(rest) = word.strip_prefix("~/") {
        return format!("~/{}", shell_word(rest));
    }
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Whether `ray up`'s output says the cloud had no room (capacity or quota), so the stage can be
/// placed in another region: the clouds' own error codes, as their APIs name them.
pub fn says_no_capacity(output: &str) -> bool {
    const CODES: &[&str] = &[
        // EC2
        "InsufficientInstanceCapacity",
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        // Compute Engine
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "insufficientCapacity",
        // Azure Resource Manager
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "QuotaExceeded",
        // How ARM answers (`OperationNotAllowed`) a core quota that is spent.
        "exceeding approved",
    ];
    CODES.iter().any(|code| output.contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(region: &str, gpus: Option<f64>) -> ClusterSpec {
        ClusterSpec {
            name: cluster_name("etl", "train", &format!("{region}/x")),
            region: region.parse().unwrap(),
            instance: "m5.2xlarge".into(),
            resources: StageResources {
                cpus: Some(8.0),
                gpus,
            },
            ray_version: "2.60.0".into(),
            skyx: "/usr/local/bin/skyx".into(),
            node_skyx: NODE_SKYX.into(),
            gcp_project: Some("proj".into()),
            azure_subscription: None,
        }
    }

    #[test]
    fn cluster_names_are_per_stage_and_placement_and_fit_every_cloud() {
        let a = cluster_name("etl", "Train Model!", "aws:us-east-1/m5.2xlarge");
        assert!(a.starts_with("skyx-train-model-"), "{a}");
        assert!(a.len() <= 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(
            a,
            cluster_name("etl", "Train Model!", "aws:us-east-1/m5.2xlarge")
        );
        assert_ne!(
            a,
            cluster_name("etl", "Train Model!", "aws:us-west-2/m5.2xlarge")
        );
        assert_ne!(
            a,
            cluster_name("other", "Train Model!", "aws:us-east-1/m5.2xlarge")
        );
        assert!(cluster_name("p", "__", "x").starts_with("skyx-"));
    }

    #[test]
    fn the_node_is_the_planned_instance_offering_what_the_job_asks() {
        let c = cluster_config(&spec("aws:us-east-1", Some(1.0))).unwrap();
        let node = &c["available_node_types"][NODE_TYPE];
        assert_eq!(node["node_config"]["InstanceType"], "m5.2xlarge");
        assert_eq!(node["resources"], json!({"CPU": 8, "GPU": 1}));
        assert_eq!(c["provider"]["region"], "us-east-1");
        assert_eq!(c["max_workers"], 0);
        assert_eq!(c["file_mounts"][NODE_SKYX], "/usr/local/bin/skyx");
        let setup = c["setup_commands"].to_string();
        assert!(setup.contains("ray[default]==2.60.0"), "{setup}");
        assert!(setup.contains("chmod +x ~/skyx"), "{setup}");
        // Where Ray has no image of its own, the stage goes elsewhere.
        let e = cluster_config(&spec("aws:eu-north-1", None)).unwrap_err();
        assert!(matches!(e, ClusterError::NotOffered(_)), "{e}");
        let start = c["head_start_ray_commands"].to_string();
        assert!(start.contains("--dashboard-host=127.0.0.1"), "{start}");
    }

    #[test]
    fn gcp_clusters_go_in_the_zone_and_project_and_gpu_nodes_do_not_migrate() {
        let c = cluster_config(&spec("gcp:europe-west1-b", Some(1.0))).unwrap();
        assert_eq!(c["provider"]["region"], "europe-west1");
        assert_eq!(c["provider"]["availability_zone"], "europe-west1-b");
        assert_eq!(c["provider"]["project_id"], "proj");
        let node = &c["available_node_types"][NODE_TYPE]["node_config"];
        assert_eq!(node["scheduling"]["onHostMaintenance"], "TERMINATE");
        let cpu = cluster_config(&spec("gcp:us-central1-a", None)).unwrap();
        assert_eq!(cpu["provider"]["availability_zone"], "us-central1-a");
        assert!(cpu["available_node_types"][NODE_TYPE]["node_config"]["scheduling"].is_null());
        let e = cluster_config(&spec("gcp:us-central1", None)).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Setting(w) if w.contains("zone")),
            "{e}"
        );
        let mut no_project = spec("gcp:us-central1-a", None);
        no_project.gcp_project = None;
        let e = cluster_config(&no_project).unwrap_err();
        assert!(e.to_string().contains("--gcp-project"), "{e}");
    }

    #[test]
    fn azure_clusters_get_a_resource_group_of_their_own() {
        let mut s = spec("azure:eastus", None);
        s.azure_subscription = Some("sub-1".into());
        let c = cluster_config(&s).unwrap();
        assert_eq!(c["provider"]["location"], "eastus");
        assert_eq!(c["provider"]["resource_group"], format!("{}-rg", s.name));
        assert_eq!(c["provider"]["subscription_id"], "sub-1");
        let arm = &c["available_node_types"][NODE_TYPE]["node_config"]["azure_arm_parameters"];
        assert_eq!(arm["vmSize"], "m5.2xlarge");
    }

    #[test]
    fn the_clouds_capacity_answers_are_told_from_other_failures() {
        assert!(says_no_capacity(
            "botocore.exceptions.ClientError: An error occurred (InsufficientInstanceCapacity)"
        ));
        assert!(says_no_capacity("'code': 'ZONE_RESOURCE_POOL_EXHAUSTED'"));
        assert!(says_no_capacity("(SkuNotAvailable) The requested size"));
        assert!(!says_no_capacity("Permission denied (publickey)"));
    }
}
