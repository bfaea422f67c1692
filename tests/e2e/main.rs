//! End-to-end tests of the `skyx` binaries, run as a user would run them.
//!
//! Modules:
//! - `plan`: `skyx plan` output, JSON schema, Graphviz, exit codes and error messages.
//! - `catalog`: `skyx catalog` inspection and user-supplied grid files.
//! - `tidy`: the dependency-direction rules between the workspace's crates.

mod catalog;
mod plan;
mod tidy;
mod util;
