//! Flag groups several commands share, parsed once at the edge into library types: the
//! catalog's files (`catalog`) and where agents run (`provider`).

pub mod catalog;
pub mod provider;
