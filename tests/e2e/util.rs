//! Running the workspace's binaries from tests.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The path of a workspace binary, built once per test run with the cargo that runs the tests
/// (so a stale binary is never tested).
///
/// It builds what `cargo test --workspace` (and CI's `cargo nextest run --workspace`) builds,
/// plus the binaries: the same features, so the same dependency builds. `cargo build -p skyx`
/// alone resolves other features and rebuilt about 340 crates beside the running tests (13
/// minutes of CI). The variables cargo sets for a running test are removed: `ring`'s build
/// script reruns when `CARGO_MANIFEST_DIR` changes, and everything over TLS rebuilds with it.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--tests", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy();
            let set_for_a_test = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ];
            if set_for_a_test.iter().any(|p| var.starts_with(p)) {
                cmd.env_remove(&*var);
            }
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the skyx binaries failed");
    });
    // target/<profile>/deps/<test-binary> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile directory");
    dir.join(name)
}

/// Runs `skyx ARGS` and returns its output.
pub fn skyx(args: &[&str]) -> Output {
    Command::new(bin("skyx"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run skyx")
}

/// Arguments held as strings, as a command takes them.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = skyx(args);
    assert!(o.status.success(), "skyx {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// Asserts the exit code and returns stderr.
pub fn fails_with(code: i32, args: &[&str]) -> String {
    let o = skyx(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "skyx {args:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}
