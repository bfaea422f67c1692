//! Flag groups several commands share, parsed once at the edge into library types: the
//! catalog's files (`catalog`), where agents run (`provider`) and the ordered `--include` /
//! `--exclude` filters (`filters`).

pub mod catalog;
pub mod filters;
pub mod provider;
