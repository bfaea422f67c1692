//! Running the workspace's binaries from tests.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The path of a workspace binary, built once per test run with the cargo that runs the tests
/// (so a stale binary is never tested).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "skyx", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
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
