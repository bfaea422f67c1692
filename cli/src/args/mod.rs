//! Flag groups several commands share, parsed once at the edge into library types: the
//! catalog's files (`catalog`), each end's store settings and named remotes (`ends`), where
//! agents run (`provider`), the ordered `--include` / `--exclude` filters (`filters`) and what
//! else selects source objects (`select`).

pub mod azure;
pub mod catalog;
pub mod ends;
pub mod filters;
pub mod gce;
pub mod provider;
pub mod ray;
pub mod select;
pub mod write;
