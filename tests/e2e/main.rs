//! End-to-end tests of the `skyx` binaries, run as a user would run them.
//!
//! Modules:
//! - `plan`: `skyx plan` output, JSON schema, Graphviz, exit codes and error messages.
//! - `catalog`: `skyx catalog` inspection and user-supplied grid files.

mod catalog;
mod plan;
mod util;
