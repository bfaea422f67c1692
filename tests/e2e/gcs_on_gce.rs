//! An agent on a booted GCE VM reaching GCS as the VM's service account: the sink is told only
//! where the bucket is (a remote's `endpoint`), takes its credentials as Google's client
//! libraries do on GCE (Application Default Credentials: the metadata server's token for the
//! service account the provider gave the VM), and a GCS emulator that takes only the tokens the
//! metadata stand-ins issued says who wrote each object. This machine's gateway reaches the
//! bucket as its own account, through `GCE_METADATA_HOST`, as a gateway on a GCE VM would.

use crate::booted::{Booted, settle};
use crate::stores::Scratch;
use crate::util::{stderr, stdout, strs};

const AGENTS: &str = "agents@booted-gcs.iam.gserviceaccount.com";
const GATEWAY: &str = "gateway@booted-gcs.iam.gserviceaccount.com";

#[test]
fn a_sink_on_gce_writes_gcs_as_its_vms_service_account() {
    let scratch = Scratch::new("vm-boot-gcs");
    let mut gce = Booted::start(&scratch, "10.211.0.1/16", &[("gce", "100.105.0.0/24")]);
    let (gcs, metadata) = (gce.gcs(), gce.gce_metadata(GATEWAY));
    let config = scratch.dir.join("lake.toml");
    std::fs::write(
        &config,
        format!("[remotes.lake]\ntype = \"gcs\"\nendpoint = \"{gcs}\"\nproject = \"booted-gcs\"\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    // No emulator variable (it would make plain gs:// ends anonymous) and no credentials of
    // this machine's (ADC reads a key file or gcloud's before the metadata server): the
    // gateway's credentials are its metadata server's. (The VMs see this host's /root; a
    // machine whose root has gcloud credentials would fail this test with a 401.)
    let home = scratch.dir.display().to_string();
    let env = [
        ("STORAGE_EMULATOR_HOST", ""),
        ("GOOGLE_APPLICATION_CREDENTIALS", ""),
        ("GOOGLE_APPLICATION_CREDENTIALS_JSON", ""),
        ("HOME", home.as_str()),
        ("CLOUDSDK_CONFIG", home.as_str()),
        ("GCE_METADATA_HOST", metadata.as_str()),
        ("SKYX_CONFIG", config.as_str()),
    ];
    let out = scratch.skyx(&["mb", "lake:sa-dst"], &env);
    assert!(out.status.success(), "mb: {}", stderr(&out));

    let src = scratch.dir.join("src");
    std::fs::create_dir_all(src.join("deep")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("deep/small.txt"), b"written as the VM\n").unwrap();
    let src = src.display().to_string();
    let args = gce.on_gce(
        "booted-gcs",
        &[
            "cp",
            "-r",
            &src,
            "lake:sa-dst/data",
            "--src-region",
            "gcp:us-east1-b",
            "--dst-region",
            "gcp:europe-west1-b",
            "--max-vms-per-region",
            "1",
            "--gce-service-account",
            AGENTS,
            "--no-progress",
        ],
    );
    let out = scratch.skyx(&strs(&args), &env);
    assert!(
        out.status.success(),
        "{}\n{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        gce.vm_logs(),
        gce.gcs_log()
    );

    // The sink took its VM's token from the metadata server, and every object was written as
    // the VM's account: none as the gateway's, none anonymously (the emulator refuses that).
    let logs = gce.vm_logs();
    assert!(
        logs.lines().any(|l| l
            .contains("GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=")
            && l.contains("HTTP/1.1\" 200")),
        "{logs}"
    );
    let log = gce.gcs_log();
    let writes: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("gcs: POST /upload/"))
        .collect();
    assert!(!writes.is_empty(), "{log}");
    assert!(
        writes.iter().all(|l| l.ends_with(&format!(" as {AGENTS}"))),
        "{log}"
    );

    let back = scratch.dir.join("back");
    let back_arg = back.display().to_string();
    let out = scratch.skyx(
        &["cp", "-r", "lake:sa-dst/data", &back_arg, "--no-progress"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(back.join("big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(back.join("deep/small.txt")).unwrap(),
        b"written as the VM\n"
    );
    assert_eq!(settle(&gce), Vec::<String>::new(), "VMs left running");
    assert_eq!(
        gce.state("gce", "booted-gcs")["instances"],
        serde_json::json!([])
    );
}
