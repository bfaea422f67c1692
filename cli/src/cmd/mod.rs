//! One module per `skyx` subcommand: flags in, a library call, a renderer out. `transfer`
//! holds what `cp` and `sync` share (ends, regions, routing, running the copy).

pub mod bench;
pub mod catalog;
pub mod check;
pub mod cp;
pub mod cp_broadcast;
pub mod execute;
pub mod plan;
pub mod plan_broadcast;
pub mod routing;
pub mod run;
pub mod sky;
pub mod stage_run;
pub mod store;
pub mod sweep;
pub mod sync;
pub mod transfer;
