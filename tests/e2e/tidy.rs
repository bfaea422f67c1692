//! Dependency direction is a rule, not an accident: each library may depend only on the
//! workspace crates listed here, and the pure crates never on an async runtime.

use std::path::Path;

/// (crate directory, workspace crates it may use, may it use tokio)
const RULES: &[(&str, &[&str], bool)] = &[
    ("catalog", &[], false),
    ("planner", &["skyx-catalog"], false),
    ("protocol", &[], false),
    ("store", &[], true),
    ("transfer-agent", &["skyx-protocol", "skyx-store"], true),
    // The sky builds namespaces and starts servers with plain processes: no runtime needed.
    ("sky", &["skyx-catalog"], false),
    // Pipeline placement is pure optimisation, like the planner.
    ("pipeline", &["skyx-catalog", "skyx-planner"], false),
    (
        "gateway",
        &[
            "skyx-protocol",
            "skyx-store",
            "skyx-catalog",
            "skyx-planner",
            "skyx-transfer-agent",
        ],
        true,
    ),
];

fn dependencies(manifest: &str) -> Vec<String> {
    // The names in [dependencies] (not dev-dependencies): enough TOML for our manifests.
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[test]
fn library_crates_depend_only_in_the_allowed_direction() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for (dir, allowed, tokio_ok) in RULES {
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap();
        let deps = dependencies(&manifest);
        assert!(
            !deps.is_empty() || *dir == "catalog",
            "{dir}: no dependencies parsed"
        );
        for dep in &deps {
            if dep.starts_with("skyx-") {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "{dir} must not depend on {dep}"
                );
            }
            if dep == "tokio" {
                assert!(tokio_ok, "{dir} must stay free of an async runtime");
            }
        }
    }
}
